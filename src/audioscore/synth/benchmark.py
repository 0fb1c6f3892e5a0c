"""The benchmark file: CMI-RewardBench rows (four subsets) on clips drawn for prompts, with MOS labels."""

from __future__ import annotations

import numpy as np

from audiobase import schemas as S
from audioscore.synth.labels import (
    NO_TIMBRE,
    SCORE_MAX,
    SCORE_MIN,
    ClipPlan,
    TimbreKnobs,
    draw_degradations,
    score_clip,
)
from audioscore.synth.voices import Singer

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
        return {S.SOURCE: "PAM (music)", S.SPLIT: "test", S.AUDIO_A: path, S.PROMPT: text, **lab}

    def musiceval_row(self, k: int) -> dict:
        text, tempo, voice = self.prompt()
        path = f"MusicEval_data/test_audio/{k}.wav"
        _, lab = self.clip(path, self.severity(), tempo, voice)
        return {S.SOURCE: "MusicEval", S.SPLIT: "test", S.AUDIO_A: path, S.PROMPT: text, **lab}

    def arena_row(self, k: int) -> dict:
        """Music Arena pair: "A" if A's musicality MOS is higher (no ties)."""
        text, tempo, voice = self.prompt()
        month = ARENA_MONTHS[k % len(ARENA_MONTHS)]
        stem = f"MusicArena_data/audio_files/{month}/prebaked-{self.rng.bytes(6).hex()}"
        pa, la = self.clip(f"{stem}-a.mp3", self.severity(), tempo, voice)
        pb, lb = self.clip(f"{stem}-b.mp3", self.severity(), tempo, voice)
        better_a = (la[S.MUSICALITY], pa.score) >= (lb[S.MUSICALITY], pb.score)
        return {
            S.SOURCE: f"Music Arena ['{month}']",
            S.SPLIT: "test",
            S.AUDIO_A: pa.audio_file,
            S.AUDIO_B: pb.audio_file,
            S.PROMPT: text,
            S.PREFERENCE: "A" if better_a else "B",
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
                lab[S.ALIGNMENT] = max(1.0, lab[S.ALIGNMENT] - 1.0)
            sides.append((plan, lab))
        (pa, la), (pb, lb) = sides
        a_sys, b_sys = self.rng.choice(len(CMI_SYSTEMS), 2, replace=False)
        row = {
            S.SOURCE: "cmi-arena-annotation",
            S.SPLIT: "test",
            S.AUDIO_A: pa.audio_file,
            S.AUDIO_B: pb.audio_file,
            S.PROMPT: text,
            S.LYRICS: lyrics_line(self.rng) if with_lyrics else "",
            S.REF_AUDIO: ref_path,
            # upstream CMI-Pref columns that no reader here needs (not in audiobase.schemas)
            "model_a": CMI_SYSTEMS[a_sys],
            "model_b": CMI_SYSTEMS[b_sys],
            "prompt id": f"p{k:04d}",
            "user id": f"u{k % 5}",
        }
        for pref, key in ((S.PREF_MUSICALITY, S.MUSICALITY), (S.PREF_ALIGNMENT, S.ALIGNMENT)):
            row[pref], row[S.CONFIDENCE + pref] = preference(la[key] - lb[key])
        return row


def labels(plan: ClipPlan, match: dict[str, bool], rng: np.random.Generator) -> dict[str, float]:
    """MOS 1-5: musicality from the ground-truth score, alignment from prompt matches."""
    mus = 1.0 + 4.0 * (plan.score - SCORE_MIN) / (SCORE_MAX - SCORE_MIN) + rng.normal(0, 0.15)
    ali = 1.5 + 3.0 * sum(match.values()) / len(match) + rng.normal(0, 0.2)
    return {
        S.MUSICALITY: round(float(np.clip(mus, 1, 5)), 2),
        S.ALIGNMENT: round(float(np.clip(ali, 1, 5)), 2),
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
