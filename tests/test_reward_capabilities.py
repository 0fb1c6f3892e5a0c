"""What a reward model offers is declared (`RewardModel` attributes, read once into
`Capabilities`), not probed: a plain user class still scores, a `PairwiseJudge` gets the pair
rows, and the runner reads each declaration once however many batches it scores."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from bench.data import read_bench
from bench.infer import decode_row, model_preprocess, score_batch_rows
from bench.models import score_streams
from rewards.base import Capabilities, PairwiseJudge, RewardModel
from rewards.build import build_reward_model
from rewards.custom import CustomRewardModel

SR = 1000


class Plain:
    """A user's class with nothing but `sr` and `score_batch` (CMI-RewardBench's contract)."""

    def __init__(self, checkpoint=None, device=None):
        self.sr = SR

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        return np.asarray([[np.nan, float(len(x.audio))] for x in inputs])


class Counted(RewardModel):
    """Every declaration is a property that counts its reads."""

    reads: Counter = Counter()

    def _read(self, name, value):
        self.reads[name] += 1
        return value

    @property
    def sr(self):
        return self._read("sr", SR)

    @property
    def preprocess(self):
        return self._read("preprocess", None)

    @property
    def extra_columns(self):
        return self._read("extra_columns", ["half"])

    @property
    def thread_safe(self):
        return self._read("thread_safe", True)

    @property
    def batch_independent(self):
        return self._read("batch_independent", True)

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        n = np.asarray([float(len(x.audio)) for x in inputs])
        return np.stack([np.full_like(n, np.nan), n, n / 2], axis=1)  # [N, 3]


class Judge(PairwiseJudge):
    """Prefers the longer clip; records what reaches each method."""

    sr = SR

    def __init__(self, pairwise: bool = True):
        self.pairwise = pairwise
        self.scored: list[int] = []  # lengths of clips sent to score_batch
        self.compared: list[tuple[int, int]] = []

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        self.scored += [len(x.audio) for x in inputs]
        return np.asarray([[np.nan, float(len(x.audio))] for x in inputs])

    def compare_batch(self, pairs, max_dur=None, **kwargs):
        self.compared += [(len(a.audio), len(b.audio)) for a, b in pairs]
        return [
            {"musicality": "model_a" if len(a.audio) > len(b.audio) else "model_b"}
            for a, b in pairs
        ]


def bench_rows(root: Path, pairs: int = 2, singles: int = 2):
    """Rows of 0.1 s (A) and 0.2 s (B) clips: `pairs` Music Arena pairs, `singles` PAM rows."""
    sf.write(root / "a.wav", np.full(100, 0.1, dtype=np.float32), SR)
    sf.write(root / "b.wav", np.full(200, 0.1, dtype=np.float32), SR)
    pair = {"source": "cmi-arena-annotation", "split": "test", "audio-path": "a.wav"}
    pair |= {"audio2": "b.wav", "prompt": "p", "preference-musicality": "model_b"}
    single = {"source": "PAM (music)", "split": "test", "audio-path": "b.wav"}
    lines = [pair] * pairs + [single] * singles
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return read_bench(root / "bench.jsonl", root)


def test_a_plain_class_without_declarations_scores_with_the_defaults(tmp_path):
    model, _ = build_reward_model({"name": "p", "class_path": f"{Plain.__module__}:Plain"})
    assert isinstance(model, CustomRewardModel) and not isinstance(model, PairwiseJudge)
    assert model.capabilities == Capabilities(sr=SR)  # every default: nothing declared
    pre = model_preprocess(model, 30.0)
    decoded = [decode_row(r, pre) for r in bench_rows(tmp_path, pairs=1, singles=1)]
    recs = score_batch_rows(model, decoded, 30.0, {}, "p")
    assert [r["predicted_musicality"] for r in recs] == [100.0, 200.0]
    assert recs[0]["predicted_musicality_b"] == 200.0  # the pair scored clip by clip
    assert all(r["status"] == "ok" for r in recs)


def test_a_pairwise_judge_gets_the_pairs_and_scores_the_rest(tmp_path):
    rows = bench_rows(tmp_path)
    judge = Judge()
    pre = model_preprocess(judge, 30.0)
    recs = score_batch_rows(judge, [decode_row(r, pre) for r in rows], 30.0, {}, "j")
    assert judge.compared == [(100, 200), (100, 200)]
    assert judge.scored == [200, 200]  # only the PAM clips went to score_batch
    assert [r.get("predicted_preference") for r in recs[:2]] == ["model_b", "model_b"]
    assert recs[0]["predicted_musicality"] is None  # a judged pair has no per-clip scores


def test_a_judge_with_pairwise_off_scores_pairs_clip_by_clip(tmp_path):
    rows = bench_rows(tmp_path, singles=0)
    judge = Judge(pairwise=False)
    pre = model_preprocess(judge, 30.0)
    recs = score_batch_rows(judge, [decode_row(r, pre) for r in rows], 30.0, {}, "j")
    assert judge.compared == [] and sorted(judge.scored) == [100, 100, 200, 200]
    assert recs[0]["predicted_musicality_b"] == 200.0


def test_declarations_are_read_once_however_many_batches(tmp_path):
    Counted.reads.clear()
    model = Counted()
    rows = bench_rows(tmp_path, pairs=3, singles=3)
    pre = model_preprocess(model, 30.0)
    cfg = OmegaConf.create({"device": "cpu", "score_streams": "auto"})
    recs = []
    for batch in (rows[:2], rows[2:4], rows[4:]):
        assert score_streams(cfg, model) >= 1
        recs += score_batch_rows(model, [decode_row(r, pre) for r in batch], 30.0, {}, "c")
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)
    assert recs[-1]["predicted_half"] == pytest.approx(100.0)  # the declared extra column
    assert dict(Counted.reads) == {
        "sr": 1,
        "preprocess": 1,
        "extra_columns": 1,
        "thread_safe": 1,
        "batch_independent": 1,
    }
