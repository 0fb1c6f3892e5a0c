"""Plain nn.Modules of the scorers (no Lightning imports)."""
