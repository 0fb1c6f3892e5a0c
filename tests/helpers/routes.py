"""A tiny exported scorer and a few audio files (mixed formats, rates and lengths) for the
route and safe-loading tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate

from audiobase.audio import save_audio
from audiobase.preprocess import Preprocess
from audioscore.export import DEFAULT_PREPROCESS, export_scorer
from helpers.train import tiny_net_config

# (name, seconds, sample rate): some longer than a 1 s export crop, some shorter
CLIPS = (
    ("short.wav", 0.6, 24_000),
    ("long.flac", 2.5, 24_000),
    ("long16k.wav", 1.8, 16_000),
    ("mid.ogg", 1.4, 24_000),
    ("long.mp3", 2.2, 24_000),
)


def make_tiny_export(root: Path, preprocess: Preprocess = DEFAULT_PREPROCESS) -> Path:
    """A random tiny plan-A scorer with non-zero LoRA deltas, exported to `root/export`."""
    cfg = tiny_net_config()
    torch.manual_seed(0)
    net = instantiate(cfg, _convert_="all")
    with torch.no_grad():  # as after training: the LoRA weights change the scores
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return export_scorer(net.eval(), root / "export", net_config=cfg, preprocess=preprocess)


def write_clips(root: Path, clips=CLIPS) -> list[Path]:
    """Noisy tones whose level rises over time, so where a crop falls changes the score."""
    paths = []
    for i, (name, seconds, sr) in enumerate(clips):
        rng = np.random.default_rng(i)
        t = np.arange(int(seconds * sr)) / sr
        level = 0.05 + 0.3 * t / seconds
        wav = level * np.sin(2 * np.pi * (180 + 60 * i) * t) + 0.02 * rng.standard_normal(t.size)
        paths.append(save_audio(root / name, wav.astype(np.float32), sr))
    return paths
