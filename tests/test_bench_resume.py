"""Resume keyed on everything that changes a score: a changed fingerprint sets the old scores
aside (results.<old fingerprint>.jsonl) and starts afresh; old and new are never mixed."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path

import pytest
from helpers.bench import SimulatedKill, make_cfg, make_toy_bench
from omegaconf import OmegaConf

import bench.models
from bench.models import DIGESTS_NAME, build_model, weights_digest
from bench.run import run
from rewards.base import RewardModel

USER_MODEL = textwrap.dedent(
    '''
    from bench.baselines import SignalStatsReward


    class UserModel(SignalStatsReward):
        """A user's model; its scores may depend on its batch-mates (nothing says otherwise)."""


    class IndependentUserModel(SignalStatsReward):
        batch_independent = True
    '''
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyresume")
    make_toy_bench(root, corrupt=False, missing=False)
    return root


@pytest.fixture
def user_module(tmp_path, monkeypatch, request):
    """A user's model module on sys.path, under a name unique to the test."""
    name = f"user_model_{request.node.name.replace('[', '_').replace(']', '_')}"
    path = tmp_path / "user" / f"{name}.py"
    path.parent.mkdir()
    path.write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(path.parent))
    return name, path


def custom_cfg(toy, out, class_path, **over):
    cfg = make_cfg(toy, out, subset="PAM", **over)
    cfg.model = {
        "name": "user",
        "class_path": class_path,
        "init_kwargs": {"sr": 16_000},
        "checkpoint": None,
        "device": "cpu",
    }
    return cfg


def results(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_edited_model_module_rescores_and_keeps_the_old_scores_aside(
    toy, tmp_path, user_module, caplog
):
    name, path = user_module
    cfg = custom_cfg(toy, tmp_path, f"{name}:UserModel")
    _, first = run(cfg)
    assert len(first["scored_keys"]) == 12
    _, same = run(cfg)
    assert same["scored_keys"] == [] and same["skipped_rows"] == 12
    out = tmp_path / "user" / "toy"
    old = results(out / "results.jsonl")
    path.write_text(USER_MODEL + "\n# the user changed the model\n")
    with caplog.at_level(logging.WARNING, logger="bench.resume"):
        _, edited = run(cfg)
    assert len(edited["scored_keys"]) == 12  # nothing reused
    aside = out / f"results.{old[0]['bench_fingerprint']}.jsonl"
    assert results(aside) == old  # the old scores are kept, whole, next to the new file
    new = results(out / "results.jsonl")
    assert len(new) == 12 and {r["bench_fingerprint"] for r in new} != {old[0]["bench_fingerprint"]}
    assert "moved to" in caplog.text and aside.name in caplog.text


def test_batch_size_counts_for_batch_dependent_models_only(toy, tmp_path, user_module):
    name, _ = user_module
    for cls, rescored in [("UserModel", True), ("IndependentUserModel", False)]:
        out = tmp_path / cls
        run(custom_cfg(toy, out, f"{name}:{cls}", batch_size=4))
        _, again = run(custom_cfg(toy, out, f"{name}:{cls}", batch_size=2))
        assert bool(again["scored_keys"]) == rescored, cls
    # the project's own models are batch-independent: signal_stats keeps its scores
    run(make_cfg(toy, tmp_path / "own", subset="PAM", batch_size=4))
    _, own = run(make_cfg(toy, tmp_path / "own", subset="PAM", batch_size=2, batching="file"))
    assert own["scored_keys"] == [] and own["skipped_rows"] == 12


def test_new_weight_bytes_under_the_same_mtime_rescore(toy, tmp_path):
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"A" * 64)
    cfg = make_cfg(toy, tmp_path / "out", subset="PAM", **{"model.checkpoint": str(weights)})
    run(cfg)
    st = weights.stat()
    weights.write_bytes(b"B" * 64)  # same size ...
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime
    assert weights.stat().st_mtime_ns == st.st_mtime_ns
    _, info = run(cfg)
    assert len(info["scored_keys"]) == 12


def test_weight_digests_are_cached_by_path_and_stat(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "config.yaml").write_text("a: 1\n")
    (ckpt / "sub" / "model.safetensors").write_bytes(b"x" * 100)
    (ckpt / ".git").mkdir()
    (ckpt / ".git" / "index").write_bytes(b"ignored")
    sidecar = tmp_path / DIGESTS_NAME
    hashed: list[Path] = []
    real = bench.models.sha256_file
    monkeypatch.setattr(bench.models, "sha256_file", lambda p: hashed.append(p) or real(p))
    first = weights_digest(ckpt, sidecar)
    assert sorted(p.name for p in hashed) == ["config.yaml", "model.safetensors"]
    hashed.clear()
    assert weights_digest(ckpt, sidecar) == first and hashed == []  # read from the sidecar
    (ckpt / "sub" / "model.safetensors").write_bytes(b"y" * 100)
    assert weights_digest(ckpt, sidecar) != first
    assert [p.name for p in hashed] == ["model.safetensors"]  # only the changed file


def test_switching_a_setting_back_resumes_its_scores(toy, tmp_path, caplog):
    a = make_cfg(toy, tmp_path, subset="PAM")
    b = make_cfg(toy, tmp_path, subset="PAM", **{"model.n_fft": 512})
    run(a)
    _, other = run(b)
    assert len(other["scored_keys"]) == 12
    out = tmp_path / "signal_stats" / "toy"
    assert len(list(out.glob("results.*.jsonl"))) == 1  # a's scores, set aside
    with caplog.at_level(logging.WARNING, logger="bench.resume"):
        _, back = run(a)
    assert back["scored_keys"] == [] and back["skipped_rows"] == 12
    assert "resuming the scores" in caplog.text
    fps = {r["bench_fingerprint"] for r in results(out / "results.jsonl")}
    assert len(fps) == 1 and len(list(out.glob("results.*.jsonl"))) == 1  # b's set aside


def test_a_file_mixing_fingerprints_is_split(toy, tmp_path):
    """Results written before fingerprints were kept apart: each one gets its own file."""
    cfg = make_cfg(toy, tmp_path, subset="PAM")
    run(cfg)
    out = tmp_path / "signal_stats" / "toy"
    recs = results(out / "results.jsonl")
    for r in recs[:5]:
        r["bench_fingerprint"] = "01d"
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    _, info = run(cfg)
    assert len(info["scored_keys"]) == 5 and info["skipped_rows"] == 7
    assert len(results(out / "results.01d.jsonl")) == 5
    assert {r["bench_fingerprint"] for r in results(out / "results.jsonl")} == {
        recs[-1]["bench_fingerprint"]
    }


class DiesAfter(RewardModel):
    """A built reward model, killed (SimulatedKill) in its (`after` + 1)-th score_batch call;
    everything else is the model's own."""

    def __init__(self, inner, after: int):
        self.inner, self.after, self.calls = inner, after, 0

    @property
    def sr(self):
        return self.inner.sr

    @property
    def capabilities(self):
        return self.inner.capabilities

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        self.calls += 1
        if self.calls > self.after:
            raise SimulatedKill(f"killed after {self.after} batches")
        return self.inner.score_batch(inputs, batch_size, max_dur, **kw)


def test_killed_and_resumed_run_gives_bit_identical_scores(toy, tmp_path):
    """CMI-RM's float32 arithmetic depends on a batch's shape; a resumed run composes the
    unfinished batches as the uninterrupted run did, so every score is the same float."""
    model_cfg = OmegaConf.load(Path(__file__).parents[1] / "conf/bench/model/cmi_rm_tiny.yaml")
    model_cfg.checkpoint = str(tmp_path / "cmi_rm_tiny")

    def cfg(out):
        c = make_cfg(toy, tmp_path / out, subset="PAM", device="cpu", batch_size=3)
        c.model = model_cfg
        return c

    run(cfg("full"))
    model, _ = build_model(cfg("resumed"))
    with pytest.raises(SimulatedKill):
        run(cfg("resumed"), model=DiesAfter(model, after=1))
    _, info = run(cfg("resumed"))
    assert info["skipped_rows"] == 3 and len(info["scored_keys"]) == 9

    def scores(out):
        rows = results(tmp_path / out / "cmi_rm_tiny" / "toy" / "results.jsonl")
        fields = ("predicted_musicality", "predicted_text-music alignment")
        return {r["bench_row_key"]: [r[f] for f in fields] for r in rows}

    assert scores("resumed") == scores("full")
