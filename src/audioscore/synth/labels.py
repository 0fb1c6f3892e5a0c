"""A clip's degradations and its ground truth: the penalties, the score, the timbre knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
