"""audioscore.legacy.read_legacy on tiny original-format checkpoint folders (a few small tensors
saved with torch.save): what it maps, what it drops and says so, and every refusal naming the
file."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch

from audioscore.legacy import (
    FROZEN_TYPE,
    LEGACY_CALIBRATION,
    LEGACY_PREPROCESS,
    LORA_TYPE,
    LegacyFormatError,
    is_legacy_checkpoint,
    read_legacy,
)

D, H = 4, 3  # frame dim, head hidden dim


def head_sd(attn: int = 1, rows: int = 5, fc_in: int = 2 * D) -> dict[str, torch.Tensor]:
    sd = {
        "ffd.0.weight": torch.randn(H, D),
        "ffd.0.bias": torch.randn(H),
        "ffd.2.weight": torch.randn(D, H),
        "ffd.2.bias": torch.randn(D),
        "fc.weight": torch.arange(rows * fc_in, dtype=torch.float32).reshape(rows, fc_in),
        "fc.bias": torch.arange(rows, dtype=torch.float32),
    }
    for i in range(attn):
        sd[f"attn.{i}.in_proj_weight"] = torch.randn(3 * D, D)
        sd[f"attn.{i}.in_proj_bias"] = torch.randn(3 * D)
        sd[f"attn.{i}.out_proj.weight"] = torch.randn(D, D)
        sd[f"attn.{i}.out_proj.bias"] = torch.randn(D)
    return sd


def lora_sd(layers=(0, 7), r: int = 2, scaling: float = 4.0) -> dict[str, torch.Tensor]:
    sd = {}
    for i in layers:
        for mod in ("linear_q", "linear_v"):
            name = f"model.conformer.layers.{i}.attn.{mod}.default"
            sd[f"{name}.lora_A"] = torch.randn(r, D)
            sd[f"{name}.lora_B"] = torch.randn(D, r)
            sd[f"{name}.scaling"] = torch.tensor(scaling)
    return sd


def ckpt(root: Path, kind: str = LORA_TYPE, head=None, lora=None, type_text=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "type.txt").write_text(type_text if type_text is not None else f"{kind}\n")
    torch.save(head if head is not None else head_sd(), root / "weights.pt")
    if lora is not False:
        torch.save(lora if lora is not None else lora_sd(), root / "muq_lora.pt")
    return root


def test_lora_checkpoint_maps_the_head_negating_the_musicality_row(tmp_path):
    head = head_sd(attn=2)
    ck = read_legacy(ckpt(tmp_path / "c", head=head))
    assert ck.kind == LORA_TYPE and ck.path == tmp_path / "c"
    assert ck.head == {"in_dim": D, "hidden_dim": H, "attn_layers": 2}
    torch.testing.assert_close(ck.state["head.fc.weight"], -head["fc.weight"][1:2])
    torch.testing.assert_close(ck.state["head.fc.bias"], torch.tensor([-1.0]))
    torch.testing.assert_close(ck.state["head.ffd.0.weight"], head["ffd.0.weight"])
    assert "head.attn.1.out_proj.bias" in ck.state
    assert "fc rows [0, 2, 3, 4] (the other SongEval dimensions)" in ck.dropped[0]


def test_lora_below_the_tap_is_kept_and_above_is_dropped_and_said(tmp_path):
    ck = read_legacy(ckpt(tmp_path / "c", lora=lora_sd(layers=(0, 5, 6, 9))))
    kept = sorted(k for k in ck.state if k.startswith("encoder."))
    assert len(kept) == 8 and all(".layers.0." in k or ".layers.5." in k for k in kept)
    name = "encoder.muq.model.conformer.layers.5.attn.linear_q"
    assert f"{name}.lora_A.default.weight" in ck.state
    assert f"{name}.lora_B.default.weight" in ck.state
    assert ck.dropped[-1].startswith(
        "LoRA of 4 modules in conformer layers 7-10 (above the layer-6"
    )
    assert ck.lora == {
        "r": 2,
        "alpha": 8,
        "dropout": 0.0,
        "target_modules": ["linear_q", "linear_v"],
    }
    assert isinstance(ck.lora["alpha"], int)


def test_lora_only_below_the_tap_drops_nothing_more(tmp_path):
    ck = read_legacy(ckpt(tmp_path / "c", lora=lora_sd(layers=(0, 1))))
    assert len(ck.dropped) == 1


def test_lora_alpha_keeps_a_fraction(tmp_path):
    ck = read_legacy(ckpt(tmp_path / "c", lora=lora_sd(r=2, scaling=0.75)))
    assert ck.lora is not None and ck.lora["alpha"] == 1.5 and ck.lora["r"] == 2


def test_frozen_type_has_no_lora_and_says_a_stray_lora_file_is_unused(tmp_path):
    ck = read_legacy(ckpt(tmp_path / "c", kind=FROZEN_TYPE))
    assert ck.lora is None and not any(k.startswith("encoder.") for k in ck.state)
    assert ck.dropped[-1] == "muq_lora.pt: type SongEvalGenerator scores with a frozen MuQ"
    bare = read_legacy(ckpt(tmp_path / "d", kind=FROZEN_TYPE, lora=False))
    assert len(bare.dropped) == 1


def test_grl_discriminator_is_dropped_and_named(tmp_path):
    head = {**head_sd(), "speaker_discriminator.0.weight": torch.zeros(2, 2)}
    ck = read_legacy(ckpt(tmp_path / "c", head=head))
    assert ck.dropped[0] == (
        "1 GRL speaker-discriminator tensors (speaker_discriminator.0.weight): "
        "training-only, not part of the score"
    )
    assert not any("speaker" in k for k in ck.state)


def test_net_config_is_the_original_architecture(tmp_path):
    ck = read_legacy(ckpt(tmp_path / "c", head=head_sd(attn=2)))
    cfg = ck.net_config(pretrained=None, muq_config={"x": 1})
    enc, head = cfg["encoder"], cfg["head"]
    assert cfg["_target_"].endswith(".VocalScorer") and enc["_target_"].endswith(".MuQEncoder")
    assert (enc["layer"], enc["truncate"], enc["train_backbone"]) == (6, True, False)
    assert enc["pretrained"] is None and enc["muq_config"] == {"x": 1}
    assert enc["lora"] == ck.lora and enc["lora"] is not ck.lora and enc["cache_dir"] is None
    assert (head["hidden_dim"], head["attn_layers"], head["heads"]) == (H, 2, 8)
    assert (
        head["_target_"].endswith(".SongEvalHead")
        and head["_partial_"] is True
        and head["dropout"] == 0.2
    )
    frozen = read_legacy(ckpt(tmp_path / "d", kind=FROZEN_TYPE)).net_config()
    assert frozen["encoder"]["lora"] is None


def test_legacy_contract_is_the_whole_file_at_24k_and_the_printed_scale():
    assert LEGACY_PREPROCESS.to_dict() == {
        "sr": 24000,
        "max_dur": None,
        "crop": "start",
        "target_lufs": None,
        "min_samples": 1025,
    }
    assert LEGACY_CALIBRATION.to_dict() == {"kind": "tanh", "scale": 2.0, "offset": 2.0}


def test_is_legacy_checkpoint_needs_type_txt_and_no_export_config(tmp_path):
    root = ckpt(tmp_path / "c")
    assert is_legacy_checkpoint(root)
    (root / "config.yaml").write_text("{}")
    assert not is_legacy_checkpoint(root) and not is_legacy_checkpoint(tmp_path / "none")


def refused(root: Path, match: str) -> None:
    with pytest.raises(LegacyFormatError, match=match):
        read_legacy(root)


def test_refuses_what_is_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    refused(tmp_path / "f", r"f: not a directory")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", r"empty: no type.txt, not an original-format checkpoint")
    refused(
        ckpt(tmp_path / "t", type_text="Other\n"),
        r"type.txt: type 'Other' is not supported "
        r"\(supported: SongEvalGenerator_audio_lora, SongEvalGenerator\)",
    )
    root = ckpt(tmp_path / "h")
    (root / "weights.pt").unlink()
    refused(root, r"h: missing weights.pt")
    refused(
        ckpt(tmp_path / "l", lora=False), r"l: type SongEvalGenerator_audio_lora but no muq_lora"
    )


def test_refuses_files_that_are_not_tensor_dicts(tmp_path):
    root = ckpt(tmp_path / "c")
    (root / "weights.pt").write_bytes(b"not a pickle")
    refused(root, r"weights.pt: cannot be read as a tensor dict")
    torch.save({"a": 1}, root / "weights.pt")
    refused(root, r"weights.pt: expected a dict of tensors, got dict")
    torch.save([torch.zeros(1)], root / "weights.pt")
    refused(root, r"weights.pt: expected a dict of tensors, got list")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"drop": "fc.bias"}, r"not a SongEval head state dict \(missing \['fc.bias'\]\)"),
        ({"drop": "ffd.2.weight"}, r"missing \['ffd.2.weight'\]"),
        ({"add": "attn.0.extra"}, r"unexpected keys for a SongEval head: \['attn.0.extra'\]"),
        ({"add": "norm.weight"}, r"unexpected keys .*\['norm.weight'\]"),
    ],
)
def test_refuses_heads_with_other_keys(tmp_path, change, match):
    head = head_sd()
    head.pop(change.get("drop", ""), None)
    if "add" in change:
        head[change["add"]] = torch.zeros(1)
    refused(ckpt(tmp_path / "c", head=head), match)


def test_refuses_an_fc_without_the_musicality_row_or_of_another_width(tmp_path):
    refused(
        ckpt(tmp_path / "a", head=head_sd(rows=1)), r"fc.weight \(1, 8\) has no musicality row 1"
    )
    head = head_sd()
    head["fc.weight"] = torch.zeros(5)
    refused(ckpt(tmp_path / "b", head=head), r"fc.weight \(5,\) has no musicality row")
    refused(
        ckpt(tmp_path / "c", head=head_sd(fc_in=D)),
        r"fc.weight \(5, 4\) does not take mean\+max of 4-d frames",
    )
    ok = read_legacy(ckpt(tmp_path / "d", head=head_sd(rows=2)))
    assert "fc rows [0]" in ok.dropped[0]


def test_refuses_lora_files_of_another_shape(tmp_path):
    name = "model.conformer.layers.0.attn.linear_q"
    good = lora_sd(layers=(0,))
    cases = [
        ({"weird": torch.zeros(1)}, r"unexpected key 'weird' \(want <module>"),
        ({}, r"muq_lora.pt: no LoRA tensors"),
        (
            {k: v for k, v in good.items() if not k.endswith("linear_q.default.scaling")},
            rf"{name} has \['lora_A', 'lora_B'\], needs lora_A, lora_B, scaling",
        ),
        (
            {**good, f"{name}.default.lora_B": torch.zeros(D, 3)},
            r"lora_A \(2, 4\) and lora_B \(4, 3\)",
        ),
        ({**good, f"{name}.default.lora_A": torch.zeros(2)}, r"disagree on r"),
        ({**good, f"{name}.default.lora_B": torch.zeros(2)}, r"disagree on r"),
        ({**good, **lora_sd(layers=(1,), r=3)}, r"mixed LoRA ranks \[2, 3\] / scalings \[4.0\]"),
        ({**good, **lora_sd(layers=(1,), scaling=2.0)}, r"ranks \[2\] / scalings \[2.0, 4.0\]"),
    ]
    for i, (lora, match) in enumerate(cases):
        refused(ckpt(tmp_path / str(i), lora=lora), match)


def test_a_pickle_of_other_objects_is_refused_unread(tmp_path):
    """weights_only loading: a global outside torch's allowlist is never unpickled."""
    root = ckpt(tmp_path / "c")
    torch.save({"w": torch.zeros(1), "when": datetime.date(2020, 1, 1)}, root / "weights.pt")
    refused(root, r"weights.pt: cannot be read as a tensor dict")


def test_lora_tensors_keep_their_values_whatever_the_module_order(tmp_path):
    lora = lora_sd(layers=(7, 0))
    ck = read_legacy(ckpt(tmp_path / "c", lora=lora))
    name = "model.conformer.layers.0.attn.linear_v"
    for part in ("lora_A", "lora_B"):
        got = ck.state[f"encoder.muq.{name}.{part}.default.weight"]
        torch.testing.assert_close(got, lora[f"{name}.default.{part}"])


def test_every_grl_tensor_is_named_comma_separated(tmp_path):
    head = {**head_sd(), **{f"speaker_discriminator.{i}.weight": torch.zeros(1) for i in (0, 1)}}
    ck = read_legacy(ckpt(tmp_path / "c", head=head))
    assert "(speaker_discriminator.0.weight, speaker_discriminator.1.weight)" in ck.dropped[0]
