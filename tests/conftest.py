"""Shared fixtures: a small synthetic corpus and a few short audio files, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The corpus every test shares: 4 singers, 12 train + 4 val clips of 3-4 s, 5 rows per bench
# subset. Keys are stable: root, train, val, bench, clips_csv, meta, readme (Paths).
SMALL_CORPUS = dict(
    singers=4,
    clips=16,
    seed=0,
    min_dur=3.0,
    max_dur=4.0,
    group_size=(3, 6),
    bench_rows=5,
    bench_dur=(3.0, 3.5),
    workers=1,
)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic corpus (see SMALL_CORPUS); the dict of paths from make_corpus."""
    from audioscore.synth import make_corpus

    return make_corpus(tmp_path_factory.mktemp("synth_corpus"), **SMALL_CORPUS)


@pytest.fixture(scope="session")
def tone_files(tmp_path_factory) -> dict[str, Path]:
    """A 2 s, 24 kHz two-tone clip in every format: {"wav": path, "flac": ..., "mp3", "m4a", "ogg"}."""
    from audiobase.audio import save_audio

    root = tmp_path_factory.mktemp("tones")
    t = np.arange(48_000) / 24_000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1760 * t)).astype(
        np.float32
    )
    return {
        ext: save_audio(root / f"tone.{ext}", wav, 24_000)
        for ext in ("wav", "flac", "mp3", "m4a", "ogg")
    }


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: extra intra-op threads only spin on a shared 2-core box (12 s vs 0.2 s
    measured for one tiny CMI-RM call). Opt in with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
