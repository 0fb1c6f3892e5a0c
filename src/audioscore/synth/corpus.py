"""The corpus on disk: `make_corpus` writes the audio, groups files, bench.jsonl, clips.csv, README."""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from audiobase.audio import save_audio
from audiobase.files import atomic_path, write_text
from audiobase.schemas import AUDIO_FILE, SCORE, SINGER
from audioscore.synth.benchmark import PAM_SYSTEMS, plan_bench
from audioscore.synth.labels import (
    MAX_BREATH,
    MAX_CLIP_DB,
    MAX_JITTER_MS,
    MAX_PITCH_CENTS,
    NO_TIMBRE,
    PENALTY,
    SNR_CLEAN_DB,
    SNR_WORST_DB,
    ClipPlan,
    TimbreKnobs,
    draw_degradations,
    score_clip,
)
from audioscore.synth.voices import SR, Singer, make_singers, render_clip, timbre_axis

FORMATS = ("wav", "flac", "mp3", "m4a")


def make_corpus(
    out: str | Path,
    singers: int = 8,
    clips: int = 320,
    seed: int = 0,
    *,
    val_fraction: float = 0.25,
    min_dur: float = 3.0,
    max_dur: float = 20.0,
    group_size: tuple[int, int] = (4, 10),
    bench_rows: int = 20,
    bench_dur: tuple[float, float] = (3.0, 8.0),
    formats: tuple[str, ...] = FORMATS,
    workers: int | None = None,
    timbre_effect: float = 0.0,
    timbre_confound: float = 0.0,
) -> dict[str, Path]:
    """Write the corpus under `out`; returns its paths.

    Args:
        singers: number of singers (shared by every split).
        clips: train + val clips; `val_fraction` of them go to validation.
        bench_rows: rows per benchmark subset (PAM, MusicEval, Music Arena, CMI-Pref).
        workers: rendering processes (default: up to 2; results do not depend on it).
        timbre_effect: X, score points: X tau is part of every clip's true score (all splits).
        timbre_confound: Y, score points: Y tau is added to the training labels only.
        Neither changes any audio: corpora that differ only in them share every audio file.

    Returns: {"root", "train", "val", "bench", "clips_csv", "meta", "readme"} (Paths).
    """
    if singers < 2 or clips < 2:
        raise ValueError(f"need at least 2 singers and 2 clips, got {singers=}, {clips=}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cast = make_singers(singers, seed)
    timbre = TimbreKnobs(timbre_axis(cast), float(timbre_effect), float(timbre_confound))
    n_val = max(1, int(round(clips * val_fraction)))
    plans = plan_split("train", clips - n_val, cast, seed, (min_dur, max_dur), formats, timbre)
    plans += plan_split("val", n_val, cast, seed, (min_dur, max_dur), formats, timbre)
    bench_plans, bench_rows_ = plan_bench(cast, seed, bench_rows, bench_dur, timbre)
    all_plans = plans + bench_plans
    render_all(out, all_plans, cast, workers)

    paths = {
        "root": out,
        "train": out / "train.json",
        "val": out / "val.json",
        "bench": out / "bench.jsonl",
        "clips_csv": out / "clips.csv",
        "meta": out / "meta.json",
        "readme": out / "README.md",
    }
    write_text(
        paths["bench"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bench_rows_)
    )
    write_clips_csv(paths["clips_csv"], all_plans, cast, with_timbre=timbre.active)
    meta = {
        "seed": seed,
        "sr": SR,
        "singers": [asdict(s) for s in cast],
        "penalty": PENALTY,
        "counts": {s: sum(p.split == s for p in all_plans) for s in ("train", "val", "bench")},
    }
    readme = README_TEXT
    if timbre.active:  # only then: the default corpus stays byte-identical
        meta["timbre"] = {
            "effect": timbre.effect,
            "confound": timbre.confound,
            "tau": timbre.tau,
        }
        readme += timbre_readme(timbre)
    write_text(paths["meta"], json.dumps(meta, indent=1) + "\n")
    write_text(paths["readme"], readme)
    rng = np.random.default_rng([seed, 7])
    for split in ("val", "train"):  # train.json last: its presence means the corpus is complete
        groups = make_groups([p for p in plans if p.split == split], group_size, rng)
        write_text(paths[split], json.dumps(groups, indent=1) + "\n")
    return paths


def plan_split(
    split: str,
    n: int,
    cast: list[Singer],
    seed: int,
    dur_range: tuple[float, float],
    formats: tuple[str, ...],
    timbre: TimbreKnobs = NO_TIMBRE,
) -> list[ClipPlan]:
    """`n` clip plans for "train" (singer-biased severity) or "val" (severity ~ U(0, 1)); with
    `timbre` knobs, the timbre effect (both) and confound (train) enter the labels."""
    code = {"train": 1, "val": 2}[split]
    rng = np.random.default_rng([seed, code])
    plans = []
    for i in range(n):
        singer = cast[i % len(cast)]  # balanced singers, and each singer gets every format
        fmt = formats[(i + i // len(cast)) % len(formats)]
        if split == "train":  # singer-specific level: timbre predicts the score here
            q = float(np.clip(singer.level + rng.normal(0, 0.07), 0, 1))
        else:
            q = float(rng.uniform(0, 1))
        plan = ClipPlan(
            clip_id=f"{split}_{i:04d}",
            split=split,
            audio_file=f"audio/{split}/{singer.name}/{split}_{i:04d}.{fmt}",
            singer=singer.name,
            duration=round(float(rng.uniform(*dur_range)), 2),
            tempo=str(rng.choice(["slow", "fast"])),
            severity=round(q, 4),
            seed=[seed, code, i],
            **draw_degradations(q, rng),
        )
        plan.score = round(score_clip(plan), 2)
        if timbre.active:
            timbre.apply(plan)
        plans.append(plan)
    return plans


def make_groups(
    plans: list[ClipPlan], size: tuple[int, int], rng: np.random.Generator
) -> list[list[dict]]:
    """Shuffle clips into groups of `size` (inclusive range), each sorted high to low."""
    order = list(rng.permutation(len(plans)))
    groups = []
    while order:
        lo, hi = size
        n = min(int(rng.integers(lo, hi + 1)), len(order))
        if 0 < len(order) - n < lo:  # no undersized tail group
            n = len(order) if len(order) <= hi else len(order) - lo
        members = [plans[j] for j in order[:n]]
        order = order[n:]
        members.sort(key=lambda p: -p.score)
        groups.append(
            [{AUDIO_FILE: p.audio_file, SCORE: p.score, SINGER: p.singer} for p in members]
        )
    return groups


def render_all(out: Path, plans: list[ClipPlan], cast: list[Singer], workers: int | None) -> None:
    by_name = {s.name: s for s in cast}
    jobs = [(out / p.audio_file, p, by_name[p.singer]) for p in plans]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    # a bar on a terminal only (disable=None): logs and tests stay clean
    bar = tqdm(total=len(jobs), desc="rendering clips", unit="clip", disable=None)
    with bar:
        if workers <= 1:
            for job in jobs:
                _render_job(job)
                bar.update()
            return
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_render_job, jobs, chunksize=4):
                bar.update()


def _render_job(job: tuple[Path, ClipPlan, Singer]) -> None:
    path, plan, singer = job
    save_audio(path, render_clip(plan, singer), SR)


# ---------------------------------------------------------------- outputs


CSV_FIELDS = ["clip_id", "split", "audio_file", "format", "singer", "voice", "duration", "tempo",
              "severity", "pitch_cents", "jitter_ms", "snr_db", "breath", "clip_db",
              "penalty_pitch", "penalty_timing", "penalty_noise", "penalty_breath",
              "penalty_clip", "score"]  # fmt: skip


TIMBRE_FIELDS = ["timbre", "timbre_effect", "confound", "true_score"]  # with the timbre knobs


def write_clips_csv(
    path: Path, plans: list[ClipPlan], cast: list[Singer], with_timbre: bool = False
) -> None:
    voice = {s.name: s.voice for s in cast}
    tau = timbre_axis(cast)
    fields = CSV_FIELDS + (TIMBRE_FIELDS if with_timbre else [])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for p in plans:
            row = {k: v for k, v in asdict(p).items() if k in CSV_FIELDS}
            if with_timbre:
                row.update(
                    timbre=tau[p.singer],
                    timbre_effect=round(p.timbre_effect, 4),
                    confound=round(p.confound, 4),
                    true_score=round(score_clip(p), 2),
                )
            row.update({f"penalty_{k}": round(v, 3) for k, v in p.penalties().items()})
            for k in ("pitch_cents", "jitter_ms", "snr_db", "breath", "clip_db"):
                row[k] = round(row[k], 4)
            row.update(format=Path(p.audio_file).suffix[1:], voice=voice[p.singer])
            w.writerow(row)


def read_clips_csv(path: str | Path) -> list[dict[str, Any]]:
    """clips.csv rows with numbers parsed (a convenience for tests and analysis)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    text = {"clip_id", "split", "audio_file", "format", "singer", "voice", "tempo"}
    return [{k: (v if k in text else float(v)) for k, v in r.items()} for r in rows]


README_TEXT = f"""# Synthetic singing corpus

Made by `audioscore.synth.make_corpus` (`scripts/make_synthetic_corpus.py`). Same seed, same
corpus: scores, samples and encoded files are identical. All audio is mono, {SR} Hz, in
wav, flac, mp3 and m4a.

## Clips
Each clip is a sung melody (pentatonic, "slow" or "fast" tempo): a band-limited sawtooth whose
pitch follows the notes with portamento and vibrato, shaped by a spectral tilt and a bank of
five parallel formant resonators (two vowels per clip, mixed differently on each note).
Singers differ in pitch range (`voice` low/high), vocal-tract scale and personal formant
offsets, tilt, and vibrato.

## Ground truth
A clip has an overall `severity` q in [0, 1] (0 = clean); each degradation takes its own
random share s_i = clip(q * u_i, 0, 1), u_i ~ U(0.4, 1.6):

| degradation | parameter (clips.csv) | at s = 1 | penalty |
|---|---|---|---|
| pitch error: per-note detune (RMS) + unsteady drift | `pitch_cents` | {MAX_PITCH_CENTS:g} cents | {PENALTY["pitch"]} x cents |
| timing jitter of note onsets (std) | `jitter_ms` | {MAX_JITTER_MS:g} ms | {PENALTY["timing"]} x ms |
| coloured background noise | `snr_db` | {SNR_WORST_DB:g} dB (clean {SNR_CLEAN_DB:g}) | {PENALTY["noise"]} x ({SNR_CLEAN_DB:g} - snr_db) |
| breathiness: aspiration noise through the formants | `breath` | {MAX_BREATH:g} | {PENALTY["breath"]} x breath |
| hard clipping: drive above full scale | `clip_db` | {MAX_CLIP_DB:g} dB | {PENALTY["clip"]} x clip_db |

    score = clip(99 - sum of penalties, 50, 99)

so the score falls monotonically with each degradation. Output level is random (0.35-0.75 peak)
and carries no information.

## Splits
- `train.json`: singer k's clips have q ~ N(level_k, 0.07) with levels spread over 0.1-0.9, so
  the singer (timbre) predicts the score: a shortcut a model should not learn.
- `val.json`: q ~ U(0, 1) independent of the singer (same singers).

Both are groups files (`[[{{"audio_file", "score", "singer"}}, ...], ...]`), groups of 4-10
clips, each sorted from high to low; paths are relative to this folder. `clips.csv` has every
clip's parameters, penalties and score (benchmark clips too, as split "bench"); `meta.json` the
singers and weights.

## Benchmark (`bench.jsonl`, CMI-RewardBench schema, split "test", paths relative here)
Prompts name a tempo (slow/fast) and a voice (low/high). A clip follows its prompt, or (p = 0.35)
gets one attribute flipped.
- musicality MOS = clip(1 + 4 (score - 50) / 49 + N(0, 0.15), 1, 5)
- text-music alignment MOS = clip(1.5 + 3 x (fraction of matched attributes) + N(0, 0.2), 1, 5);
  CMI-Pref rows with a reference clip lose 1 point when the singer differs from the reference's.
  Lyrics are decoration (the voice sings vowels) and do not affect any label.
- PAM (music): five systems on shared prompts; system sets the mean severity
  ({", ".join(f"{k} {v}" for k, v in PAM_SYSTEMS.items())}).
- MusicEval: single clips, severity ~ U(0.05, 0.9).
- Music Arena: pairs, `preference` "A" if A's musicality MOS is higher, else "B" (no ties).
- CMI-Pref (`cmi-arena-annotation`): pairs, `preference-musicality` / `preference-alignment` =
  model_a / model_b by the MOS difference, "both" when it is under 0.25; confidence
  = clip(round_half(1 + 2 |diff|), 1, 5) as a string; modalities text, text+lyrics, text+ref,
  text+lyrics+ref in turn.
"""


def timbre_readme(knobs: TimbreKnobs) -> str:
    """The README section of a corpus made with the timbre knobs (the formula and its values)."""
    taus = ", ".join(f"{name} {t:+.3f}" for name, t in knobs.tau.items())
    return f"""
## Timbre knobs (this corpus: timbre_effect X = {knobs.effect:g}, timbre_confound Y = {knobs.confound:g})
Each singer has a timbre coordinate tau in [-1, 1]: the singer's rank by vocal-tract scale
(`formant_scale`: brighter voices higher; high voices rank above low ones), mapped linearly from
-1 (lowest) to +1 (highest). Here: {taus}.

    true score  = clip(99 - sum of penalties + X tau, 50, 99)   every split, benchmark included
    train label = clip(true score + Y tau, 50, 99)              train.json only

X is a genuine preference for some voices: timbre is part of the truth everywhere. Y is a
training-only bias: in `train.json` timbre predicts the labels without being part of the truth;
`val.json` and `bench.jsonl` carry the true score. The audio does not depend on X or Y.
`clips.csv` adds `timbre` (tau), `timbre_effect` (X tau), `confound` (Y tau in train, else 0) and
`true_score`; its `score` is the label the groups files carry. `meta.json` has X, Y and tau.
"""
