"""A tiny CAM++ trained for speaker identity on synthetic singers (docs/timbre.md).

The released CAM++ models are speaker-verification networks trained on speakers other than the
ones they later embed. This module gives the tiny CAM++ of `debug=tiny` the same kind of
training: it renders a separate synthetic cast (`audioscore.synth` with its own seed and more
singers, validation-style clips whose severity does not depend on the singer), trains the tiny
CAMPPlus body with a linear speaker-classification head (cross-entropy on random fbank crops),
and writes the body's flat state dict as a torch weights file, the format of 3D-Speaker's
released checkpoints. A user loads it like a released model: `source=<file>`
(`model.net.timbre.source=<file> model.net.timbre.tiny=false`).

`singer_probe` measures an encoder's singer identification on a corpus's held-out clips
(cross-validated logistic regression, `audioscore.studies.probe.fit_probe`). The command line is
`audioscore.studies.campp_pretrain`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional as taf
from torch import nn

from audiobase.audio import CAMPP_SR, load_audio
from audiobase.files import atomic_path
from audioscore.data.groups import read_groups
from audioscore.models.components.campp import (
    CamppEncoder,
    build_random_campp,
    compute_fbank,
)
from audioscore.studies.probe import fit_probe
from audioscore.synth.corpus import plan_split
from audioscore.synth.voices import SR, make_singers, render_clip

TINY_ARCH = {"embedding_size": 32, "growth_rate": 4, "bn_size": 2, "init_channels": 16}


def render_cast(
    singers: int, clips_per_singer: int, seed: int, dur: tuple[float, float]
) -> tuple[list[np.ndarray], list[int]]:
    """Clips of a synthetic cast at 16 kHz and their singer indices (rendered in memory)."""
    cast = make_singers(singers, seed)
    index = {s.name: k for k, s in enumerate(cast)}
    plans = plan_split("val", singers * clips_per_singer, cast, seed, dur, ("wav",))
    wavs, labels = [], []
    for p in plans:
        wav = torch.from_numpy(render_clip(p, cast[index[p.singer]]))
        wavs.append(taf.resample(wav, SR, CAMPP_SR).numpy())
        labels.append(index[p.singer])
    return wavs, labels


def pretrain_campp(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    cast_seed: int = 1000,
    singers: int = 24,
    clips_per_singer: int = 12,
    dur: tuple[float, float] = (1.5, 2.5),
    steps: int = 300,
    batch_size: int = 32,
    crop_s: float = 1.0,
    lr: float = 3e-3,
    arch: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Train a tiny CAM++ to identify the singers of cast `cast_seed`; write its weights to `out`.

    The body starts from the random tiny CAM++ of `debug=tiny` (seed 0, `arch`); every random
    draw comes from `seed`, so the same arguments give the same file. Returns the path, the
    final training loss and accuracy (running mean over the last 20 steps).
    """
    wavs, labels = render_cast(singers, clips_per_singer, cast_seed, dur)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = build_random_campp(0, **(arch or TINY_ARCH))
        head = nn.Linear((arch or TINY_ARCH)["embedding_size"], singers)
        feats = [compute_fbank(torch.from_numpy(w)) for w in wavs]  # [F_i, 80]
        y = torch.tensor(labels)
        crop = int(crop_s * 100)  # fbank frames at 100 Hz
        params = [*body.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
        gen = torch.Generator().manual_seed(seed)
        body.train()
        losses, accs = [], []
        for _ in range(steps):
            idx = torch.randint(len(feats), (batch_size,), generator=gen)
            x = torch.stack([random_crop(feats[int(i)], crop, gen) for i in idx])  # [B, crop, 80]
            logits = head(body(x))  # [B, singers]
            loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            accs.append(float((logits.argmax(1) == y[idx]).float().mean()))
    body.eval()
    path = Path(out)
    with atomic_path(path) as tmp:  # a flat CAMPPlus state dict, like 3D-Speaker's .bin files
        torch.save(body.state_dict(), tmp)
    return {"path": path, "loss": float(np.mean(losses[-20:])), "acc": float(np.mean(accs[-20:]))}


def random_crop(feat: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """`n` consecutive frames of [F, 80] (wrapped around when the clip is shorter)."""
    if feat.shape[0] < n:
        feat = feat.repeat(-(-n // feat.shape[0]), 1)
    start = int(torch.randint(feat.shape[0] - n + 1, (1,), generator=gen))
    return feat[start : start + n]


def singer_probe(
    encoder: CamppEncoder,
    groups_file: str | os.PathLike,
    *,
    max_s: float | None = None,
    **probe: Any,
) -> dict[str, float]:
    """Singer-probe result of `encoder` on a groups file's clips (first `max_s` seconds each)."""
    items: dict[str, str] = {}
    for group in read_groups(Path(groups_file), require_sorted=False):
        for it in group:
            items.setdefault(it["audio_file"], it["singer"])
    files = sorted(items)
    wavs = [load_audio(p, encoder.in_sr, duration=max_s) for p in files]
    return probe_clips(encoder, wavs, [items[p] for p in files], **probe)


def probe_clips(
    encoder: CamppEncoder,
    wavs: list[np.ndarray],
    singers: list[Any],
    *,
    folds: int = 5,
    repeats: int = 5,
    C: float = 1.0,
) -> dict[str, float]:
    """Cross-validated logistic singer probe (`fit_probe`; margin = accuracy - chance) on the
    L2-normalised embeddings of clips at `encoder.in_sr`."""
    emb = encoder.embed_clips([torch.from_numpy(w) for w in wavs])
    x = nn.functional.normalize(emb, dim=-1).numpy()
    return fit_probe(x, [str(s) for s in singers], folds, 0, repeats, C)
