"""Exact batching of unequal-length clips through a `muq` MuQ: padding is invisible.

Besides attention (which MuQ's conformer masks), MuQ sees padding in three places: the mel
front end (a centred STFT: a clip's last frames reflect its own end, not the zeros after it),
the conv stem (3x3 kernels read the next frames, between its convolutions too) and the
depthwise convolution of every conformer layer. `muq_padded_forward` runs the front end per
clip, pads the normalised mel with zeros (what the stem's own zero padding shows a clip alone),
zeroes each clip's padded frames before every time convolution of the stem and the conformer
(forward hooks, held for that call and by that thread only) and masks attention. A clip's
valid frames then equal what it gets alone, up to float summation order, while the whole batch
shares one pass of the stem and the conformer.

Everything else in MuQ is per frame (linear layers, layer norms, BatchNorm in eval mode) or
per position (rotary embeddings count from each clip's first frame either way).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

MEL_KEY = "melspec_2048"  # MuQ's one input feature
MEL_GROUP = 16  # mel filters per band matmul: fewer calls vs fewer zero bins multiplied
# id(filterbank) -> (a weak reference to it, its bands); the reference tells a reused id apart
_BANDS: dict[int, tuple[weakref.ref, list[tuple[int, int, int, int]]]] = {}


def muq_num_frames(
    n_samples: torch.Tensor | int, hop_length: int = 240, strides: Sequence[int] = (2, 2)
) -> torch.Tensor | int:
    """MuQ frames for `n_samples` samples: the centred STFT gives n // hop + 1 mel frames and MuQ
    drops the last one, then each conv of the stem (kernel 3, padding 1, time stride s) maps m
    frames to ceil(m / s). 24 kHz, hop 240, strides (2, 2) -> 25 Hz."""
    m = n_samples // hop_length
    for s in strides:
        m = -(-m // s)
    return m


def stem_strides(muq: Any) -> tuple[int, ...]:
    """Time strides of MuQ's conv stem (`muq.model.conv`), one per residual block."""
    return tuple(int(m.conv1.stride[1]) for m in muq.model.conv.conv)


def prepare_stem_for_scoring(muq: Any) -> Any:
    """`muq` (in eval mode) with a conv stem that scores faster on the CPU: each batch norm
    folded into the convolution before it (torch's `fuse_conv_bn_eval`; the norm becomes an
    identity, where the padding hooks still apply) and the convolutions' weights in
    channels-last layout, which oneDNN runs about a quarter faster over so few channels.
    Outputs differ from the stem's own by float rounding. For scoring only: the stem can no
    longer train, and its state dict has other keys and non-contiguous weights."""
    for block in muq.model.conv.conv:
        pairs = [("conv1", "bn1"), ("conv2", "bn2")] + ([("conv3", "bn3")] if block.diff else [])
        for conv, norm in pairs:
            bn = getattr(block, norm)
            if isinstance(bn, nn.BatchNorm2d) and not bn.training:
                setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), bn))
                setattr(block, norm, nn.Identity())
    muq.model.conv.to(memory_format=torch.channels_last)
    return muq


def zero_after(x: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """x [B, ..., T] with every time step t >= n_valid[b] set to zero."""
    if x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad):
        # in place and only the padded steps, which batching by duration keeps few: a masked
        # pass over all of x took 5 % of a CPU batch; on a GPU one masked kernel beats B slices
        for b, n in enumerate(n_valid.tolist()):
            if n < x.shape[-1]:
                x[b, ..., n:] = 0
        return x
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < n_valid[:, None]  # [B, T]
    keep = keep.view(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])
    return x.masked_fill(~keep, 0)


@contextlib.contextmanager
def _padding_hooks(
    muq: Any, stem_valid: Sequence[torch.Tensor], frame_valid: torch.Tensor
) -> Iterator[None]:
    """Zero padded time steps where MuQ's convolutions would read them, for this thread only.

    stem_valid[k]: valid time steps per clip at the input of stem block k (and, last, at its
    output); frame_valid: valid frames per clip in the conformer. What is zeroed (a batch
    norm's output, a block's output, a depthwise convolution's input) feeds only the next
    layer, so zeroing it in place changes nothing else.
    """
    owner = threading.get_ident()

    def zero_output(n_valid: torch.Tensor) -> Any:
        def hook(_module: Any, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
            return zero_after(output, n_valid) if threading.get_ident() == owner else None

        return hook

    def zero_input(_module: Any, args: tuple[torch.Tensor, ...]) -> tuple | None:
        if threading.get_ident() != owner:
            return None
        return (zero_after(args[0], frame_valid), *args[1:])

    handles = []
    for block, n_out in zip(muq.model.conv.conv, stem_valid[1:], strict=True):
        # conv2 reads relu(bn1(conv1(x))) and the next block reads this block's output
        handles.append(block.bn1.register_forward_hook(zero_output(n_out)))
        handles.append(block.register_forward_hook(zero_output(n_out)))
    for layer in muq.model.conformer.layers:
        handles.append(layer.conv_module.depthwise_conv.register_forward_pre_hook(zero_input))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def mel_bands(fb: torch.Tensor, group: int = MEL_GROUP) -> list[tuple[int, int, int, int]]:
    """(first filter, last filter + 1, first bin, last bin + 1) of each run of `group` mel
    filters in a filterbank fb [n_freqs, n_mels]: the frequency bins where any of them is non-zero.
    Computed once per filterbank tensor."""
    known = _BANDS.get(id(fb))
    if known is not None and known[0]() is fb:
        return known[1]
    nz = (fb != 0).cpu()  # [n_freqs, n_mels]
    rows = torch.arange(fb.shape[0])[:, None]
    lo = torch.where(nz, rows, fb.shape[0]).amin(0).tolist()  # [n_mels]
    hi = torch.where(nz, rows + 1, 0).amax(0).tolist()
    bands = []
    for j in range(0, fb.shape[1], group):
        a, b = min(lo[j : j + group]), max(hi[j : j + group])
        bands.append((j, min(j + group, fb.shape[1]), min(a, b), b))  # all-zero filters: a = b = 0
    key = id(fb)
    _BANDS[key] = (weakref.ref(fb, lambda _: _BANDS.pop(key, None)), bands)
    return bands


def _standard_front(core: Any, device: torch.device) -> Any:
    """MuQ's mel front end moved to `device`, or None when it is configured otherwise than the
    fast path below reproduces (power 2, centred one-sided STFT, dB without top_db)."""
    front = getattr(core, f"preprocessor_{MEL_KEY}").to(device)  # not an nn.Module: moved here
    spec = front.mel_stft.spectrogram
    db = getattr(front, "amplitude_to_db", None)
    standard = (
        spec.power == 2.0
        and not spec.normalized
        and spec.center
        and spec.onesided
        and spec.pad == 0
        and getattr(db, "top_db", 0.0) is None
        and getattr(db, "db_multiplier", None) == 0.0
    )
    return front if db is not None and standard else None


def _power_frames(front: Any, wav: torch.Tensor) -> torch.Tensor:
    """Power spectrum frames [B, M + 1, n_freqs] of wav [B, N] (MuQ's centred STFT)."""
    spec = front.mel_stft.spectrogram
    z = torch.stft(
        wav.float(),
        spec.n_fft,
        spec.hop_length,
        spec.win_length,
        spec.window,
        center=True,
        pad_mode=spec.pad_mode,
        normalized=False,
        onesided=True,
        return_complex=True,
    ).transpose(-1, -2)  # [B, M + 1, n_freqs]
    return torch.addcmul(z.real.square(), z.imag, z.imag)  # == |z| ** 2, torchaudio's power=2


def _log_mel(core: Any, front: Any, power: torch.Tensor) -> torch.Tensor:
    """Normalised log-mel [..., n_mels, T] of power frames [..., T, n_freqs]."""
    fb, db = front.mel_stft.mel_scale.fb, front.amplitude_to_db  # fb [n_freqs, n_mels]
    mel = power.new_empty(*power.shape[:-1], fb.shape[1])  # [..., T, n_mels]
    for j0, j1, f0, f1 in mel_bands(fb):
        torch.matmul(power[..., f0:f1], fb[f0:f1, j0:j1], out=mel[..., j0:j1])
    mel = db.multiplier * torch.log10(torch.clamp(mel.transpose(-1, -2), min=db.amin))
    return (mel - core.stat[f"{MEL_KEY}_mean"]) / core.stat[f"{MEL_KEY}_std"]


def muq_mel(core: Any, wav: torch.Tensor) -> torch.Tensor:
    """MuQ's normalised input feature [B, n_mels, M] for wav [B, N] (float32, 24 kHz):
    `core.normalize(core.preprocessing(wav, ...))` to float rounding (within 1 float32 ulp of
    the log-mel: MuQ's own front end sums the same products in another order).

    Two steps of MuQ's front end are slow on CPU for what they compute, so they are done
    otherwise: the power spectrum (torchaudio's complex `abs` then `pow(2)`) as re * re + im * im,
    and the mel filterbank product, a dense [n_freqs, n_mels] matmul over a matrix that is 98 %
    zeros, as one matmul per run of `MEL_GROUP` filters over the bins they cover. Together they
    halve the front end's time. A clip's mel depends on that clip only, whatever its batch.
    Everything else is MuQ's own modules' settings and buffers; a front end configured
    otherwise runs MuQ's own code.
    """
    front = _standard_front(core, wav.device)
    if front is None:
        return core.normalize(core.preprocessing(wav, features=[MEL_KEY]))[MEL_KEY]
    return _log_mel(core, front, _power_frames(front, wav))[..., :-1]  # MuQ drops the last frame


def muq_mels(core: Any, wav: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """Each clip's own `muq_mel` (its own STFT edges) for a zero-padded batch wav [B, N] of
    `lengths` samples, in one tensor [B, n_mels, M] with zeros after each clip's frames.

    Only the STFT runs per clip: the clips' frames are stacked into one sequence for the rest
    (a matmul's rows and elementwise steps do not depend on the rows beside them), which
    spares a dozen small calls per clip."""
    front = _standard_front(core, wav.device)
    if front is None:
        mels = [muq_mel(core, wav[i : i + 1, :n])[0] for i, n in enumerate(lengths)]
    else:
        frames = [_power_frames(front, wav[i : i + 1, :n])[0] for i, n in enumerate(lengths)]
        stacked = _log_mel(core, front, torch.cat(frames))  # [n_mels, sum(M_i + 1)]
        counts = [f.shape[0] for f in frames]
        mels = [m[:, :-1] for m in stacked.split(counts, dim=-1)]  # [n_mels, M_i]
    mel = wav.new_zeros(len(mels), mels[0].shape[0], max(m.shape[-1] for m in mels))
    for i, m in enumerate(mels):
        mel[i, :, : m.shape[-1]] = m  # [B, n_mels, M], zeros after each clip
    return mel


def muq_padded_forward(
    muq: Any, wav: torch.Tensor, lengths: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """A `muq` MuQ on a zero-padded batch: wav [B, N] at 24 kHz, lengths [B] samples ->
    (every hidden state [B, F, D], as `muq(...).hidden_states`; frame mask [B, F]), F = the
    longest clip's frame count. Each clip's valid frames equal what `muq` gives it alone (to
    float rounding); padded frames hold anything. Equal lengths need no hooks or mask. MuQ's
    pre-training head (codebook logits, which `muq(...)` also computes) is skipped.
    """
    lengths = lengths.to(device=wav.device, dtype=torch.long)
    wav = wav[:, : int(lengths.max())].float()
    hop, strides = int(muq.config.hop_length), stem_strides(muq)
    core = muq.model
    if bool((lengths == wav.shape[1]).all()):
        x = core.conv(muq_mel(core, wav))  # [B, F, D]
        hidden = core.conformer(x, output_hidden_states=True).hidden_states  # each [B, F, D]
        return hidden, torch.ones(hidden[0].shape[:2], dtype=torch.bool, device=wav.device)
    mel = muq_mels(core, wav, lengths.tolist())  # [B, n_mels, M], each clip's own STFT edges
    stem_valid = [lengths // hop]
    for s in strides:
        stem_valid.append(-(-stem_valid[-1] // s))
    n_frames = stem_valid[-1]
    with _padding_hooks(muq, stem_valid, n_frames):
        x = core.conv(mel)  # [B, F, D]
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < n_frames[:, None]  # [B, F]
        out = core.conformer(x, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states, mask


def muq_padded_hidden(
    muq: Any, wav: torch.Tensor, lengths: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`muq_padded_forward`'s hidden state `layer` [B, F, D] with padded frames zeroed, and the
    frame mask [B, F]."""
    hidden, mask = muq_padded_forward(muq, wav, lengths)
    return hidden[layer].masked_fill(~mask[..., None], 0), mask
