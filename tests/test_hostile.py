"""Attacks on the boundary, one test each: everything a user brings in (export folders,
checkpoints, run folders, results files, bench JSONL, HTTP requests, audio files) is data.
Read top to bottom, this module is the list of attacks the trust model (docs/security.md)
defends against; each test names the input, the attack and what must happen instead."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


# === 1-3. Code from data: config interpolation, double resolution, remote code ===========


# === 4. Server: slow clients, nested JSON, truncated audio ================================


# === 5. Decompression bombs and folder walks ==============================================


# === 6, 8, 9. Paths, locks and non-finite scores in the bench =============================


# === 7. Training resume ===================================================================


# === end of attacks ========================================================================
