"""audioscore.train end to end on the tiny config: logging, export, resume, init_from, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import hydra
import pytest
import torch
from helpers.callbacks import keys_seen
from helpers.train import FAST, make_cfg, read_csv_rows
from safetensors.torch import load_file

from audiobase.muq import build_tiny_muq_dir
from audioscore.train import train
from audioscore.training.init_from import load_init_weights
from audioscore.training.loggers import build_loggers
from rewards.audioscore_rm import AudioscoreRewardModel


def test_train_logs_checkpoints_and_exports(tmp_path, synth_corpus, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = make_cfg(tmp_path, synth_corpus, "logger=default", "trainer.max_epochs=2")
    metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    for key in ("val/srcc", "val/ktau", "val/pair_acc"):
        assert -1.0 <= metrics[key] <= 1.0, key
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    rows = read_csv_rows(tmp_path)
    assert any(r.get("val/srcc") for r in rows) and any(r.get("train/loss") for r in rows)
    assert list(tmp_path.glob("wandb/offline-run-*"))  # wandb ran offline without a key
    # the export reloads without Lightning and scores like the trained net
    model = AudioscoreRewardModel(objects["export_dir"])
    clip = synth_corpus["root"] / "audio"
    files = sorted(str(p) for p in clip.rglob("*.wav"))[:2]
    scores = model.score_batch(files, 2, None)
    assert scores.shape == (2, 2) and torch.isfinite(torch.tensor(scores[:, 1])).all()


def test_resume_continues_and_lora_only_checkpoints(tmp_path, synth_corpus):
    tiny = build_tiny_muq_dir(tmp_path / "tiny_muq")
    common = [f"model.net.encoder.pretrained={tiny}", "save_full_encoder=false"]
    _, first = train(make_cfg(tmp_path / "a", synth_corpus, *common))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert any("lora_B" in k for k in state) and not any("base_layer" in k for k in state)
    assert first["trainer"].global_step == 2

    cfg = make_cfg(
        tmp_path / "b", synth_corpus, *common, "trainer.max_epochs=2", f"ckpt_path={last}"
    )
    _, second = train(cfg)
    assert second["trainer"].global_step == 4
    # last.ckpt is the latest epoch even when val/srcc did not improve (Lightning's save_last
    # alone would leave it at the best epoch)
    last_b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last_b["global_step"] == 4
    steps = [int(r["step"]) for r in read_csv_rows(tmp_path / "b") if r.get("train/loss")]
    assert steps == [0, 1, 2, 3]  # the first epoch's rows come from run a, each step once
    weights = load_file(str(second["export_dir"] / "model.safetensors"))
    assert not any("base_layer" in k for k in weights)  # LoRA-only export, base from `pretrained`
    assert AudioscoreRewardModel(second["export_dir"]).net.encoder.pretrained == str(tiny)


KEYS_SEEN = "+callbacks.keys_seen._target_=helpers.callbacks.KeysSeen"


def test_resume_in_place_keeps_the_history_and_the_draws(tmp_path, synth_corpus):
    """Train 2 epochs, resume the run in its own dir to 3: the CSV log holds all 3 epochs once
    (rows the interrupted run logged after the checkpoint are dropped), and epoch 3 trains on
    the draws of (seed, epoch 3), which do not depend on what ran before (test_datamodule.py)."""
    run = tmp_path / "run"
    common = ["export=false", KEYS_SEEN]
    train(make_cfg(run, synth_corpus, *common, "trainer.max_epochs=2"))
    with open(run / "csv" / "metrics.csv", "a", newline="") as f:  # logged, then killed
        f.write(",".join("4" if k == "step" else "" for k in read_csv_rows(run)[0]) + "\n")
    last = run / "checkpoints" / "last.ckpt"
    cfg = make_cfg(run, synth_corpus, *common, "trainer.max_epochs=3", f"ckpt_path={last}")
    _, resumed = train(cfg)
    rows = read_csv_rows(run)
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == list(range(6))
    assert [int(r["epoch"]) for r in rows if r.get("val/srcc")] == [0, 1, 2]
    assert [r["step"] for r in rows].count("4") == 2  # epoch 3's lr and loss rows, once each

    torch.manual_seed(cfg.seed)  # as seed_everything: the datamodule's seed
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.trainer = SimpleNamespace(current_epoch=2)
    drawn = [k for batch in dm.train_dataloader() for k in batch["keys"]]
    assert keys_seen(resumed["trainer"]) == {2: drawn}


@pytest.mark.slow
def test_resumed_run_trains_and_logs_like_an_uninterrupted_one(tmp_path, synth_corpus, monkeypatch):
    """The user's sequence with wandb: 2 epochs, then resume in place to 3: epoch 3 draws the
    groups and crops an uninterrupted 3-epoch run draws, and both wandb segments share the id."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "run"
    common = ["export=false", KEYS_SEEN, "logger=default"]
    train(make_cfg(run, synth_corpus, *common, "trainer.max_epochs=2"))
    last = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    _, resumed = train(make_cfg(run, synth_corpus, *common, "trainer.max_epochs=3", last))
    segments = sorted(run.glob("wandb/offline-run-*"))
    assert len(segments) == 2 and len({p.name.rsplit("-", 1)[1] for p in segments}) == 1
    assert [int(r["epoch"]) for r in read_csv_rows(run) if r.get("val/srcc")] == [0, 1, 2]

    straight = make_cfg(tmp_path / "straight", synth_corpus, *common, "trainer.max_epochs=3")
    first, again = keys_seen(train(straight)[1]["trainer"]), keys_seen(resumed["trainer"])
    assert list(again) == [2] and again[2] == first[2]
    assert first[2] != first[1]  # each epoch draws anew


def test_resume_continues_the_wandb_run(tmp_path, synth_corpus, monkeypatch):
    """The wandb run id is kept in the run dir; a resume (in place or in a new dir) continues
    that run, a fresh run starts its own."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (first,) = build_loggers(make_cfg(tmp_path / "a", synth_corpus, "logger=wandb"))
    run_id = (tmp_path / "a" / "wandb_run_id").read_text().strip()
    assert run_id and first.version == run_id
    last = f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}"
    for out in ("a", "b"):
        (resumed,) = build_loggers(make_cfg(tmp_path / out, synth_corpus, "logger=wandb", last))
        assert resumed.version == run_id
        assert (tmp_path / out / "wandb_run_id").read_text().strip() == run_id
    (fresh,) = build_loggers(make_cfg(tmp_path / "a", synth_corpus, "logger=wandb"))
    assert fresh.version != run_id


def test_init_from_copies_exported_weights(tmp_path, synth_corpus):
    _, objects = train(make_cfg(tmp_path / "a", synth_corpus))
    export = load_file(str(objects["export_dir"] / "model.safetensors"))
    fresh = hydra.utils.instantiate(make_cfg(tmp_path / "b", synth_corpus, "seed=123").model)
    load_init_weights(fresh.net, str(objects["export_dir"]))
    own = fresh.net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in export.items())
    other = hydra.utils.instantiate(
        make_cfg(tmp_path / "c", synth_corpus, "model.net.head.hidden_dim=8").model
    )
    with pytest.raises(ValueError, match="shape mismatch"):
        load_init_weights(other.net, str(objects["export_dir"]))


@pytest.mark.parametrize("loss", ["pairwise", "regression"])
def test_alternative_losses_train(tmp_path, synth_corpus, loss):
    export = "true" if loss == "regression" else "false"
    metrics, objects = train(make_cfg(tmp_path, synth_corpus, f"loss={loss}", f"export={export}"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    if loss == "regression":  # standardised with the training scores, recorded in the export
        assert float(objects["model"].loss_fn.std) > 1.0
        meta = AudioscoreRewardModel(objects["export_dir"]).config["meta"]
        assert meta["score_std"] == pytest.approx(float(objects["model"].loss_fn.std))


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, synth_corpus):
    """The user's command with trainer=ddp_sim: Lightning relaunches rank 1 into the same run dir."""
    overrides = [o for o in FAST if o != "trainer.enable_progress_bar=false"]
    cmd = [sys.executable, "-m", "audioscore.train", "experiment=muq_lora", *overrides]
    cmd += [f"data.root={synth_corpus['root']}", "trainer=ddp_sim", f"hydra.run.dir={tmp_path}"]
    cmd += ["trainer.enable_progress_bar=false"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    # ~40 s on 2 idle cores (two processes each importing torch, muq and lightning)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert any(r.get("val/srcc") for r in read_csv_rows(tmp_path))
    assert "world size 2" in proc.stdout  # train()'s own summary line: two processes ran


def test_datamodule_keeps_order_crops_and_skips_unreadable(tmp_path, synth_corpus):
    import json

    from audioscore.data.datamodule import DEFAULT_PREPROCESS, GroupsDataModule
    from audioscore.data.groups import read_groups

    broken = tmp_path / "broken.m4a"
    broken.write_bytes(b"not audio")
    groups = read_groups(synth_corpus["train"])
    for g in groups:  # an unreadable clip in every group, mid-list (score ties its neighbour)
        g.insert(1, {"audio_file": str(broken), "score": g[0]["score"], "singer": "sX"})
    (tmp_path / "train.json").write_text(json.dumps(groups))
    failures = tmp_path / "failures.jsonl"
    dm = GroupsDataModule(
        [str(tmp_path / "train.json")],
        [str(synth_corpus["val"])],
        preprocess=DEFAULT_PREPROCESS.replace(max_dur=1.5),
        groups_per_batch=2,
        max_group_size=20,
        steps_per_epoch=3,
        num_workers=0,
        failures_path=str(failures),
    )
    dm.setup("fit")
    assert dm.num_singers == 5  # 4 singers + sX, mapped to ints
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for b in batches:
        assert b["wav"].shape[1] <= 36_000 and (b["lengths"] <= 36_000).all()
        assert str(broken) not in b["paths"]
        for row in b["slots"]:
            idx = row[row >= 0]
            assert len(idx) >= 2 and (torch.diff(b["scores"][idx]) <= 0).all()  # best first
        assert len(set(b["keys"])) == len(b["keys"])
        assert (b["singer"] >= 0).all()
    lines = failures.read_text().splitlines()
    assert lines and all(json.loads(line)["path"] == str(broken) for line in lines)
    val = next(iter(dm.val_dataloader()))
    assert {"index", "group", "truth"} <= set(val) and (val["lengths"] <= 36_000).all()
