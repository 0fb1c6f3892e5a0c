"""Decode in DataLoader workers, score batches, turn scores into CMI-RewardBench result rows.

Every batch goes through the model's `score_batch_detailed` once: per-item results, so one bad
input costs one recorded error instead of the batch (the `RewardModel` default retries a
failed batch clip by clip; the HTTP model and the judge know per-item results and send nothing
twice). Decoding errors never reach the model; every score error names the clip's file. What
the model declares is read from its `capabilities`: a model declaring `extra_columns` (names
for columns 2.. of its scores) gets them written as `predicted_<name>` / `predicted_<name>_b`.

`inputs="paths"` (a model config's `inputs: paths`): nothing is decoded; `BatchInput.audio`
and `ref_audio` are the resolved file paths, as CMI-RewardBench passes them, and a file the
model cannot read is that item's score error. `grad=True`: no `torch.inference_mode()` around
the model's calls, for models that need autograd while scoring.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from audiobase import schemas as S
from audiobase.preprocess import Preprocess
from bench.data import BenchRow
from bench.pairwise import is_pair, score_with_pairwise, wants_pairwise
from bench.records import NONFINITE, SideScore, make_result
from rewards.base import ALIGNMENT, MUSICALITY, BatchInput, PairwiseJudge, RewardModel


def describe_error(e: BaseException) -> str:
    """`Type: message`, the reason string stored in results and counted in statistics."""
    return f"{type(e).__name__}: {e}"


def decode_clip(path: str, pre: Preprocess) -> torch.Tensor:
    """The model input [T] for one file, prepared by the model's contract."""
    return torch.from_numpy(pre.load(path))  # [T]


def model_preprocess(
    model: RewardModel, max_dur: float | None, max_seconds: float | None = None
) -> Preprocess:
    """What `model` sees: its own contract (an exported scorer's) when it has one, else the
    runner's: the first `max_dur` seconds at the model's `sr` (CMI-RewardBench's crop).
    `max_seconds`: files longer than this are refused (None: the contract's default)."""
    return model.scoring_plan(max_dur, max_seconds).preprocess


def row_inputs(row: BenchRow, ref: Any, load: Callable[[str], Any]) -> dict[str, BatchInput | str]:
    """One BatchInput per side with `load(path)` as its audio, or the error text: an empty
    path in the benchmark file, or what `load` raised."""
    sides: dict[str, BatchInput | str] = {}
    for side in row.sides:
        path = row.side_path(side)
        if not path:
            field = S.AUDIO_A if side == "a" else S.AUDIO_B
            sides[side] = (
                f"AudioMissingError: row {row.index}: empty {field!r} in the benchmark file"
            )
            continue
        try:
            sides[side] = BatchInput(
                audio=load(path), text=row.text, lyrics=row.lyrics, ref_audio=ref, path=path
            )
        except Exception as e:
            sides[side] = describe_error(e)
    return sides


def path_row(row: BenchRow) -> dict[str, Any]:
    """`decode_row` for a model that loads audio itself: paths in, nothing decoded. A missing
    ref is passed as None with a note, as CMI-RewardBench does (`ref_audio_not_found`)."""
    ref, notes = row.ref_audio, []
    if ref and not os.path.exists(ref):
        ref, notes = None, [f"ref_audio_not_found: {row.ref_audio}"]
    return {"row": row, "sides": row_inputs(row, ref, lambda p: p), "notes": notes}


def decode_row(row: BenchRow, pre: Preprocess | None) -> dict[str, Any]:
    """Everything a row needs for scoring: one BatchInput (or an error) per side. `pre=None`:
    the model takes paths (`path_row`)."""
    if pre is None:
        return path_row(row)
    ref, notes = None, []
    if row.ref_audio:
        try:
            ref = decode_clip(row.ref_audio, pre)
        except Exception as e:  # like CMI-RewardBench: score without the ref, note why
            notes.append(f"ref_audio_error: {describe_error(e)}")
    sides = row_inputs(row, ref, lambda p: decode_clip(p, pre))
    return {"row": row, "sides": sides, "notes": notes}


class BatchDecodeDataset(Dataset):
    """Item i = batch i, decoded; lets DataLoader workers decode ahead of the model."""

    def __init__(self, batches: list[list[BenchRow]], pre: Preprocess | None):
        self.batches, self.pre = batches, pre

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        decoded = [decode_row(r, self.pre) for r in self.batches[i]]
        return pack_audio(decoded) if get_worker_info() is not None else decoded


def pack_audio(decoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A worker's decoded batch with every waveform a view of one tensor: the batch then goes
    to the runner as one shared-memory segment instead of one per clip (each costs the runner
    a file-descriptor hand-over, about 1 s of its time over 1,200 clips). Values unchanged."""
    clips: dict[int, torch.Tensor] = {}  # id -> waveform; a ref shared by two sides counts once
    for d in decoded:
        for inp in d["sides"].values():
            if isinstance(inp, BatchInput):
                for x in (inp.audio, inp.ref_audio):
                    if isinstance(x, torch.Tensor):
                        clips.setdefault(id(x), x)
    if len(clips) < 2:
        return decoded
    flat = torch.cat([x.reshape(-1) for x in clips.values()])  # [sum T]
    views, at = {}, 0
    for key, x in clips.items():
        views[key] = flat[at : at + x.numel()].view_as(x)
        at += x.numel()

    def view(x: Any) -> Any:
        return views[id(x)] if isinstance(x, torch.Tensor) else x

    for d in decoded:
        d["sides"] = {
            s: replace(inp, audio=view(inp.audio), ref_audio=view(inp.ref_audio))
            if isinstance(inp, BatchInput)
            else inp
            for s, inp in d["sides"].items()
        }
    return decoded


def worker_start(_worker_id: int, nice: int = 0) -> None:
    """Decoding workers collect garbage as usual (they may be forked while the runner has
    Python's GC paused: bench.pipeline.collection_paused) and run `nice` steps below the model, so
    they take the cores the model leaves idle instead of slowing every one of its threads."""
    gc.enable()
    if nice > 0:
        os.nice(nice)


def keep_as_is(x: Any) -> Any:
    """collate_fn for pre-formed batches (module level so worker processes can pickle it)."""
    return x


def decoded_bytes(batch: list[BenchRow], pre: Preprocess) -> float:
    """Upper estimate of a batch's decoded float32 audio: each side cropped to the contract's
    `max_dur`, and a reference as long as the row's longest side."""
    total = 0.0
    for r in batch:
        sides = [min(d, pre.max_dur) if pre.max_dur else d for d in r.durations or [0.0]]
        total += sum(sides) + (max(sides) if r.ref_audio else 0.0)
    return total * pre.sr * 4


def prefetch_depth(
    batches: list[list[BenchRow]], pre: Preprocess, num_workers: int, ahead_mb: float | None
) -> int:
    """Batches each worker may decode ahead of the model: as many as `ahead_mb` of decoded
    audio allows at the largest batch's size (at least DataLoader's default, 2)."""
    if not ahead_mb or not batches or num_workers <= 0:
        return 2
    largest = max(decoded_bytes(b, pre) for b in batches)
    fit = int(ahead_mb * 2**20 // max(largest * num_workers, 1.0))
    return max(2, min(fit, -(-len(batches) // num_workers)))


def make_loader(
    batches: list[list[BenchRow]],
    pre: Preprocess | None,
    num_workers: int = 2,
    sampler: Any = None,
    *,
    ahead_mb: float | None = None,
    nice: int = 0,
) -> DataLoader:
    """DataLoader over pre-formed batches; `sampler` shards them across ranks; `pre=None`:
    paths only, nothing to decode, so no worker processes. Workers decode up to `ahead_mb` of
    audio ahead of the model (`prefetch_depth`), at `nice` lower priority (`worker_start`)."""
    num_workers = 0 if pre is None else num_workers
    kw: dict[str, Any] = {"num_workers": num_workers, "collate_fn": keep_as_is}
    if num_workers > 0 and pre is not None:
        kw |= {
            "prefetch_factor": prefetch_depth(batches, pre, num_workers, ahead_mb),
            "persistent_workers": False,
            "worker_init_fn": partial(worker_start, nice=nice),
        }
    ds = BatchDecodeDataset(batches, pre)
    return DataLoader(ds, batch_size=None, shuffle=False, sampler=sampler, **kw)


def autocast_for(
    device: str | torch.device | None, bf16: bool
) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (parameters stay fp32); a no-op elsewhere."""
    if bf16 and device is not None and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def extra_columns(model: RewardModel) -> list[str]:
    """Names the model gives its score columns 2.. (`extra_columns`); [] for most models."""
    return list(model.capabilities.extra_columns)


def check_scores(model: RewardModel, out: Any, n: int, what: str = "score_batch") -> np.ndarray:
    """`out` as float64 [n, 2 + len(extra_columns)] or more columns; ValueError otherwise."""
    out = np.asarray(out, dtype=np.float64)
    width = 2 + len(extra_columns(model))
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < width:
        raise ValueError(f"{what} returned shape {out.shape}, expected [{n}, {width}]")
    return out


def no_grad_unless(grad: bool) -> contextlib.AbstractContextManager:
    """`torch.inference_mode()` around a model call, unless the model asked for gradients."""
    return contextlib.nullcontext() if grad else torch.inference_mode()


def call_model_detailed(
    model: RewardModel,
    inputs: list[BatchInput],
    max_dur: float | None,
    score_kwargs: dict[str, Any],
    grad: bool = False,
) -> tuple[np.ndarray, list[str | None], list[dict[str, Any] | None]]:
    """score_batch_detailed with shape checks: (scores, error text or None per input, details
    per input). The model returns (scores, errors) or (scores, errors, details), details being
    one dict (e.g. a judge's raw answer) or None per input."""
    with no_grad_unless(grad):
        # max_dur None = no crop (CMI-RewardBench's ABC types it float)
        out = model.score_batch_detailed(
            inputs, batch_size=len(inputs), max_dur=cast(float, max_dur), **score_kwargs
        )
    if not isinstance(out, tuple | list) or len(out) not in (2, 3):
        raise ValueError("score_batch_detailed must return (scores, errors[, details])")
    scores, errors = out[0], list(out[1])
    details: list[dict[str, Any] | None] = (
        list(out[2]) if len(out) == 3 and out[2] is not None else [None] * len(inputs)
    )
    n = len(inputs)
    if len(errors) != n or len(details) != n:
        raise ValueError(
            f"score_batch_detailed returned {len(errors)} errors and {len(details)} details "
            f"for {n} inputs"
        )
    bad = [type(d).__name__ for d in details if d is not None and not isinstance(d, dict)]
    if bad:
        raise ValueError(f"score_batch_detailed details must be dicts or None, got {bad[0]}")
    return check_scores(model, scores, n, "score_batch_detailed"), errors, details


def name_file(err: str, path: str | None) -> str:
    """The error text, with the clip's file added when the model's message lacks it."""
    return err if not path or path in err else f"{err} [{path}]"


def to_float(x: float) -> float | None:
    """JSON-safe score: NaN (the model has no such dimension) becomes None."""
    return None if x is None or not math.isfinite(x) else float(x)


def nonfinite(row: np.ndarray, names: list[str]) -> tuple[str | None, list[str]]:
    """(error, NaN dimensions) of one item's scores. An error: an infinite value in any
    column, NaN in a named extra column (the model says it has it), or NaN in both
    alignment and musicality (no score at all). NaN in one of the two is what a model
    without that dimension returns: listed, for `bench.records.flag_nan_scores`."""
    cols = {"alignment": row[ALIGNMENT], "musicality": row[MUSICALITY]}
    cols |= {n: row[2 + j] for j, n in enumerate(names)}
    inf = [f"{k}={float(v)}" for k, v in cols.items() if math.isinf(v)]
    nan_extra = [k for k in names if math.isnan(cols[k])]
    nan = [k for k in ("alignment", "musicality") if math.isnan(cols[k])]
    if inf or nan_extra:
        return f"{NONFINITE}: {', '.join(inf + [f'{k}=nan' for k in nan_extra])}", []
    if len(nan) == 2:
        return f"{NONFINITE}: alignment=nan, musicality=nan", []
    return None, nan


def score_decoded(
    model: RewardModel,
    decoded: list[dict[str, Any]],
    max_dur: float | None,
    score_kwargs: dict[str, Any],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    per_side: bool = False,
    grad: bool = False,
) -> list[dict[str, SideScore]]:
    """Score every decodable side of a decoded batch; per row, a SideScore per side.

    One `score_batch_detailed` call for the batch (`per_side`: one for its A clips, then one
    for its B clips, as CMI-RewardBench does): per-item results, never retried here; the
    details it returns per item go into the SideScore's `details`. `grad`: no inference mode.
    """
    slots = [(i, s, inp) for i, d in enumerate(decoded) for s, inp in d["sides"].items()]
    out: list[dict[str, SideScore]] = [{} for _ in decoded]
    for i, s, inp in slots:
        if not isinstance(inp, BatchInput):
            out[i][s] = {"alignment": None, "musicality": None, "valid": False, "error": inp}
    todo = [(i, s, inp) for i, s, inp in slots if isinstance(inp, BatchInput)]
    groups = [[t for t in todo if t[1] == side] for side in ("a", "b")] if per_side else [todo]

    names = extra_columns(model)

    def put(i: int, s: str, row: np.ndarray, details: dict[str, Any] | None = None) -> None:
        bad, nan = nonfinite(row, names)
        if bad:
            return fail(i, s, bad, details)
        a, m = to_float(row[ALIGNMENT]), to_float(row[MUSICALITY])
        out[i][s] = {"alignment": a, "musicality": m, "valid": True, "error": ""}
        if nan:  # a dimension the model may lack; bench.records.flag_nan_scores decides
            out[i][s]["nan"] = nan
        if names:
            out[i][s]["extra"] = {n: to_float(row[2 + j]) for j, n in enumerate(names)}
        if details is not None:
            out[i][s]["details"] = details

    def fail(i: int, s: str, err: str, details: dict[str, Any] | None = None) -> None:
        err = name_file(f"score_error: {err}", decoded[i]["row"].side_path(s))
        out[i][s] = {"alignment": None, "musicality": None, "valid": False, "error": err}
        if details is not None:  # e.g. a judge's answer that could not be parsed
            out[i][s]["details"] = details

    for group in (g for g in groups if g):
        details: list[dict[str, Any] | None] = [None] * len(group)
        try:
            with autocast():
                scores, errors, details = call_model_detailed(
                    model, [t[2] for t in group], max_dur, score_kwargs, grad
                )
        except Exception as e:
            scores, errors = np.empty((len(group), 0)), [describe_error(e)] * len(group)
        for (i, s, _), row, item_err, det in zip(group, scores, errors, details, strict=True):
            if item_err is None:
                put(i, s, row, det)
            else:
                fail(i, s, item_err, det)
    return out


def score_batch_rows(
    model: RewardModel,
    decoded: list[dict[str, Any]],
    max_dur: float | None,
    score_kwargs: dict[str, Any],
    model_name: str,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    extra: dict[str, Any] | None = None,
    per_side: bool = False,
    grad: bool = False,
) -> list[dict[str, Any]]:
    """Decoded batch -> result rows (what both the plain loop and predict_step write);
    `extra` fields (e.g. the run fingerprint) are added to every row. A pairwise judge
    (bench.pairwise) states the preference of pair rows itself; its other rows come here."""
    if isinstance(model, PairwiseJudge) and wants_pairwise(model) and any(map(is_pair, decoded)):
        clips = partial(
            score_batch_rows,
            model,
            max_dur=max_dur,
            score_kwargs=score_kwargs,
            model_name=model_name,
            autocast=autocast,
            extra=extra,
            per_side=per_side,
            grad=grad,
        )  # gets only rows without a pair, so it never comes back here
        return score_with_pairwise(
            model,
            decoded,
            clips,
            max_dur,
            score_kwargs,
            model_name,
            extra,
            seconds=lambda d: audio_seconds(d, float(model.capabilities.sr), max_dur),
        )
    scored = score_decoded(model, decoded, max_dur, score_kwargs, autocast, per_side, grad)
    out = []
    for d, sides in zip(decoded, scored, strict=True):
        res = make_result(d["row"], sides, d["notes"], model_name, extra_columns(model))
        res[S.AUDIO_SECONDS] = audio_seconds(d, float(model.capabilities.sr), max_dur)  # cropped
        res.update(extra or {})
        out.append(res)
    return out


def audio_seconds(decoded: dict[str, Any], sr: float, max_dur: float | None) -> float:
    """Seconds of audio the row's sides put through the model: decoded lengths, or for paths
    the probed durations cropped to `max_dur`."""
    total = 0.0
    row: BenchRow = decoded["row"]
    for side, x in decoded["sides"].items():
        if not isinstance(x, BatchInput):
            continue
        if isinstance(x.audio, str):
            k = row.sides.index(side)
            dur = row.durations[k] if k < len(row.durations) else 0.0
            total += min(dur, max_dur) if max_dur else dur
        else:
            total += len(x.audio) / sr
    return total
