"""Singers and their sung clips: a sawtooth at a vibrato f0 contour through the singer's formants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import sosfilt, sosfilt_zi

from audioscore.synth.labels import ClipPlan

SR = 24_000
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
