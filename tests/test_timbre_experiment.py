"""audioscore.studies.timbre_experiment (scripts/timbre_experiment.py): the timbre-weight
measure, the report and plot (timbre_report), and a micro grid end to end."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from audioscore.studies import timbre_experiment as te
from audioscore.studies import timbre_report as tr


def test_timbre_weight_reads_points_per_unit_tau_beyond_quality():
    rng = np.random.default_rng(0)
    quality = rng.uniform(50, 99, 200)
    tau = rng.choice(np.linspace(-1, 1, 8), 200)
    raw = 0.1 * (quality + 7.0 * tau) - 3  # any affine raw scale: the ratio is what counts
    assert te.timbre_weight(raw, quality, tau) == pytest.approx(7.0)
    assert te.timbre_weight(0.1 * quality, quality, tau) == pytest.approx(0.0, abs=1e-9)


def fake_rows() -> list[dict]:
    rows = []
    base = {"muq_lora": 0.85, "muq_lora_grl": 0.86, "hybrid_campp": 0.84, "hybrid_campp_grl": 0.85}
    drop = {"control": {}, "genuine": {"hybrid_campp": 0.04}, "spurious": {"muq_lora": -0.10}}
    for seed in (0, 1):
        for regime in ("control", "genuine", "spurious"):
            for exp, v in base.items():
                rows.append(
                    {"regime": regime, "experiment": exp, "seed": seed,
                     "val_srcc": v + drop[regime].get(exp, 0.0) + 0.01 * seed,
                     "val_srcc_pooled": v, "val_mae": 4.0, "timbre_weight": 1.0,
                     "probe_c1": 0.1, "probe_c1e4": 0.2,
                     "probe_all_c1": 0.3 if "hybrid" in exp else float("nan"),
                     "probe_timbre_c1": 0.4 if "hybrid" in exp else float("nan"),
                     "train_s": 10.0}
                )  # fmt: skip
    return rows


def test_report_tables_losses_recoveries_and_plot(tmp_path):
    grid = te.load_grid(["experiments=[muq_lora,muq_lora_grl,hybrid_campp,hybrid_campp_grl]"])
    rows = fake_rows()
    tr.write_cells(tmp_path / "cells.csv", rows)
    again = tr.read_cells(tmp_path / "cells.csv")
    assert again[5]["val_srcc"] == pytest.approx(rows[5]["val_srcc"])
    md = tr.write_report(again, grid, tmp_path).read_text()
    assert "| spurious | muq_lora | 2 | 0.755 ± 0.007 |" in md
    assert "| control | muq_lora | 2 | 0.855 ± 0.007 | 4.00 ± 0.00 | 1.0 ± 0.0 |" in md
    # spurious plan A: loses 0.10 against control, its GRL gets back 0.11 of it
    assert "- spurious, muq_lora: loss against control +0.100" in md
    assert "muq_lora_grl minus muq_lora: +0.110 (per seed +0.110, +0.110), recovering 110%" in md
    assert "- genuine: plan B minus plan A: +0.030" in md
    assert tr.plot(again, grid, tmp_path).stat().st_size > 1000


def test_grid_overrides_and_unknown_regime(tmp_path):
    grid = te.load_grid(["seeds=[3]", "regimes.genuine.timbre_effect=4"])
    assert list(grid.seeds) == [3] and grid.regimes.genuine.timbre_effect == 4
    assert set(grid.use_regimes) == {"control", "genuine", "spurious"}


@pytest.mark.slow
def test_micro_grid_end_to_end(tmp_path):
    """Two regimes x plan A x one seed, two optimizer steps each, on a 4-singer corpus."""
    res = te.main(
        ["--out", str(tmp_path), "use_regimes=[control,spurious]", "experiments=[muq_lora]",
         "seeds=[0]", "corpus.singers=4", "corpus.clips=40", "corpus.val_fraction=0.5",
         "probe.folds=2", "probe.repeats=1",
         "train_overrides=[debug=tiny,logger=csv,~callbacks,export=false,data.num_workers=0,"
         "data.preprocess.max_dur=1.0,data.groups_per_batch=2,data.max_group_size=4,"
         "data.steps_per_epoch=2,trainer.max_epochs=1,++trainer.limit_val_batches=0,"
         "trainer.num_sanity_val_steps=0,++trainer.enable_checkpointing=false,"
         "trainer.enable_progress_bar=false]"]
    )  # fmt: skip
    rows = tr.read_cells(tmp_path / "cells.csv")
    assert [(r["regime"], r["experiment"]) for r in rows] == [
        ("control", "muq_lora"),
        ("spurious", "muq_lora"),
    ]
    for r in rows:
        assert -1 <= r["val_srcc"] <= 1 and r["val_mae"] > 0 and np.isnan(r["probe_all_c1"])
    spurious = (tmp_path / "corpora" / "spurious" / "README.md").read_text()
    assert "timbre_confound Y = 10" in spurious
    assert res["plot"].is_file() and "spurious, muq_lora" in res["table"].read_text()
    # a rerun keeps finished cells and trains nothing
    again = te.main(["--out", str(tmp_path), "use_regimes=[control,spurious]",
                     "experiments=[muq_lora]", "seeds=[0]", "corpus.singers=4", "corpus.clips=40",
                     "corpus.val_fraction=0.5"])  # fmt: skip
    assert len(again["rows"]) == 2


def test_campp_option_composes_and_points_plan_b_at_the_file(tmp_path):
    """campp.kind=pretrained: plan B's CAM++ (wherever the model keeps it) loads the pretrained
    file through the user's overrides; plan A is untouched."""
    grid = te.load_grid(["campp.kind=pretrained", "campp.pretrain.steps=10"])
    assert grid.campp.kind == "pretrained" and grid.campp.pretrain.singers == 24
    weights = tmp_path / "campp_pretrained.bin"
    for exp, node in [("hybrid_campp_grl_uncond", "timbre"), ("hybrid_campp_proj_grl", "encoder")]:
        cfg = te.compose_cell(grid, tmp_path / "c", exp, 0, tmp_path / "r", weights)
        (path,) = te.campp_nodes(cfg)
        assert path.endswith(node)
        campp = OmegaConf.select(cfg, path)
        assert campp.source == str(weights.resolve()) and campp.tiny is False
    plain = te.compose_cell(grid, tmp_path / "c", "hybrid_campp", 0, tmp_path / "r")
    assert OmegaConf.select(plain, "model.net.timbre.tiny") is True  # debug=tiny: random CAM++
    assert not te.campp_nodes(te.compose_cell(grid, tmp_path / "c", "muq_lora", 0, tmp_path / "r"))
    with pytest.raises(ValueError, match="campp.kind must be"):
        te.campp_weights(te.load_grid(["campp.kind=trained"]), tmp_path)


def test_campp_weights_pretrains_once_per_folder(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(path, **kw):
        calls.append(kw)
        path.write_bytes(b"w")
        return {"path": path, "loss": 1.0, "acc": 0.5}

    monkeypatch.setattr(te, "pretrain_campp", fake_pretrain)
    grid = te.load_grid(["campp.kind=pretrained"])
    path = te.campp_weights(grid, tmp_path)
    assert path == tmp_path / "campp_pretrained.bin" and te.campp_weights(grid, tmp_path) == path
    assert len(calls) == 1 and calls[0]["cast_seed"] == 1000
    with pytest.raises(ValueError, match="use another --out"):
        te.campp_weights(te.load_grid([]), tmp_path)  # random cells do not join pretrained ones


def test_reuse_cells_takes_plan_a_rows_only(tmp_path):
    src = tmp_path / "old.csv"
    tr.write_cells(src, fake_rows())
    grid = te.load_grid([f"reuse_cells={src}", "seeds=[0]", "experiments=[muq_lora,hybrid_campp]"])
    rows = te.reuse_cells(grid, [])
    assert {(r["experiment"], int(r["seed"])) for r in rows} == {("muq_lora", 0)}
    assert len(rows) == 3  # one per regime


@pytest.mark.slow
def test_micro_grid_with_pretrained_campp(tmp_path):
    """campp.kind=pretrained end to end: the runner pretrains once and plan B embeds with it."""
    from audioscore.models.components.campp import CamppEncoder

    args = ["--out", str(tmp_path), "use_regimes=[control]", "experiments=[hybrid_campp]",
            "seeds=[0]", "corpus.singers=4", "corpus.clips=40", "corpus.val_fraction=0.5",
            "probe.folds=2", "probe.repeats=1", "campp.kind=pretrained",
            "campp.pretrain.singers=4", "campp.pretrain.clips_per_singer=2",
            "campp.pretrain.steps=2", "campp.pretrain.batch_size=4", "campp.pretrain.crop_s=0.5",
            "train_overrides=[debug=tiny,logger=csv,~callbacks,export=false,data.num_workers=0,"
            "data.preprocess.max_dur=1.0,data.groups_per_batch=2,data.max_group_size=4,"
            "data.steps_per_epoch=2,trainer.max_epochs=1,++trainer.limit_val_batches=0,"
            "trainer.num_sanity_val_steps=0,++trainer.enable_checkpointing=false,"
            "trainer.enable_progress_bar=false]"]  # fmt: skip
    te.main(args)
    weights = tmp_path / "campp_pretrained.bin"
    namespace = "campp-" + CamppEncoder(str(weights)).config_hash()[:16]
    assert [p.name for p in (tmp_path / "corpora" / "feature_cache").iterdir()] == [namespace]
    (row,) = tr.read_cells(tmp_path / "cells.csv")
    assert not np.isnan(row["probe_timbre_c1"])
