"""Messages for strict weight loading: what a file lacks, has too much of, or has mis-shaped."""

from __future__ import annotations


def listing(keys: list[str], limit: int) -> str:
    """The first `limit` keys, comma-separated, and how many more there are."""
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_problems(
    missing: list[str], unexpected: list[str], mismatched: list[str], limit: int
) -> list[str]:
    """One phrase per kind of mismatch between a weights file and a module (empty = loadable)."""
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {listing(missing, limit)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {listing(unexpected, limit)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {listing(mismatched, limit)}")
    return problems
