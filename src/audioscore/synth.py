"""Synthetic singing corpus with a known ground truth (see README_TEXT for the formulas).

A clip is a sung melody: a band-limited sawtooth at a vibrato-laden f0 contour, tilted and shaped
by a singer's formants (vowels change per note). Five controlled degradations lower its score:
pitch error, timing jitter, background noise, breathiness and hard clipping. A clip's overall
severity `q` in [0, 1] scales all five, each with its own random share, so every degradation
varies but a model that hears any of them can rank clips.

Splits: in `train` each singer has its own severity level (a model could score timbre instead of
quality: the GRL experiment relies on that shortcut); in `val` severity is independent of the
singer. `bench.jsonl` mimics CMI-RewardBench's four subsets on short clips.

Timbre knobs (both 0 by default, which leaves the corpus byte-identical to one made without them):
each singer has a timbre coordinate tau in [-1, 1] (`timbre_axis`); `timbre_effect` X adds X tau to
the true score in every split (a genuine preference for some voices), `timbre_confound` Y adds
Y tau to the training labels only (timbre predicts training scores without being part of the truth).

Everything is drawn from `np.random.default_rng([seed, ...])` per clip, so a seed gives the same
plan, samples and encoded bytes, whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import sosfilt, sosfilt_zi

from audiobase.audio import save_audio
from audiobase.files import atomic_path, write_text

SR = 24_000
FORMATS = ("wav", "flac", "mp3", "m4a")
PENTATONIC = np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21, 24])  # two octaves of degrees

# vowel formants (Hz) of an adult low voice; singers scale them by vocal-tract length
VOWELS = {
    "a": (730, 1090, 2440, 3400),
    "e": (530, 1840, 2480, 3500),
    "i": (300, 2290, 3010, 3700),
    "o": (570, 840, 2410, 3400),
    "u": (320, 870, 2240, 3350),
}
BANDWIDTHS = (80, 100, 140, 180, 300)
FORMANT_GAINS = (1.0, 0.7, 0.4, 0.3, 0.2)  # amplitude of each formant's peak

# degradation ranges at severity 1 (severity 0 = clean)
MAX_PITCH_CENTS = 60.0  # RMS of per-note detune
MAX_JITTER_MS = 100.0  # std of note-onset jitter
SNR_CLEAN_DB, SNR_WORST_DB = 40.0, 5.0
MAX_BREATH = 0.6  # aspiration-noise share of the source
MAX_CLIP_DB = 15.0  # drive into a hard clipper

# score = clip(99 - sum of penalties, 50, 99); each penalty grows with its degradation
PENALTY = {
    "pitch": 0.2,  # per cent of detune      (60 cents -> 12)
    "timing": 0.05,  # per ms of jitter      (100 ms -> 5)
    "noise": 0.5,  # per dB of SNR below 40  (5 dB -> 17.5)
    "breath": 15.0,  # per unit breathiness  (0.6 -> 9)
    "clip": 0.6,  # per dB of clipper drive  (15 dB -> 9)
}
SCORE_MAX, SCORE_MIN = 99.0, 50.0

PAM_SYSTEMS = {
    "real": 0.1,
    "musicgen_large": 0.3,
    "musicgen_melody": 0.45,
    "audioldm2": 0.6,
    "musicldm": 0.75,
}  # system -> mean severity
ARENA_MONTHS = ("01-2025JULAUG", "02-2025SEP", "03-2025OCT", "04-2025NOV", "05-2025DEC")
CMI_SYSTEMS = ("suno-v4", "ace-step", "yue", "diffrhythm", "musicgen-large", "stable-audio-open")
GENRES = ("pop", "folk", "ballad", "jazz", "rock", "lullaby", "soul", "anthem")


@dataclass
class Singer:
    name: str
    base_midi: float  # centre of the singer's range
    voice: str  # "low" / "high" (for prompts)
    formant_scale: float  # vocal-tract length: higher = brighter, smaller tract
    formant_jitter: tuple[float, ...]  # per-formant personal offsets (ratio)
    tilt_hz: float  # spectral tilt: cutoff of a one-pole lowpass on the source
    vibrato_hz: float
    vibrato_cents: float
    level: float  # training-split severity level (the timbre-quality shortcut)


@dataclass
class ClipPlan:
    clip_id: str
    split: str
    audio_file: str  # relative to the corpus root
    singer: str
    duration: float
    tempo: str  # "slow" / "fast"
    severity: float  # overall severity q (0 = clean)
    pitch_cents: float
    jitter_ms: float
    snr_db: float
    breath: float
    clip_db: float
    seed: list[int] = field(default_factory=list)
    score: float = 0.0  # the label the groups files carry (true score + confound)
    timbre_effect: float = 0.0  # X tau: part of the true score
    confound: float = 0.0  # Y tau on training labels only: not part of the true score

    def penalties(self) -> dict[str, float]:
        return {
            "pitch": PENALTY["pitch"] * self.pitch_cents,
            "timing": PENALTY["timing"] * self.jitter_ms,
            "noise": PENALTY["noise"] * (SNR_CLEAN_DB - self.snr_db),
            "breath": PENALTY["breath"] * self.breath,
            "clip": PENALTY["clip"] * self.clip_db,
        }


def score_clip(plan: ClipPlan) -> float:
    """Ground truth: 99 minus the weighted degradations (+ the timbre effect), clipped to [50, 99]."""
    raw = SCORE_MAX - sum(plan.penalties().values()) + plan.timbre_effect
    return float(np.clip(raw, SCORE_MIN, SCORE_MAX))


def label_clip(plan: ClipPlan) -> float:
    """The label a groups file carries: the true score plus the training confound, clipped."""
    return float(np.clip(score_clip(plan) + plan.confound, SCORE_MIN, SCORE_MAX))


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


# ---------------------------------------------------------------- planning (cheap, in process)


def make_singers(n: int, seed: int) -> list[Singer]:
    rng = np.random.default_rng([seed, 0])
    levels = rng.permutation(np.linspace(0.1, 0.9, n))  # training severity per singer
    cast = []
    for k in range(n):
        high = k % 2 == 1  # half low, half high voices
        base = rng.uniform(62, 72) if high else rng.uniform(45, 55)  # D4-C5 / A2-G3 centres
        cast.append(
            Singer(
                name=f"s{k:02d}",
                base_midi=float(base),
                voice="high" if high else "low",
                formant_scale=float(rng.uniform(1.08, 1.25) if high else rng.uniform(0.88, 1.02)),
                formant_jitter=tuple(float(x) for x in rng.uniform(0.92, 1.08, 4)),
                tilt_hz=float(rng.uniform(1200, 4000)),
                vibrato_hz=float(rng.uniform(4.5, 6.5)),
                vibrato_cents=float(rng.uniform(15, 60)),
                level=float(levels[k]),
            )
        )
    return cast


def timbre_axis(cast: list[Singer]) -> dict[str, float]:
    """Each singer's timbre coordinate tau in [-1, 1]: rank by vocal-tract scale (`formant_scale`,
    brighter = higher; high voices rank above low ones), mapped linearly, lowest -1, highest +1.
    Drawn from nothing: the knobs leave every random stream as it was."""
    order = np.argsort([s.formant_scale for s in cast], kind="stable")
    tau = np.empty(len(cast))
    tau[order] = np.linspace(-1.0, 1.0, len(cast))
    return {s.name: round(float(t), 6) for s, t in zip(cast, tau, strict=True)}


@dataclass(frozen=True)
class TimbreKnobs:
    """tau per singer, the effect X (true score, every split), the confound Y (train labels)."""

    tau: dict[str, float]
    effect: float = 0.0
    confound: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.effect or self.confound)

    def apply(self, plan: ClipPlan) -> ClipPlan:
        """Set the plan's timbre terms and its label (the score the groups files carry)."""
        t = self.tau[plan.singer]
        plan.timbre_effect = self.effect * t
        plan.confound = self.confound * t if plan.split == "train" else 0.0
        plan.score = round(label_clip(plan), 2)
        return plan


NO_TIMBRE = TimbreKnobs({})


def draw_degradations(q: float, rng: np.random.Generator) -> dict[str, float]:
    """Severity q in [0, 1] -> the five degradation parameters (each with its own random share)."""
    share = np.clip(q * rng.uniform(0.4, 1.6, 5), 0.0, 1.0)
    return {
        "pitch_cents": float(MAX_PITCH_CENTS * share[0]),
        "jitter_ms": float(MAX_JITTER_MS * share[1]),
        "snr_db": float(SNR_CLEAN_DB - (SNR_CLEAN_DB - SNR_WORST_DB) * share[2]),
        "breath": float(MAX_BREATH * share[3]),
        "clip_db": float(MAX_CLIP_DB * share[4]),
    }


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
            [{"audio_file": p.audio_file, "score": p.score, "singer": p.singer} for p in members]
        )
    return groups


def plan_bench(
    cast: list[Singer],
    seed: int,
    n_rows: int,
    dur_range: tuple[float, float],
    timbre: TimbreKnobs = NO_TIMBRE,
) -> tuple[list[ClipPlan], list[dict]]:
    """Clips and CMI-RewardBench rows, `n_rows` per subset (see README_TEXT for the labels)."""
    planner = BenchPlanner(cast, seed, dur_range, timbre)
    rows = []
    for subset in (planner.pam_row, planner.musiceval_row, planner.arena_row, planner.cmi_row):
        rows += [subset(k) for k in range(n_rows)]
    return planner.plans, rows


class BenchPlanner:
    """Draws benchmark clips for prompts ("a slow/fast ... song sung by a low/high voice")."""

    def __init__(
        self,
        cast: list[Singer],
        seed: int,
        dur_range: tuple[float, float],
        timbre: TimbreKnobs = NO_TIMBRE,
    ):
        self.cast, self.seed, self.dur_range, self.timbre = cast, seed, dur_range, timbre
        self.rng = np.random.default_rng([seed, 3])
        self.plans: list[ClipPlan] = []
        self.pam_prompt: tuple[str, str, str] | None = None

    def choose(self, voice: str, besides: Singer | None = None) -> Singer:
        pool = [s for s in self.cast if s.voice == voice and s is not besides] or self.cast
        return pool[int(self.rng.integers(len(pool)))]

    def clip(
        self,
        path: str,
        severity: float,
        tempo: str,
        voice: str,
        singer: Singer | None = None,
        faithful: bool = False,
    ) -> tuple[ClipPlan, dict[str, float]]:
        """A clip for a prompt (and a wanted singer); returns (plan, MOS labels)."""
        rng = self.rng
        match = {"tempo": True, "voice": True}
        if not faithful and rng.random() < 0.35:  # the "system" ignored part of the prompt
            match[str(rng.choice(["tempo", "voice"]))] = False
        sung_tempo = tempo if match["tempo"] else {"slow": "fast", "fast": "slow"}[tempo]
        sung_voice = voice if match["voice"] else {"low": "high", "high": "low"}[voice]
        if singer is None or not match["voice"]:
            singer = self.choose(sung_voice)
        elif not faithful and rng.random() < 0.3:  # imitated the reference badly
            singer = self.choose(sung_voice, besides=singer)
        q = float(np.clip(severity + rng.normal(0, 0.12), 0, 1))
        i = len(self.plans)
        plan = ClipPlan(
            clip_id=f"bench_{i:04d}",
            split="bench",
            audio_file=path,
            singer=singer.name,
            duration=round(float(rng.uniform(*self.dur_range)), 2),
            tempo=sung_tempo,
            severity=round(q, 4),
            seed=[self.seed, 3, i],
            **draw_degradations(q, rng),
        )
        plan.score = round(score_clip(plan), 2)
        if self.timbre.active:  # the effect only: benchmark labels are unconfounded
            self.timbre.apply(plan)
        self.plans.append(plan)
        return plan, labels(plan, match, rng)

    def prompt(self) -> tuple[str, str, str]:
        tempo, voice = str(self.rng.choice(["slow", "fast"])), str(self.rng.choice(["low", "high"]))
        return f"A {tempo} {self.rng.choice(GENRES)} song sung by a {voice} voice", tempo, voice

    def severity(self) -> float:
        return float(self.rng.uniform(0.05, 0.9))

    def pam_row(self, k: int) -> dict:
        """PAM: every system on the same prompt; the system sets the mean severity."""
        systems = list(PAM_SYSTEMS)
        if k % len(systems) == 0:
            self.pam_prompt = self.prompt()
        assert self.pam_prompt is not None, "PAM rows are drawn in order from k = 0"
        text, tempo, voice = self.pam_prompt
        system = systems[k % len(systems)]
        path = f"human_eval/music/{system}/{youtube_id(self.rng)}.wav"
        _, lab = self.clip(path, PAM_SYSTEMS[system], tempo, voice)
        return {"source": "PAM (music)", "split": "test", "audio-path": path, "prompt": text, **lab}

    def musiceval_row(self, k: int) -> dict:
        text, tempo, voice = self.prompt()
        path = f"MusicEval_data/test_audio/{k}.wav"
        _, lab = self.clip(path, self.severity(), tempo, voice)
        return {"source": "MusicEval", "split": "test", "audio-path": path, "prompt": text, **lab}

    def arena_row(self, k: int) -> dict:
        """Music Arena pair: "A" if A's musicality MOS is higher (no ties)."""
        text, tempo, voice = self.prompt()
        month = ARENA_MONTHS[k % len(ARENA_MONTHS)]
        stem = f"MusicArena_data/audio_files/{month}/prebaked-{self.rng.bytes(6).hex()}"
        pa, la = self.clip(f"{stem}-a.mp3", self.severity(), tempo, voice)
        pb, lb = self.clip(f"{stem}-b.mp3", self.severity(), tempo, voice)
        better_a = (la["musicality"], pa.score) >= (lb["musicality"], pb.score)
        return {
            "source": f"Music Arena ['{month}']",
            "split": "test",
            "audio-path": pa.audio_file,
            "audio2": pb.audio_file,
            "prompt": text,
            "preference": "A" if better_a else "B",
        }

    def cmi_row(self, k: int) -> dict:
        """CMI-Pref pair; modalities text, text+lyrics, text+ref, text+lyrics+ref in turn."""
        text, tempo, voice = self.prompt()
        with_lyrics, with_ref = bool(k % 2), bool((k // 2) % 2)
        ref_path, ref_singer = "", None
        if with_ref:  # a reference clip by the singer the prompt asks to imitate
            ref_singer = self.choose(voice)
            ref_path = f"cmi-pref/ref-audio/{self.rng.bytes(6).hex()}.wav"
            self.clip(ref_path, 0.1, tempo, voice, singer=ref_singer, faithful=True)
            text += " in the style of the reference"
        sides = []
        for _ in range(2):
            path = f"cmi-pref/gen-audio/{self.rng.bytes(6).hex()}.mp3"
            plan, lab = self.clip(path, self.severity(), tempo, voice, singer=ref_singer)
            if ref_singer is not None and plan.singer != ref_singer.name:
                lab["text-music alignment"] = max(1.0, lab["text-music alignment"] - 1.0)
            sides.append((plan, lab))
        (pa, la), (pb, lb) = sides
        a_sys, b_sys = self.rng.choice(len(CMI_SYSTEMS), 2, replace=False)
        row = {
            "source": "cmi-arena-annotation",
            "split": "test",
            "audio-path": pa.audio_file,
            "audio2": pb.audio_file,
            "prompt": text,
            "lyrics": lyrics_line(self.rng) if with_lyrics else "",
            "ref-audio-path": ref_path,
            "model_a": CMI_SYSTEMS[a_sys],
            "model_b": CMI_SYSTEMS[b_sys],
            "prompt id": f"p{k:04d}",
            "user id": f"u{k % 5}",
        }
        for dim, key in (("musicality", "musicality"), ("alignment", "text-music alignment")):
            row[f"preference-{dim}"], row[f"confidence_preference-{dim}"] = preference(
                la[key] - lb[key]
            )
        return row


def labels(plan: ClipPlan, match: dict[str, bool], rng: np.random.Generator) -> dict[str, float]:
    """MOS 1-5: musicality from the ground-truth score, alignment from prompt matches."""
    mus = 1.0 + 4.0 * (plan.score - SCORE_MIN) / (SCORE_MAX - SCORE_MIN) + rng.normal(0, 0.15)
    ali = 1.5 + 3.0 * sum(match.values()) / len(match) + rng.normal(0, 0.2)
    return {
        "musicality": round(float(np.clip(mus, 1, 5)), 2),
        "text-music alignment": round(float(np.clip(ali, 1, 5)), 2),
    }


def preference(diff: float) -> tuple[str, str]:
    """MOS difference -> ("model_a" | "model_b" | "both", confidence "1.0".."5.0" in halves)."""
    if abs(diff) < 0.25:
        return "both", "1.0"
    conf = float(np.clip(np.round(2 * (1 + 2 * abs(diff))) / 2, 1, 5))
    return ("model_a" if diff > 0 else "model_b"), f"{conf:.1f}"


def youtube_id(rng: np.random.Generator) -> str:
    chars = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    return "".join(rng.choice(chars, 11))


def lyrics_line(rng: np.random.Generator) -> str:
    syl = ["la", "na", "da", "oh", "ah", "mi", "lo", "ve", "sun", "rain", "home", "sky"]
    return "\n".join(" ".join(rng.choice(syl, 6)) for _ in range(2))


# ---------------------------------------------------------------- rendering (per clip, parallel)


def render_all(out: Path, plans: list[ClipPlan], cast: list[Singer], workers: int | None) -> None:
    by_name = {s.name: s for s in cast}
    jobs = [(out / p.audio_file, p, by_name[p.singer]) for p in plans]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        for job in jobs:
            _render_job(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_render_job, jobs, chunksize=4))


def _render_job(job: tuple[Path, ClipPlan, Singer]) -> None:
    path, plan, singer = job
    save_audio(path, render_clip(plan, singer), SR)


def render_clip(plan: ClipPlan, singer: Singer, sr: int = SR) -> np.ndarray:
    """The clip's audio, [T] float32 in [-1, 1]."""
    rng = np.random.default_rng(plan.seed)
    n = int(round(plan.duration * sr))
    notes = compose_melody(plan, singer, rng)  # [(onset s, length s, midi)]
    f0, env, vowel_mix = note_tracks(notes, plan, singer, n, sr, rng)
    voice = sing(f0, env, vowel_mix, plan.breath, singer, sr, rng)
    mix = add_noise(voice, env, plan.snr_db, sr, rng)
    mix = mix / (np.max(np.abs(mix)) + 1e-9) * 10 ** (plan.clip_db / 20)
    mix = np.clip(mix, -1.0, 1.0)  # hard clipping (drive 0 dB = just touches full scale)
    return (mix * rng.uniform(0.35, 0.75)).astype(
        np.float32
    )  # level varies: not a cue; headroom for codecs


def compose_melody(
    plan: ClipPlan, singer: Singer, rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """Notes as (onset s, length s, MIDI pitch): a pentatonic walk, onsets jittered."""
    lo, hi = (0.45, 0.9) if plan.tempo == "slow" else (0.15, 0.32)
    key = singer.base_midi + rng.integers(-3, 4)
    degree, t, notes = int(rng.integers(2, 6)), 0.05, []
    while t < plan.duration - 0.1:
        length = float(rng.uniform(lo, hi))
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(PENTATONIC) - 1))
        notes.append((t, length, float(key - 7 + PENTATONIC[degree])))
        t += length + (float(rng.uniform(0.1, 0.3)) if rng.random() < 0.1 else 0.0)  # a breath
    sigma = plan.jitter_ms / 1000
    jittered = []
    for onset, length, midi in notes:  # timing jitter: onsets move, notes keep >= 60 ms
        shift = float(np.clip(sigma * rng.standard_normal(), -0.45 * length, 0.45 * length))
        jittered.append((max(onset + shift, 0.0), max(length - shift, 0.06), midi))
    return jittered


def note_tracks(
    notes: list[tuple[float, float, float]],
    plan: ClipPlan,
    singer: Singer,
    n: int,
    sr: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample f0 (Hz), amplitude envelope and vowel mix weight, each [T]."""
    target = np.full(n, np.nan)  # cents relative to MIDI 0
    env = np.zeros(n)
    vowel = np.zeros(n)
    for onset, length, midi in notes:
        # draw first, whatever the values: clips differing in one degradation share the rest
        detune = plan.pitch_cents * rng.standard_normal()  # pitch error
        gain, mix = 10 ** (rng.uniform(-3, 3) / 20), rng.random()
        a, b = int(onset * sr), min(int((onset + length) * sr), n)
        if b - a < 8:
            continue
        target[a:b] = 100 * midi + detune
        env[a:b] = np.maximum(env[a:b], adsr(b - a, sr) * gain)
        vowel[a:b] = mix
    target = fill_gaps(target)
    cents = one_pole(target, 25.0, sr)  # portamento between notes
    t = np.arange(n) / sr
    rate = singer.vibrato_hz * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3)))
    cents += singer.vibrato_cents * np.sin(2 * np.pi * np.cumsum(rate) / sr)
    drift = one_pole(rng.standard_normal(n), 2.0, sr)  # unsteady pitch, part of the pitch error
    cents += 0.4 * plan.pitch_cents * drift / (drift.std() + 1e-9)
    f0 = 440.0 * 2 ** ((cents / 100 - 69) / 12)
    return f0, one_pole(env, 40.0, sr), one_pole(vowel, 8.0, sr)


def adsr(m: int, sr: int) -> np.ndarray:
    a, r = min(int(0.04 * sr), m // 3), min(int(0.07 * sr), m // 3)
    env = np.ones(m)
    env[:a] = np.linspace(0, 1, a)
    env[m - r :] = np.linspace(1, 0, r)
    return env


def sing(
    f0: np.ndarray,
    env: np.ndarray,
    vowel_mix: np.ndarray,
    breath: float,
    singer: Singer,
    sr: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Source-filter voice: (tilted PolyBLEP sawtooth + aspiration) -> two vowel filters, mixed."""
    dt = np.minimum(f0 / sr, 0.49)
    phase = np.cumsum(dt) % 1.0
    saw = polyblep_saw(phase, dt)
    saw = sosfilt(one_pole_sos(singer.tilt_hz, sr), saw)  # singer's spectral tilt
    aspiration = rng.standard_normal(len(f0)) * (0.6 + 0.4 * np.cos(2 * np.pi * phase))
    aspiration = sosfilt(highpass_sos(1500.0, sr), aspiration)
    voiced_rms = np.sqrt(np.mean(saw**2)) + 1e-9
    source = (1 - breath) * saw + breath * 1.5 * voiced_rms * aspiration / (aspiration.std() + 1e-9)
    names = list(VOWELS)
    v1, v2 = rng.choice(len(names), 2, replace=False)
    out_a = formant_filter(source, VOWELS[names[v1]], singer, sr)
    out_b = formant_filter(source, VOWELS[names[v2]], singer, sr)
    return (vowel_mix * out_a + (1 - vowel_mix) * out_b) * env


def add_noise(
    voice: np.ndarray, env: np.ndarray, snr_db: float, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Coloured background noise at `snr_db` relative to the voice while it sings."""
    white = rng.standard_normal(len(voice))
    noise = sosfilt(one_pole_sos(800.0, sr), white) * 4 + 0.3 * white + 0.2 * rng.random()
    noise = noise - noise.mean()
    active = env > 0.3 * env.max() if env.max() > 0 else np.ones(len(voice), bool)
    p_voice = np.mean(voice[active] ** 2) + 1e-12
    noise *= np.sqrt(p_voice / 10 ** (snr_db / 10) / (np.mean(noise**2) + 1e-12))
    return voice + noise


def polyblep_saw(phase: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Band-limited sawtooth (PolyBLEP corrects the jump so it does not alias)."""
    saw = 2 * phase - 1
    lo = phase < dt
    x = phase[lo] / dt[lo]
    saw[lo] -= 2 * x - x * x - 1
    hi = phase > 1 - dt
    x = (phase[hi] - 1) / dt[hi]
    saw[hi] -= x * x + 2 * x + 1
    return saw


def formant_filter(
    x: np.ndarray, formants: tuple[float, ...], singer: Singer, sr: int
) -> np.ndarray:
    """Parallel formant bank: band-pass resonators at the singer's scaled formants, summed.

    Parallel (not cascaded) so energy above F4 survives: breathiness and noise stay audible
    in the upper band, as in real voices. F5 is a fixed-ratio extra formant for brightness.
    """
    out = np.zeros_like(x)
    freqs = (*formants, formants[-1] * 1.3)
    jitter = (*singer.formant_jitter, singer.formant_jitter[-1])
    for f, bw, gain, jit in zip(freqs, BANDWIDTHS, FORMANT_GAINS, jitter, strict=True):
        f = min(f * singer.formant_scale * jit, 0.45 * sr)
        r = np.exp(-np.pi * bw / sr)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / sr), r * r
        g = gain * (1 - r * r) / 2  # unity peak gain, zeros at DC and Nyquist
        out += sosfilt(np.array([[g, 0, -g, 1, a1, a2]]), x)
    return out


def one_pole_sos(fc: float, sr: int) -> np.ndarray:
    p = np.exp(-2 * np.pi * fc / sr)
    return np.array([[1 - p, 0, 0, 1, -p, 0]])


def highpass_sos(fc: float, sr: int) -> np.ndarray:
    p = np.exp(-2 * np.pi * fc / sr)
    return np.array([[(1 + p) / 2, -(1 + p) / 2, 0, 1, -p, 0]])


def one_pole(x: np.ndarray, fc: float, sr: int) -> np.ndarray:
    """Smooth a control track with a one-pole lowpass at `fc` Hz, starting settled at x[0]."""
    if not len(x):
        return x
    sos = one_pole_sos(fc, sr)
    return sosfilt(sos, x, zi=sosfilt_zi(sos) * x[0])[0]  # no glide up from 0


def fill_gaps(cents: np.ndarray) -> np.ndarray:
    """Hold the previous note's pitch through rests (and the first note's before it)."""
    idx = np.where(np.isnan(cents), 0, np.arange(len(cents)))
    np.maximum.accumulate(idx, out=idx)
    filled = cents[idx]
    first = np.flatnonzero(~np.isnan(cents))
    filled[np.isnan(filled)] = cents[first[0]] if len(first) else 6000.0
    return filled


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
