"""Pretrained weights from a local folder or a model hub, and the one-line error when they are
not there: which model, how to download it from each hub it is on, which key points at a folder.

Offline (`HF_HUB_OFFLINE=1`, as the Makefile sets) a hub id is looked up in the local cache only:
no request, no retry loop. Online, a failed download ends in the same error.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

# MuQ's default weights (`audiobase.muq`), here so that a CLI prints it without importing torch
DEFAULT_PRETRAINED = "OpenMuQ/MuQ-large-msd-iter"


class UserError(Exception):
    """An input the user must fix (missing weights, missing data): CLIs print the message as
    one line and exit 2, without a traceback."""


class MissingPackageError(UserError, ImportError):
    """An optional package a component or reward model needs is not installed; the message
    names it and the install command."""

    exit_code = 2


class MissingDataError(UserError, FileNotFoundError):
    """Training or benchmark data that is not set or not there."""


DEMO_CORPUS = "python scripts/make_synthetic_corpus.py --out data/synth"


class MissingWeightsError(UserError):
    """Pretrained weights that are neither a local folder nor in the hub cache."""

    def __init__(
        self,
        model_id: str,
        key: str,
        *,
        hf: str | None = None,
        modelscope: str | None = None,
        commands: tuple[str, ...] = (),
        env: str | None = None,
        reason: str = "",
    ) -> None:
        ways = list(commands)
        if hf:
            ways.append(f"huggingface-cli download {hf}")
        if modelscope:
            ways.append(f"modelscope download --model {modelscope}")
        get = " or ".join(f"`{w}`" for w in ways)
        get = f"download with {get}, or " if ways else ""
        why = f" ({reason})" if reason else ""
        alt = f" (or ${env})" if env else ""
        super().__init__(
            f"weights {model_id} not found{why}: {get}set {key}=/path/to/local/folder{alt}"
        )
        self.model_id, self.key = model_id, key


def hub_offline() -> bool:
    """Whether the hub clients must not reach the network (HF_HUB_OFFLINE / MODELSCOPE_OFFLINE)."""
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MODELSCOPE_OFFLINE")
    return any(os.environ.get(f, "").strip().lower() in ("1", "true", "yes") for f in flags)


def looks_like_hub_id(source: str) -> bool:
    """`owner/name` and not a path on this machine."""
    return (
        source.count("/") == 1
        and not source.startswith(("/", ".", "~"))
        and not Path(source).expanduser().exists()
    )


def hf_source(source: str, key: str, *, modelscope: str | None = None) -> str:
    """`source` (a local folder or a Hugging Face id) as something `from_pretrained` loads
    without a retry loop: a folder as is, a cached id as its snapshot folder when offline, an id
    as is when online. Raises MissingWeightsError naming `key` when it cannot be had."""
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    if not looks_like_hub_id(source):
        raise MissingWeightsError(source, key, reason="no such folder")
    from huggingface_hub import hf_hub_download, snapshot_download  # only for hub ids

    try:
        if hub_offline():
            return snapshot_download(source, local_files_only=True)
        # online: fetch the config first, so a failed download is this error, not the model
        # class called without its config
        hf_hub_download(source, "config.json")
        return source
    except Exception as e:  # the hub client raises many types for "not available"
        reason = "offline and not in the cache" if hub_offline() else type(e).__name__
        raise MissingWeightsError(
            source, key, hf=source, modelscope=modelscope, reason=reason
        ) from e


@contextlib.contextmanager
def hub_mixin_quiet() -> Iterator[None]:
    """huggingface_hub's model mixin `print`s "Loading weights from local directory" on every
    local load (three times for CMI-RM's towers): its stdout is dropped while a model loads."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error` (Hydra wraps what a constructor raises), or None."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, UserError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
