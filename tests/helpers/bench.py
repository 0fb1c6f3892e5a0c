"""Bench test helpers: a small CMI-RewardBench-shaped dataset, a runner config, and reward
models that pause or die mid-run (to test resuming).

The toy dataset has all four subsets, a train row and an unknown source (both filtered out), a
missing and a corrupt clip. Clip loudness follows the human musicality score, so the
signal-statistics baseline correlates with it.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from audiobase.audio import save_audio
from bench.baselines import SignalStatsReward
from rewards.server import ScoreHandler, make_server

SR = 16_000
MONTHS = ("01-2025JULAUG", "02-2025SEP")


def tone(seconds: float, amp: float, freq: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(
        np.float32
    )


def write_clip(root: Path, rel: str, quality: float, seed: int) -> str:
    """A clip whose loudness grows and noise shrinks with `quality` in [1, 5]."""
    amp = 0.02 + 0.15 * (quality - 1)
    save_audio(
        root / rel, tone(0.5 + 0.25 * (seed % 4), amp, 220 + 40 * seed, 0.3 / quality, seed), SR
    )
    return rel


def make_toy_bench(root: Path, *, corrupt: bool = True, missing: bool = True) -> Path:
    """Write clips + bench.jsonl under `root`; returns the jsonl path (paths relative to root)."""
    rng = np.random.default_rng(0)
    rows, seed = [], 0
    for system in ("audioldm2", "musicgen_large", "real"):
        for i in range(4):
            q = float(rng.uniform(1, 5))
            rel = write_clip(root, f"human_eval/music/{system}/{i}.wav", q, seed)
            rows.append(
                {
                    "source": "PAM (music)",
                    "split": "test",
                    "audio-path": rel,
                    "prompt": f"pam {system} {i}",
                    "musicality": round(q, 2),
                    "text-music alignment": round(float(rng.uniform(1, 5)), 2),
                }
            )
            seed += 1
    for i in range(5):
        q = float(rng.uniform(1, 5))
        rel = write_clip(root, f"MusicEval_data/test_audio/{i}.wav", q, seed)
        rows.append(
            {
                "source": "MusicEval",
                "split": "test",
                "audio-path": rel,
                "prompt": "",
                "musicality": q,
                "text-music alignment": 3.0,
            }
        )
        seed += 1
    for i in range(6):
        qa, qb = rng.uniform(1, 5, 2)
        month = MONTHS[i % 2]
        a = write_clip(root, f"MusicArena_data/audio_files/{month}/p{i}-a.wav", qa, seed)
        b = write_clip(root, f"MusicArena_data/audio_files/{month}/p{i}-b.wav", qb, seed + 1)
        seed += 2
        rows.append(
            {
                "source": "Music Arena ['01-2025JULAUG', '02-2025SEP']",
                "split": "test",
                "audio-path": a,
                "audio2": b,
                "prompt": f"arena {i}",
                "preference": "A" if qa > qb else "B",
            }
        )
    ref = write_clip(root, "cmi-pref/ref/ref0.wav", 4.0, 99)
    for i in range(8):
        qa, qb = rng.uniform(1, 5, 2)
        a = write_clip(root, f"cmi-pref/gen-audio/c{i}a.wav", qa, seed)
        b = write_clip(root, f"cmi-pref/gen-audio/c{i}b.wav", qb, seed + 1)
        seed += 2
        rows.append(
            {
                "source": "cmi-arena-annotation",
                "split": "test",
                "audio-path": a,
                "audio2": b,
                "prompt": f"cmi {i}",
                "lyrics": "la la" if i % 2 else "",
                "ref-audio-path": ref if i % 4 >= 2 else "",
                "preference-musicality": "model_a" if qa > qb else "model_b",
                "preference-alignment": ["model_a", "model_b", "both"][i % 3],
                "confidence_preference-musicality": str(1.0 + i % 5),
                "confidence_preference-alignment": "3.0",
            }
        )
    rows.append(
        {"source": "PAM (music)", "split": "train", "audio-path": "human_eval/music/real/0.wav"}
    )
    rows.append({"source": "other", "split": "test", "audio-path": "x.wav"})
    if missing:
        rows.append(
            {
                "source": "MusicEval",
                "split": "test",
                "audio-path": "MusicEval_data/test_audio/nope.wav",
                "musicality": 2.0,
            }
        )
    if corrupt:
        bad = root / "MusicEval_data/test_audio/corrupt.wav"
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage, not audio" * 4)
        rows.append(
            {
                "source": "MusicEval",
                "split": "test",
                "audio-path": "MusicEval_data/test_audio/corrupt.wav",
                "musicality": 4.0,
            }
        )
    path = root / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_cfg(root: Path, out: Path, **over) -> OmegaConf:
    """A runner config like conf/bench/bench.yaml, with the signal-statistics baseline as `custom`."""
    cfg = OmegaConf.load(Path(__file__).parents[2] / "conf" / "bench" / "bench.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.model = {
        "name": "signal_stats",
        "_target_": "bench.baselines.SignalStatsReward",
        "sr": SR,
    }
    cfg.dataset = {
        "name": "toy",
        "jsonl": str(root / "bench.jsonl"),
        "root": str(root),
        "split": "test",
    }
    cfg.output_root = str(out)
    cfg.batch_size, cfg.num_workers, cfg.n_boot, cfg.plots, cfg.max_dur = 4, 0, 50, False, 30.0
    for k, v in over.items():
        OmegaConf.update(cfg, k, v, force_add=True)
    return cfg


class SlowSignalStats(SignalStatsReward):
    """The baseline with a pause per batch, so a test can kill a run between batches."""

    def __init__(self, delay_s: float = 0.0, **kw):
        super().__init__(**kw)
        self.delay_s = delay_s

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        time.sleep(self.delay_s)
        return super().score_batch(inputs, batch_size, max_dur, **kw)


class SimulatedKill(BaseException):
    """A BaseException, so the runner's per-clip error handling does not catch it: the run
    stops as a killed process would (what was fsynced stays, nothing else happens)."""


class DyingSignalStats(SignalStatsReward):
    """The baseline, dying on its (`after` + 1)-th score_batch call: `after` batches are durable."""

    def __init__(self, after: int, **kw):
        super().__init__(**kw)
        self.after, self.calls = after, 0

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        self.calls += 1
        if self.calls > self.after:
            raise SimulatedKill(f"killed after {self.after} batches")
        return super().score_batch(inputs, batch_size, max_dur, **kw)


class ExtraColumnsReward(SignalStatsReward):
    """The baseline plus two named extra columns (as a multi-dimension scorer like SongEval)."""

    extra_columns = ["loudness", "half"]

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        base = np.asarray(super().score_batch(inputs, batch_size, max_dur, **kw))
        return np.concatenate([base, base[:, 1:2], base[:, 1:2] / 2], axis=1)  # [N, 4]


class CountingHandler(ScoreHandler):
    """Counts POSTs per clip (by the audio's content) and rejects clips whose prompt starts
    with "reject" or equals a prompt in `reject`, as a service that cannot score one clip."""

    reject: tuple[str, ...] = ()

    def do_POST(self):  # noqa: N802 - http.server naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw)
        with self.count_lock:
            self.counts[hashlib.sha1(body["audio"]["data"].encode()).hexdigest()] += 1
        if body["text"] in self.reject:
            return self.send_json(400, {"error": "this clip cannot be scored"})
        self.rfile = io.BytesIO(raw)  # replay the body for the real handler
        return super().do_POST()


def serve(model, handler=ScoreHandler, **kw):
    """A `rewards.serve` server for `model` on a free local port, in a daemon thread; returns
    (server, score url). Call `server.shutdown(); server.server_close()` when done."""
    server = make_server(model, "127.0.0.1", 0, handler=handler, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/score"


class PathsReward(SignalStatsReward):
    """Takes file paths (`model.inputs=paths`), as a CMI-RewardBench model does: loads audio
    itself and remembers what each call got."""

    batch_independent = True
    seen: list[tuple[object, object]] = []

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        type(self).seen += [(x.audio, x.ref_audio) for x in inputs]
        return super().score_batch([x.audio for x in inputs], batch_size, max_dur, **kw)


class GradReward(SignalStatsReward):
    """Needs autograd while scoring (`model.grad=true`): musicality is a gradient norm."""

    batch_independent = True

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        base = np.asarray(super().score_batch(inputs, batch_size, max_dur, **kw))
        for i, x in enumerate(inputs):
            wav = torch.as_tensor(x.audio).clone().requires_grad_(True)
            wav.pow(2).mean().backward()  # fails under torch.inference_mode()
            base[i, 1] = float(wav.grad.norm())
        return base


class JudgeLikeReward(SignalStatsReward):
    """Per-item results with details, as an audio-LLM judge returns its raw answer; clips with
    the prompt "pam real 1" fail with an unparsable answer."""

    batch_independent = True

    def score_batch_detailed(self, inputs, batch_size, max_dur, **kw):
        scores = np.asarray(super().score_batch(inputs, batch_size, max_dur, **kw))
        errors = ["unparsable answer" if x.text == "pam real 1" else None for x in inputs]
        details = [{"judge_answer": f"score for {x.text}"} for x in inputs]
        return scores, errors, details


class ConcurrentStats(SignalStatsReward):
    """The baseline with a pause per batch that records how many calls overlap (`most`)."""

    def __init__(self, thread_safe: bool = True, delay_s: float = 0.05, **kw):
        super().__init__(**kw)
        self.thread_safe, self.delay_s = thread_safe, delay_s
        self.lock, self.active, self.most = threading.Lock(), 0, 0

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(self.delay_s)
            return super().score_batch(inputs, batch_size, max_dur, **kw)
        finally:
            with self.lock:
                self.active -= 1
