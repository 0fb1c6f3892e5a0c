"""CAM++ timbre encoder: parity with 3D-Speaker's recipe, loading paths, freezing, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as Kaldi
import torchaudio.functional as taf

from audiobase.weights import MissingWeightsError
from audioscore.models.components.campp import (
    CamppEncoder,
    CamppLoadError,
    build_tiny_campp_encoder,
    randomise_bn_stats,
    save_random_campp,
)

TINY = {"embedding_size": 16, "growth_rate": 4, "bn_size": 2, "init_channels": 16}


# --- 3D-Speaker's recipe, written out (speakerlab/process/processor.py::FBank and
# speakerlab/bin/infer_sv_batch.py::chunk_wav), fed to the official class directly. ---
def ref_fbank(wav: torch.Tensor) -> torch.Tensor:
    feat = Kaldi.fbank(wav.unsqueeze(0), num_mel_bins=80, sample_frequency=16000, dither=0)
    return feat - feat.mean(0, keepdim=True)


def ref_chunk_wav(wav: torch.Tensor, chunk_sample_size: int) -> list[torch.Tensor]:
    n = int(np.ceil(wav.shape[0] / chunk_sample_size))
    reps = int(np.ceil(n * chunk_sample_size / wav.shape[0]))
    wav = torch.cat([wav] * reps)[: n * chunk_sample_size]
    return [wav[i * chunk_sample_size : (i + 1) * chunk_sample_size] for i in range(n)]


def ref_embedding(model, wav16: torch.Tensor, chunk_s: float = 10.0) -> torch.Tensor:
    if wav16.shape[0] <= chunk_s * 16000:  # infer_sv.py: a short clip is embedded whole
        chunks = [wav16]
    else:
        chunks = ref_chunk_wav(wav16, int(chunk_s * 16000))
    with torch.no_grad():
        embs = model(torch.stack([ref_fbank(c) for c in chunks]))
    return embs.mean(0)


def official_campp(**arch):
    from modelscope.models.audio.sv.DTDNN import CAMPPlus

    return CAMPPlus(feat_dim=80, **arch)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return save_random_campp(tmp_path_factory.mktemp("campp") / "tiny.bin", seed=1, **TINY)


def voice(seconds: float, sr: int, f0: float = 180.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    x = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in range(1, 6))
    return (
        0.3 * x * (1 + 0.3 * torch.sin(2 * torch.pi * 3 * t))
        + 0.01 * torch.randn(len(t), generator=g)
    ).float()


def test_parity_with_official_recipe_full_size(tmp_path):
    """Full-size zh-cn architecture (192-d), random weights saved as the hub's .bin would be."""
    torch.manual_seed(0)
    official = official_campp(embedding_size=192).eval()
    randomise_bn_stats(official)  # so that loading the statistics matters
    path = tmp_path / "campplus_cn_common.bin"
    torch.save(official.state_dict(), path)
    enc = CamppEncoder(str(path), in_sr=16000, normalize=False)
    assert enc.out_dim == 192
    short, long = voice(3.2, 16000, seed=1), voice(21.3, 16000, f0=220.0, seed=2)
    for wav in (short, long):
        ref = ref_embedding(official, wav)
        ours = enc(wav[None], torch.tensor([len(wav)]))[0]
        assert (ours - ref).abs().max().item() < 1e-4
    # normalised output is the reference direction
    enc.normalize = True
    out = enc(long[None], torch.tensor([len(long)]))[0]
    ref = ref_embedding(official, long)
    torch.testing.assert_close(out, ref / ref.norm(), atol=1e-5, rtol=0)


def test_24k_input_resampled_then_same_recipe(tiny_file):
    official = official_campp(**TINY)
    official.load_state_dict(torch.load(tiny_file, weights_only=True))
    official.eval()
    enc = CamppEncoder(str(tiny_file), in_sr=24000, normalize=False, chunk_s=4.0)
    wav24 = voice(9.0, 24000, seed=3)
    ref = ref_embedding(official, taf.resample(wav24, 24000, 16000), chunk_s=4.0)
    ours = enc(wav24[None], torch.tensor([len(wav24)]))[0]
    assert (ours - ref).abs().max().item() < 1e-4


def test_batch_items_embedded_at_true_length(tiny_file):
    enc = CamppEncoder(str(tiny_file), chunk_s=2.0)
    a, b = voice(1.5, 24000, seed=4), voice(4.3, 24000, f0=300.0, seed=5)
    wav = torch.zeros(2, len(b))
    wav[0, : len(a)], wav[1] = a, b
    both = enc(wav, torch.tensor([len(a), len(b)]))
    alone_a = enc(a[None], torch.tensor([len(a)]))[0]
    alone_b = enc(b[None], torch.tensor([len(b)]))[0]
    torch.testing.assert_close(both[0], alone_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1], alone_b, atol=1e-5, rtol=0)
    torch.testing.assert_close(both.norm(dim=-1), torch.ones(2))
    # zero-padding would have changed it: the padded tail must really be ignored
    padded = enc(wav[:1], torch.tensor([len(b)]))[0]
    assert (padded - alone_a).abs().max() > 1e-3


def test_frozen_and_stays_in_eval(tiny_file):
    enc = CamppEncoder(str(tiny_file))
    parent = torch.nn.Sequential(enc, torch.nn.Linear(16, 1))
    parent.train()
    assert not enc.model.training
    assert not any(p.requires_grad for p in enc.parameters())
    wav = voice(1.0, 24000)[None].requires_grad_(True)
    out = enc(wav, torch.tensor([wav.shape[1]]))
    assert not out.requires_grad
    bn = enc.model.head.bn1
    before = bn.running_mean.clone()
    enc(voice(2.0, 24000)[None], torch.tensor([48000]))
    torch.testing.assert_close(bn.running_mean, before)


def test_local_dir_and_modelscope_cache_paths(tiny_file, tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "campplus_cn_common.bin").write_bytes(tiny_file.read_bytes())
    (d / "configuration.json").write_text("{}")
    from_dir = CamppEncoder(str(d))
    # the hub path: snapshot_download(model_id, revision, cache_dir) finds a cached snapshot
    snap = tmp_path / "ms" / "models" / "iic--speech_campplus_sv_zh-cn_16k-common" / "snapshots"
    (snap / "v1.0.0").mkdir(parents=True)
    (snap / "v1.0.0" / "campplus_cn_common.bin").write_bytes(tiny_file.read_bytes())
    from_hub = CamppEncoder(
        "iic/speech_campplus_sv_zh-cn_16k-common",
        hub_cache_dir=str(tmp_path / "ms"),
        local_files_only=True,
    )
    assert from_dir.weights_sha1 == from_hub.weights_sha1
    wav = voice(1.2, 24000)[None]
    lengths = torch.tensor([wav.shape[1]])
    torch.testing.assert_close(from_dir(wav, lengths), from_hub(wav, lengths))
    # offline and not cached: one line naming the id, the download command and the key
    with pytest.raises(MissingWeightsError) as e:
        CamppEncoder(
            "iic/speech_campplus_sv_en_voxceleb_16k",
            hub_cache_dir=str(tmp_path / "ms"),
            local_files_only=True,
        )
    message = str(e.value)
    assert "\n" not in message and "iic/speech_campplus_sv_en_voxceleb_16k" in message
    assert "modelscope download --model iic/speech_campplus_sv_en_voxceleb_16k" in message
    assert "model.net.timbre.source=" in message


def test_bad_weights_raise_named_errors(tmp_path):
    missing = tmp_path / "nope.bin"
    with pytest.raises(CamppLoadError, match="nope.bin"):
        CamppEncoder(str(missing))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CamppLoadError, match="junk.bin.*cannot read"):
        CamppEncoder(str(junk))
    partial = tmp_path / "partial.bin"
    state = official_campp(**TINY).state_dict()
    state.pop("xvector.dense.linear.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, partial)
    with pytest.raises(CamppLoadError, match="partial.bin"):
        CamppEncoder(str(partial))
    trimmed = tmp_path / "trimmed.bin"
    state = official_campp(**TINY).state_dict()
    state.pop("xvector.block1.tdnnd1.linear1.weight")
    torch.save(state, trimmed)
    with pytest.raises(CamppLoadError, match="missing"):
        CamppEncoder(str(trimmed))


def test_cache_hits_return_same_embedding(tiny_file, tmp_path):
    enc = CamppEncoder(str(tiny_file), cache_dir=str(tmp_path / "cache"))
    wav = torch.stack([voice(1.0, 24000, seed=s) for s in range(3)])
    lengths = torch.tensor([24000, 20000, 24000])
    keys = ["h0:0", "h1:0", "h2:0"]
    first = enc(wav, lengths, keys)
    assert (enc.cache.hits, enc.cache.misses) == (0, 3)
    second = enc(wav, lengths, keys)
    assert enc.cache.hits == 3
    torch.testing.assert_close(first, second)
    # a different crop length is a different entry
    enc(wav[:1], torch.tensor([12000]), keys[:1])
    assert enc.cache.misses == 4
    # another encoder config -> another namespace
    other = CamppEncoder(str(tiny_file), cache_dir=str(tmp_path / "cache"), chunk_s=5.0)
    assert other.cache.namespace != enc.cache.namespace


def test_tiny_builder_is_seeded_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = build_tiny_campp_encoder(seed=3, embedding_size=8)
    b = build_tiny_campp_encoder(seed=3, embedding_size=8)
    c = build_tiny_campp_encoder(seed=4, embedding_size=8)
    assert a.out_dim == 8 and a.weights_sha1 == b.weights_sha1 != c.weights_sha1
    wav = 0.1 * torch.randn(1, 24_000)
    lengths = torch.tensor([24_000])
    torch.testing.assert_close(a(wav, lengths), b(wav, lengths))
    assert not torch.allclose(a(wav, lengths), c(wav, lengths))
    assert list(tmp_path.iterdir()) == []
