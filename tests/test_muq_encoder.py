"""MuQEncoder: the user's loading path on a tiny saved MuQ, exact layer taps, LoRA-only training."""

from __future__ import annotations

import pytest
import torch
from muq import MuQ

from audiobase.muq import build_tiny_muq_dir
from audioscore.models.components.muq_encoder import MuQEncoder

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(build_tiny_muq_dir(tmp_path_factory.mktemp("muq") / "tiny_muq"))


@pytest.fixture(scope="module")
def reference(tiny_dir):
    torch.manual_seed(0)
    wav = torch.randn(2, 24_000 * 2) * 0.1  # [B, T]
    with torch.no_grad():
        hidden = MuQ.from_pretrained(tiny_dir).eval()(wav).hidden_states
    return wav, hidden


@pytest.mark.parametrize("layer,truncate", [(1, True), (1, False), (2, True)])
def test_tap_reproduces_hidden_state(tiny_dir, reference, layer, truncate):
    wav, hidden = reference
    enc = MuQEncoder(tiny_dir, layer=layer, truncate=truncate, lora=LORA).eval()
    with torch.no_grad():
        feats, mask = enc(wav)
    # LoRA B starts at zero, so the adapted model equals the base model (to float rounding: the
    # tap's mel front end sums the filterbank products in another order than MuQ's own)
    torch.testing.assert_close(feats, hidden[layer], rtol=1e-5, atol=1e-5)
    assert mask.all() and mask.shape == feats.shape[:2]
    if truncate and layer < 2:
        assert len(enc.muq.model.conformer.layers) == layer


def test_only_lora_below_tap_trains(tiny_dir):
    enc = MuQEncoder(tiny_dir, layer=1, lora=LORA, truncate=False)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "layers.0." in n for n in trainable)
    with torch.no_grad():  # make LoRA non-trivial so lora_A also gets a gradient
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    enc.train()
    feats, _ = enc(torch.randn(1, 24_000) * 0.1)
    feats.pow(2).mean().backward()
    grads = {n: p.grad for n, p in enc.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in trainable)
    assert all(g is None for n, g in grads.items() if n not in trainable)


def test_backbone_stays_in_eval_mode(tiny_dir):
    enc = MuQEncoder(tiny_dir, layer=2, lora={**LORA, "dropout": 0.1})
    enc.train()
    assert enc.training and not enc.muq.training
    bn = [m for m in enc.muq.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [m.running_mean.clone() for m in bn]
    with torch.no_grad():
        enc(torch.randn(2, 24_000) * 0.1)
    assert bn and all(torch.equal(b, m.running_mean) for b, m in zip(before, bn, strict=True))
    lora_dropouts = [m for n, m in enc.muq.named_modules() if n.endswith("lora_dropout.default")]
    assert lora_dropouts and all(m.training for m in lora_dropouts)


def test_padding_mask_counts_frames_of_each_clip(tiny_dir):
    enc = MuQEncoder(tiny_dir, layer=1).eval()
    wav = torch.randn(2, 48_000) * 0.1
    with torch.no_grad():
        _, mask = enc(wav, torch.tensor([48_000, 30_000]))
        alone, _ = enc(wav[1:, :30_000])
    assert mask[0].all()
    assert int(mask[1].sum()) == alone.shape[1] < mask.shape[1]


def test_lora_targets_must_exist(tiny_dir):
    with pytest.raises(ValueError, match="match no module"):
        MuQEncoder(tiny_dir, layer=1, lora={**LORA, "target_modules": ["no_such_linear"]})


def test_random_tiny_encoder_is_seeded():
    a = MuQEncoder(None, layer=1, muq_config="tiny", seed=3)
    b = MuQEncoder(None, layer=1, muq_config="tiny", seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="pretrained"):
        MuQEncoder(None)
