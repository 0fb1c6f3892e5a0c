"""The run's reward model: its config with runner settings pushed in, building it, the resume
fingerprint and CPU threads. Shared by the one-process loop (bench.score) and the ranks of a
sharded run (bench.sharded), so neither imports the other or the runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from audiobase.files import write_json
from audiobase.preprocess import Preprocess
from audioscore.safe_config import UntrustedInputError
from bench.guard import RunRefused
from rewards.base import RewardModel
from rewards.build import build_reward_model, model_class
from rewards.build import expected_preprocess as planned_preprocess
from rewards.custom import declared_batch_independent


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config node as a plain, resolved dict (None -> {})."""
    out = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}
    if not isinstance(out, dict):
        raise TypeError(f"expected a mapping, got {type(out).__name__}")
    return {str(k): v for k, v in out.items()}


def resolve_device(device: str) -> str:
    """`auto` -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def n_devices(cfg: DictConfig) -> int:
    """Scoring processes: `trainer.devices` (> 1 = sharded with Lightning predict)."""
    return int(cfg.trainer.get("devices", 1)) if cfg.get("trainer") else 1


def prepare_model_cfg(cfg: DictConfig, device: str | None = None) -> DictConfig:
    """The model config with runner-level settings pushed into keys the model declares;
    `device` overrides the runner's device."""
    mcfg = DictConfig(to_dict(cfg.model))
    device = device or cfg.get("device")
    with open_dict(mcfg):
        if cfg.get("cache_dir") and "cache_dir" in mcfg:
            mcfg.cache_dir = str(cfg.cache_dir)  # models own their encoder cache; we pass the dir
        if device and "device" in mcfg:
            mcfg.device = resolve_device(str(device))
        if "bf16" in mcfg and cfg.get("bf16") is not None:
            mcfg.bf16 = bool(cfg.bf16)
        if "upstream_compat" in mcfg and cfg.get("upstream_compat") is not None:
            mcfg.upstream_compat = bool(cfg.upstream_compat)  # preset=upstream sets it
    return mcfg


INPUTS = ("waveforms", "paths")


def model_inputs(cfg: DictConfig) -> str:
    """`model.inputs`: `waveforms` (decoded by the runner through the model's contract) or
    `paths` (the resolved files, as CMI-RewardBench passes them; the model loads them)."""
    value = str(cfg.model.get("inputs") or "waveforms")
    if value not in INPUTS:
        raise ValueError(f"model.inputs must be one of {INPUTS}, got {value!r}")
    return value


def model_grad(cfg: DictConfig) -> bool:
    """`model.grad`: true = the model is called without `torch.inference_mode()`."""
    return bool(cfg.model.get("grad", False))


def extra_score_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """`score_kwargs` from the runner config (added to the model config's own)."""
    return to_dict(cfg.get("score_kwargs"))


def configured_class(cfg: DictConfig) -> type | None:
    """The reward-model class `cfg.model` names (imported, not built); None if it names none."""
    mcfg = to_dict(cfg.model)
    return model_class(mcfg) if {"class_path", "_target_"} & set(mcfg) else None


def expected_preprocess(cfg: DictConfig, cls: type | None) -> Preprocess | None:
    """What the model will be fed, read from its config before it is built, so decoding can
    start while it loads (`RewardModel.expected_preprocess`: an exported scorer's stored
    contract with the model config's overrides, or the runner's crop at the `sr` the config
    or class gives). None when only the built model can tell (the runner then checks the
    guess against the built model and starts over if they differ)."""
    if cls is None:
        return None
    return planned_preprocess(prepare_model_cfg(cfg), cfg.get("max_dur"))


def build_model(cfg: DictConfig, device: str | None = None) -> tuple[RewardModel, dict[str, Any]]:
    """(reward model, score kwargs) through the rewards package, as a user's run builds it.
    A checkpoint or config the model reads that is refused as input (it asks to run code, or
    is malformed: `UntrustedInputError`) refuses the run (`RunRefused`, exit 2)."""
    try:
        model, score_kwargs = build_reward_model(prepare_model_cfg(cfg, device))
    except UntrustedInputError as e:
        raise RunRefused(f"model {cfg.model.get('name')!r}: {e}") from e
    return model, {**(score_kwargs or {}), **extra_score_kwargs(cfg)}


PROJECT_PACKAGES = ("audiobase", "audioscore", "rewards", "bench")
DIGESTS_NAME = ".weights_digests.json"  # in output_root: file digests keyed by path + stat


def digest_sidecar(cfg: DictConfig) -> Path:
    """Where weight-file digests are remembered between runs: `<output_root>/DIGESTS_NAME`."""
    return Path(cfg.output_root) / DIGESTS_NAME


def checkpoint_path(mcfg: dict[str, Any]) -> Path | None:
    """The model's weights on disk: `checkpoint` (or `init_kwargs.checkpoint`), if it exists."""
    ckpt = mcfg.get("checkpoint") or (mcfg.get("init_kwargs") or {}).get("checkpoint")
    path = Path(str(ckpt or ""))
    return path if str(path) not in ("", ".") and path.exists() else None


def weight_files(path: Path) -> list[Path]:
    """The checkpoint file, or every file under its folder at any depth (SongEval keeps its
    weights in `ckpt/`), skipping hidden entries (`.git`, `.cache`)."""
    if path.is_file():
        return [path]
    files = [p for p in path.rglob("*") if p.is_file()]
    return sorted(p for p in files if not any(x.startswith(".") for x in p.relative_to(path).parts))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class DigestCache:
    """sha256 of files, remembered in a small JSON sidecar keyed by path, size, mtime_ns, ctime_ns
    and inode, so a 1 GB checkpoint is hashed once, not every run. ctime changes on every write
    (and cannot be set back), so new bytes under an old mtime are hashed again. The sidecar is
    written atomically; two runs racing on it can only lose an entry, never corrupt it."""

    def __init__(self, sidecar: Path | None):
        self.sidecar = sidecar
        self.entries: dict[str, Any] = {}
        if sidecar is not None and sidecar.is_file():
            try:
                self.entries = dict(json.loads(sidecar.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                self.entries = {}  # a damaged cache only costs a rehash
        self.dirty = False

    def digest(self, path: Path) -> str:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = str(path.resolve())
        hit = self.entries.get(key)
        if isinstance(hit, dict) and hit.get("stat") == stamp:
            return str(hit["sha256"])
        digest = sha256_file(path)
        self.entries[key] = {"stat": stamp, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.sidecar is not None and self.dirty:
            self.sidecar.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.sidecar, self.entries)
            self.dirty = False


def weights_digest(checkpoint: Path | None, sidecar: Path | None = None) -> str | None:
    """Content digest of the checkpoint file or folder (relative names + file contents);
    None when the model has no checkpoint on disk (a hub id is part of its config)."""
    if checkpoint is None:
        return None
    cache = DigestCache(sidecar)
    h = hashlib.sha256()
    for f in weight_files(checkpoint):
        rel = f.name if checkpoint.is_file() else f.relative_to(checkpoint).as_posix()
        h.update(f"{rel}\0{cache.digest(f)}\n".encode())
    cache.save()
    return h.hexdigest()


def project_version() -> str:
    """The installed project's version (what `_target_` models' code is keyed on)."""
    try:
        return importlib.metadata.version("audioscore")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def is_outside_project(module: str) -> bool:
    """A module that is neither the project's nor the standard library's: user code."""
    top = module.split(".")[0]
    return top not in PROJECT_PACKAGES and top not in sys.stdlib_module_names and top != "builtins"


def code_digest(cls: type | None) -> dict[str, Any]:
    """What identifies the model's code: the project's version, plus for a class from outside
    the project (a `class_path` model) the content of its module file and of the module files
    of its base classes outside the project, so an edited model rescores."""
    files: dict[str, str] = {}
    for c in cls.__mro__ if cls is not None else ():
        mod = sys.modules.get(c.__module__)
        path = getattr(mod, "__file__", None)
        if path and is_outside_project(c.__module__) and c.__module__ not in files:
            files[c.__module__] = sha256_file(Path(path))
    return {"project": project_version(), "modules": files}


def batch_dependent(mcfg: dict[str, Any], cls: type | None) -> bool:
    """Whether a clip's score may depend on its batch-mates, so batching settings are part of
    the fingerprint. A class attribute `batch_independent` decides when declared; otherwise
    CMI-RM with `upstream_compat` and any `class_path` model are dependent, the project's
    own models (exact batching) are not."""
    declared = None if cls is None else declared_batch_independent(cls)
    if declared is not None:
        return not declared
    return bool(mcfg.get("upstream_compat")) or "class_path" in mcfg


def batching_settings(cfg: DictConfig) -> dict[str, Any]:
    """The runner settings that decide which clips share a score_batch call."""
    return {
        "batching": str(cfg.get("batching", "duration")),
        "batch_size": int(cfg.batch_size),
        "max_batch_seconds": cfg.get("max_batch_seconds"),
    }


def fingerprint(
    cfg: DictConfig,
    pre: Preprocess,
    cls: type | None = None,
    digest_sidecar: Path | None = None,
) -> str:
    """What makes scores reusable on resume: the model config (minus device and cache dir),
    the weights' content, the model's code (`code_digest` of `cls`, the configured class), the
    preprocessing the model actually gets (`pre`: its own contract, or the runner's max_dur),
    the score kwargs, and for a batch-dependent model the batching settings."""
    mcfg = to_dict(prepare_model_cfg(cfg))
    for k in ("device", "cache_dir"):
        mcfg.pop(k, None)
    blob = {
        "model": mcfg,
        "weights": weights_digest(checkpoint_path(mcfg), digest_sidecar),
        "code": code_digest(cls),
        "preprocess": pre.to_dict(),
        "score_kwargs": extra_score_kwargs(cfg),
        "batching": batching_settings(cfg) if batch_dependent(mcfg, cls) else None,
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


MAX_STREAMS = 8  # `score_streams: auto`'s cap: each stream holds a batch's activations


def cores_per(cfg: DictConfig, share: int) -> int | None:
    """The cores each of `share` CPU scorers gets (at least 1); None when scoring runs on an
    accelerator."""
    if resolve_device(str(cfg.get("device") or "cpu")) != "cpu":
        return None
    return max(1, (os.cpu_count() or 1) // max(share, 1))


MAX_DECODE_WORKERS = 8  # `num_workers: auto`'s cap


def decode_workers(cfg: DictConfig, processes: int = 1) -> int:
    """Decoding processes per scoring process (`num_workers`; `auto`: each of `processes`
    ranks' share of the cores less the one its model runs on, at least 1, at most
    MAX_DECODE_WORKERS). On the 2-core machine one worker decodes the 800-row synthetic set
    while the model loads and leaves both cores to scoring: 5 % faster end to end than two
    (median of 4 interleaved pairs)."""
    want = cfg.get("num_workers", "auto")
    if want != "auto":
        return max(0, int(want))
    share = (os.cpu_count() or 1) // max(processes, 1)
    return max(1, min(MAX_DECODE_WORKERS, share - 1))


def score_streams(cfg: DictConfig, model: RewardModel, processes: int = 1) -> int:
    """Batches scored at once on CPU, each on its own thread (`score_streams: auto`: each of
    `processes` ranks' share of the cores, at most MAX_STREAMS batches in memory). Only for a
    model declaring `thread_safe`; 1 on accelerators and for any other model. Scores do not
    depend on it: with one intra-op thread per stream every batch runs as it would alone on
    one thread."""
    want, cores = cfg.get("score_streams", "auto"), cores_per(cfg, processes)
    if want in (None, "none") or cores is None or not model.capabilities.thread_safe:
        return 1
    return min(MAX_STREAMS, cores) if want == "auto" else max(1, int(want))


def pick_threads(cfg: DictConfig, processes: int = 1, streams: int = 1) -> int | None:
    """Intra-op threads for CPU scoring, per stream; `torch_threads: auto` gives each of
    `processes` ranks its share of the cores, split between its `streams`. Decoding workers
    run at lower priority (`decode_nice`) and fill what the model leaves idle; with equal
    priority they would slow every OpenMP thread of a parallel op to the pace of the one
    sharing its core."""
    want, cores = cfg.get("torch_threads", "auto"), cores_per(cfg, processes * max(streams, 1))
    if want in (None, "none") or cores is None:
        return None
    return cores if want == "auto" else int(want)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` intra-op threads (None = leave torch's setting)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
