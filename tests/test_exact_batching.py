"""Exact batching of unequal lengths: clips of different lengths share one MuQ encoder pass and
each scores as it would alone (within 1e-4), for an exported audioscore scorer, the tiny CMI-RM
and the tiny SongEval; and MuQ's hidden states of a padded clip equal its hidden states alone.

An encoder pass is one forward of MuQ's conformer (`muq.model.conformer`): the padded path runs
MuQ's front end per clip and its stem and conformer once per batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.routes import make_tiny_export

from audiobase.muq import load_muq
from audiobase.muq_padded import (
    MEL_GROUP,
    MEL_KEY,
    mel_bands,
    muq_mel,
    muq_mels,
    muq_num_frames,
    muq_padded_forward,
    muq_padded_hidden,
    prepare_stem_for_scoring,
    zero_after,
)
from audiobase.plan import pad_waves
from rewards.audioscore_rm import AudioscoreRewardModel
from rewards.base import BatchInput
from rewards.cmi_rm import CMIRewardModel
from rewards.cmi_rm.tiny import build_tiny_cmi_rm
from rewards.songeval import SongEvalRewardModel

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 24_000
BATCH = 8
# 16 distinct lengths from 1.1 s to 4.8 s (different frame counts and sub-frame remainders)
LENGTHS = [26_411 + 5_927 * k for k in range(16)]


def waves(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in lengths]


class CountPasses:
    """Counts forwards of a MuQ's conformer: one per encoder pass."""

    def __init__(self, muq: torch.nn.Module) -> None:
        self.n = 0
        muq.model.conformer.register_forward_hook(self)

    def __call__(self, *_: object) -> None:
        self.n += 1


def assert_exact_and_batched(model, muq, inputs, batch_size=BATCH, passes=2, chunks=1, **kw):
    """`passes` encoder passes for `inputs` at `batch_size`, each score within 1e-4 of the
    clip scored alone (`chunks` passes per clip alone)."""
    counter = CountPasses(muq)
    batched = model.score_batch(inputs, batch_size, **kw)
    assert counter.n == passes
    alone = np.concatenate([model.score_batch([x], 1, **kw) for x in inputs])
    assert counter.n == passes + chunks * len(inputs)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-4)
    assert np.ptp(batched[:, 1]) > 0  # different clips, different scores
    return batched


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("exact_export"))


def test_audioscore_export_batches_unequal_lengths_exactly(export_dir):
    model = AudioscoreRewardModel(export_dir)
    assert_exact_and_batched(model, model.net.encoder.muq, waves(LENGTHS), max_dur=30.0)


def test_cmi_rm_batches_unequal_lengths_exactly(tmp_path_factory):
    model = CMIRewardModel(build_tiny_cmi_rm(tmp_path_factory.mktemp("exact") / "cmi"))
    # every clip is shorter than 30 s: its only chunk is a partial one
    xs = [BatchInput(w, f"song {i}", "la la") for i, w in enumerate(waves(LENGTHS))]
    muq = model.net.audio_module.model
    assert_exact_and_batched(model, muq, xs, max_dur=30.0)
    # clips over 30 s: full 30 s chunks plus a partial last chunk of a different length each;
    # 4 clips = 8 chunks, 2 passes of 4
    long = waves([30 * SR + 1_234, 30 * SR + 20_000, 31 * SR + 777, 30 * SR + 9_999], seed=1)
    xs = [BatchInput(w, "long", "") for w in long]
    assert_exact_and_batched(model, muq, xs, batch_size=4, chunks=2, max_dur=60.0)


def test_songeval_batches_unequal_lengths_exactly(tmp_path_factory):
    model = SongEvalRewardModel(tmp_path_factory.mktemp("exact") / "songeval", tiny=True)
    assert_exact_and_batched(model, model.encoder.muq, waves(LENGTHS))


def alone_and_padded(muq, lengths: list[int], seed: int = 0):
    """Each clip's hidden states run alone, and the padded batch's (hidden states, mask)."""
    clips = waves(lengths, seed)
    x = torch.zeros(len(clips), max(lengths))
    for i, w in enumerate(clips):
        x[i, : w.shape[0]] = w
    with torch.no_grad():
        alone = [muq(w[None], output_hidden_states=True).hidden_states for w in clips]
        padded = muq_padded_forward(muq, x, torch.tensor(lengths))
        last = muq_padded_hidden(muq, x, torch.tensor(lengths), -1)
    for i, hs in enumerate(alone):  # the one-layer form zeroes padded frames
        n = hs[-1].shape[1]
        assert int(last[1][i].sum()) == n and not last[0][i, n:].any()
        torch.testing.assert_close(last[0][i, :n], padded[0][-1][i, :n], rtol=0, atol=0)
    return alone, padded


def max_gap(alone, padded) -> float:
    """Largest difference between a clip's valid frames in the batch and alone, any layer."""
    hidden, mask = padded
    assert len(hidden) == len(alone[0])
    gap = 0.0
    for i, hs in enumerate(alone):
        n = int(mask[i].sum())
        for k, h in enumerate(hs):
            assert h.shape[1] == n
            gap = max(gap, float((hidden[k][i, :n] - h[0]).abs().max()))
    return gap


def test_padded_hidden_states_equal_alone_at_every_layer():
    muq = load_muq(None, "tiny").eval()
    alone, padded = alone_and_padded(muq, [30_001, 9_999, 17_777, 4_321])
    assert max_gap(alone, padded) < 1e-5
    # the leak this removes: MuQ's own masked forward of the padded batch is far off
    x = torch.zeros(2, 30_001)
    clips = waves([30_001, 9_999])
    x[0], x[1, :9_999] = clips[0], clips[1]
    n_frames = [int(muq_num_frames(n)) for n in (30_001, 9_999)]
    frames = torch.arange(n_frames[0])[None] < torch.tensor(n_frames)[:, None]
    with torch.no_grad():
        naive = muq(x, attention_mask=frames, output_hidden_states=True).hidden_states[-1]
    assert float((naive[1, : n_frames[1]] - alone[1][-1][0]).abs().max()) > 1e-3


def test_mel_equals_muqs_own_front_end():
    """muq_mel against MuQ's preprocessing + normalize (to float rounding: the same products
    summed in another order), and an equal-length batch against `muq(...)` itself at every
    layer."""
    muq = load_muq(None, "tiny").eval()
    core = muq.model
    x = torch.stack(waves([3 * SR + 77] * 3, seed=5)) * torch.tensor([[1.0], [1e-3], [3.0]])
    with torch.no_grad():
        ours = muq_mel(core, x)
        theirs = core.normalize(core.preprocessing(x, features=[MEL_KEY]))[MEL_KEY]
        assert ours.shape == theirs.shape
        # the normalised log-mel is O(1): 1e-6 is a few float32 ulps
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        hidden, mask = muq_padded_forward(muq, x, torch.full((3,), x.shape[1]))
        own = muq(x, output_hidden_states=True).hidden_states
    assert bool(mask.all()) and len(hidden) == len(own)
    for h, o in zip(hidden, own, strict=True):
        torch.testing.assert_close(h, o, rtol=1e-5, atol=1e-5)


def test_a_clips_mel_is_the_same_alone_and_in_a_batch():
    """The banded mel product is per clip: batch-mates change no bit of a clip's mel."""
    core = load_muq(None, "tiny").eval().model
    x = torch.stack(waves([2 * SR + 5] * 4, seed=9))
    with torch.no_grad():
        batch = muq_mel(core, x)
        for i in range(4):
            assert torch.equal(muq_mel(core, x[i : i + 1])[0], batch[i])


def test_padded_mels_equal_each_clips_mel_alone():
    """muq_mels stacks the clips' frames for the filterbank and the log: no bit changes."""
    core = load_muq(None, "tiny").eval().model
    lengths = [SR + 1, 3 * SR + 250, 2 * SR - 7, 4_000]
    clips = waves(lengths, seed=11)
    x, _ = pad_waves(clips)  # [B, max length], zeros after each clip
    with torch.no_grad():
        mel = muq_mels(core, x, lengths)
        for i, w in enumerate(clips):
            alone = muq_mel(core, w[None])[0]  # [n_mels, M_i]
            assert torch.equal(mel[i, :, : alone.shape[-1]], alone)
            assert not mel[i, :, alone.shape[-1] :].any()


def test_mel_bands_cover_every_filter_weight():
    """Outside the bins `mel_bands` gives each run of filters, MuQ's filterbank is all zeros,
    and inside them the banded product equals the dense one."""
    core = load_muq(None, "tiny").eval().model
    fb = getattr(core, f"preprocessor_{MEL_KEY}").mel_stft.mel_scale.fb  # [n_freqs, n_mels]
    bands = mel_bands(fb)
    covered = torch.zeros_like(fb, dtype=torch.bool)
    for j0, j1, f0, f1 in bands:
        covered[f0:f1, j0:j1] = True
    assert bool((fb[~covered] == 0).all())
    assert [b[0] for b in bands] == list(range(0, fb.shape[1], MEL_GROUP))
    assert bands[-1][1] == fb.shape[1]
    products = sum((j1 - j0) * (f1 - f0) for j0, j1, f0, f1 in bands)
    assert products < fb.numel() / 4  # bands, not the whole spectrum for every filter
    assert mel_bands(fb) is bands  # computed once per filterbank
    power = torch.rand(50, fb.shape[0]) ** 4  # [T, n_freqs]
    banded = torch.cat([power[:, f0:f1] @ fb[f0:f1, j0:j1] for j0, j1, f0, f1 in bands], -1)
    torch.testing.assert_close(banded, power @ fb, rtol=1e-5, atol=1e-7)
    # a filterbank with a filter of zeros and a filter on the last bin only
    odd = torch.zeros(20, 3)
    odd[2:5, 0], odd[19, 2] = 1.0, 2.0
    assert mel_bands(odd, group=1) == [(0, 1, 2, 5), (1, 2, 0, 0), (2, 3, 19, 20)]


@pytest.mark.slow
def test_padded_equals_alone_for_muq_large_architecture():
    """MuQ-large's published architecture (random weights): kernel-31 depthwise convs."""
    muq = load_muq(None, "large").eval()
    alone, padded = alone_and_padded(muq, [3 * SR - 123, 2 * SR + 555], seed=3)
    assert max_gap(alone, padded) < 1e-4


def test_zero_after_in_place_and_with_autograd_agree():
    """The CPU fast path (in place, padded steps only) and the masked path zero the same steps,
    and gradients do not flow into zeroed steps."""
    x = torch.randn(3, 2, 5, 10)
    n_valid = torch.tensor([10, 4, 0])
    expected = x.clone()
    expected[1, ..., 4:] = 0
    expected[2] = 0
    in_place = x.clone()
    assert zero_after(in_place, n_valid) is in_place
    assert torch.equal(in_place, expected)
    leaf = x.clone().requires_grad_()
    masked = zero_after(leaf, n_valid)
    assert torch.equal(masked.detach(), expected) and torch.equal(leaf.detach(), x)
    masked.sum().backward()
    assert torch.equal(leaf.grad, (expected != 0).float())


def test_stem_prepared_for_scoring_gives_the_same_hidden_states():
    """A stem with its batch norms folded into its convolutions and channels-last weights (what
    CPU reward models score with) changes MuQ's hidden states by float rounding only, padded
    batches included."""
    muq = load_muq(None, "tiny").eval()
    lengths = [2 * SR + 311, SR + 17]
    alone, _ = alone_and_padded(muq, lengths, seed=4)
    prepare_stem_for_scoring(muq)
    block = muq.model.conv.conv[0]
    assert block.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in muq.model.conv.modules())
    fast, fast_padded = alone_and_padded(muq, lengths, seed=4)
    for hs, fs in zip(alone, fast, strict=True):
        for h, f in zip(hs, fs, strict=True):
            torch.testing.assert_close(f, h, rtol=1e-5, atol=1e-5)
    assert max_gap(alone, fast_padded) < 1e-4
