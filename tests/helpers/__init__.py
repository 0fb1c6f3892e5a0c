"""Shared test helpers (fixtures and builders used by several test modules)."""
