"""MuQEncoder frame counts (exact, padded == alone) and the frozen-MuQ feature cache."""

from __future__ import annotations

import functools

import pytest
import torch

from audiobase.muq_padded import muq_num_frames
from audiobase.songeval_head import SongEvalHead
from audioscore.models.components.muq_encoder import MuQEncoder
from audioscore.models.components.scorer import VocalScorer

pytestmark = pytest.mark.usefixtures("one_thread")

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
SR = 24_000


def tiny(**kw) -> MuQEncoder:
    kw.setdefault("layer", 1)
    return MuQEncoder(None, muq_config="tiny", seed=0, **kw).eval()


def padded(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))  # [B, T]
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wav, torch.tensor(lengths)


@pytest.fixture(scope="module")
def frozen() -> MuQEncoder:
    return tiny()


def test_frame_count_formula_matches_muq(frozen):
    """24 kHz, hop 240, two stride-2 convs: the formula equals MuQ's own output length."""
    assert frozen.hop_length == 240 and frozen.conv_strides == (2, 2)
    lengths = [1025, 1199, 1200, 1439, 1440, 1441, 1919, 1920, 1921, 2159, 2160, 2161, 3000]
    lengths += [960 * k + d for k in (3, 7, 25) for d in (-241, -240, -1, 0, 1, 239, 240)]
    with torch.no_grad():
        for n in lengths:
            got = frozen.muq(torch.zeros(1, n), output_hidden_states=True).hidden_states[1]
            assert got.shape[1] == muq_num_frames(n) == frozen.num_frames(n), n
    t = torch.tensor(lengths)
    assert muq_num_frames(t).tolist() == [muq_num_frames(n) for n in lengths]


# T = 95999 samples: MuQ's int(T / F) stride estimate is 959, not 960, and for these clip
# lengths counted one frame too many (e.g. 95040 -> 100 frames instead of 99)
BATCH_T = 95_999
SHORT = [95_040, 94_080, 48_000, 30_000, 24_001, 2_161]


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "frozen"])
def test_padded_clip_has_as_many_valid_frames_as_alone(lora):
    enc = tiny(lora=lora)
    wav, lengths = padded([BATCH_T, *SHORT])
    with torch.no_grad():
        feats, mask = enc(wav, lengths)
        assert feats.shape[1] == mask.shape[1] == muq_num_frames(BATCH_T)
        for i, n in enumerate(SHORT, start=1):
            alone, alone_mask = enc(wav[i : i + 1, :n])
            assert alone_mask.all()
            assert int(mask[i].sum()) == alone.shape[1], n
            assert mask[i, : alone.shape[1]].all()  # valid frames come first
    assert mask[0].all()


def test_frozen_features_equal_alone_and_padding_is_zero(frozen):
    wav, lengths = padded([40_000, 30_000, 40_000, 12_345])
    with torch.no_grad():
        feats, mask = frozen(wav, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone, _ = frozen(wav[i : i + 1, :n])
            k = alone.shape[1]
            torch.testing.assert_close(feats[i, :k], alone[0], rtol=1e-5, atol=1e-5)
            assert not feats[i, k:].any()
    assert feats.shape[:2] == mask.shape


def test_frozen_detection_and_uses_keys(tmp_path):
    assert tiny().frozen and not tiny().uses_keys  # no cache_dir
    assert tiny(cache_dir=str(tmp_path)).uses_keys
    assert not tiny(lora=LORA, cache_dir=str(tmp_path)).uses_keys
    enc = tiny(cache_dir=str(tmp_path))
    next(enc.parameters()).requires_grad_(True)  # anything trainable -> no cache
    assert not enc.uses_keys


class CountCalls:
    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, *_):
        self.n += 1


def test_cache_hits_give_identical_features(tmp_path):
    enc = tiny(cache_dir=str(tmp_path))
    calls = CountCalls(enc.muq.model.conformer)  # one backbone pass per call
    wav, lengths = padded([36_000, 20_000, 36_000, 9_999])
    keys = [f"clip{i}:0:{n}:-12.0" for i, n in enumerate(lengths.tolist())]
    with torch.no_grad():
        ref_feats, ref_mask = enc(wav, lengths)  # no keys: computed, not stored
        assert calls.n == 1  # three lengths, one padded pass
        assert not list(tmp_path.rglob("*.safetensors"))
        first = enc(wav, lengths, keys=keys)
        assert calls.n == 2 and enc.cache.misses == 4 and enc.cache.hits == 0
        files = list((tmp_path / enc.cache.namespace).rglob("*.safetensors"))
        assert len(files) == 4
        second = enc(wav, lengths, keys=keys)
        assert calls.n == 2 and enc.cache.hits == 4  # served from disk, backbone not run
        # a fresh encoder (another run / DDP rank) with the same weights shares the entries
        other = tiny(cache_dir=str(tmp_path))
        other_calls = CountCalls(other.muq.model.conformer)
        third = other(wav, lengths, keys=keys)
        assert other_calls.n == 0 and other.cache.namespace == enc.cache.namespace
        # one clip of a new batch hits, the other is computed
        mixed = enc(wav[[1, 0]][:, :36_000], lengths[[1, 0]], keys=[keys[1], "new:0"])
    for feats, mask in (first, second, third):
        assert torch.equal(mask, ref_mask)
        torch.testing.assert_close(feats, ref_feats, rtol=0, atol=0)
    # same batch composition: bit-identical; clip 0 computed in a batch of 1 instead of 2 this
    # time, which changes the float summation order only
    torch.testing.assert_close(mixed[0][0], ref_feats[1, : mixed[0].shape[1]], rtol=0, atol=0)
    torch.testing.assert_close(mixed[0][1], ref_feats[0], rtol=1e-5, atol=1e-5)


def test_cache_namespace_follows_weights_and_tap(tmp_path):
    a = tiny(cache_dir=str(tmp_path))
    ns = a.cache.namespace
    assert ns.startswith("muq-") and tiny(cache_dir=str(tmp_path)).cache.namespace == ns
    assert tiny(cache_dir=str(tmp_path), layer=2).cache.namespace != ns
    assert tiny(cache_dir=str(tmp_path), truncate=False).cache.namespace != ns
    # loading other weights (an export, init_from) switches the namespace
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in a.state_dict().items()}
    a.load_state_dict(state)
    assert a.cache.namespace != ns


def test_scorer_passes_keys_only_to_encoders_that_use_them(tmp_path):
    head = functools.partial(SongEvalHead, hidden_dim=16, attn_layers=1, heads=2, dropout=0.0)
    wav, lengths = padded([30_000, 21_000])
    keys = ["a:0", "b:0"]

    class NoKeys(torch.nn.Module):  # a custom encoder that takes no keys (uses_keys false)
        uses_keys = False

        def __init__(self, inner: MuQEncoder) -> None:
            super().__init__()
            self.inner, self.out_dim = inner, inner.out_dim

        def forward(self, wav, lengths):
            return self.inner(wav, lengths)

    class Undeclared(torch.nn.Module):  # no `uses_keys`: not an Encoder
        out_dim = 32

    with pytest.raises(TypeError, match="Encoder protocol"):
        VocalScorer(Undeclared(), head)
    torch.manual_seed(0)
    plain = VocalScorer(NoKeys(tiny()), head).eval()
    lora = VocalScorer(tiny(lora=LORA, cache_dir=str(tmp_path / "lora")), head).eval()
    torch.manual_seed(0)
    cached = VocalScorer(tiny(cache_dir=str(tmp_path / "frozen")), head).eval()
    with torch.no_grad():
        want = plain(wav, lengths, keys=keys)["score"]  # NoKeys would raise if given keys
        lora(wav, lengths, keys=keys)
        assert not (tmp_path / "lora").exists()  # trainable LoRA: nothing cached
        got = [cached(wav, lengths, keys=keys)["score"] for _ in range(2)]
        assert cached.encoder.cache.hits == 2
    torch.testing.assert_close(got[0], want)
    torch.testing.assert_close(got[1], want)
