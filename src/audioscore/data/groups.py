"""Reader for seed 002's groups file: `[[{"audio_file": ..., "score": ...}, ...], ...]`.

The original files are hand-edited JSON with trailing commas (`{"audio_file": "x.m4a",}`), which
the `json` module rejects, so we drop commas that directly precede `]` or `}` (outside strings)
before parsing. Each inner list is one group, sorted by score from high to low: the ranking loss
reads the order, and the seed reports that ascending groups made training diverge.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from audiobase.schemas import AUDIO_FILE, SCORE, SINGER
from audiobase.weights import DEMO_CORPUS, MissingDataError

log = logging.getLogger(__name__)

_SHOW_MISSING = 20  # paths listed in the MissingAudioError message (all are in `.paths`)


class GroupsFormatError(ValueError):
    """The groups file is not valid (syntax, structure, score, or order)."""


class MissingAudioError(FileNotFoundError):
    """Audio files named in a groups file do not exist; `.paths` lists all of them."""

    def __init__(self, groups_file: str | Path, paths: list[str]):
        self.groups_file = str(groups_file)
        self.paths = list(paths)
        shown = "\n  ".join(self.paths[:_SHOW_MISSING])
        more = len(self.paths) - _SHOW_MISSING
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{self.groups_file}: {len(self.paths)} audio file(s) not found:\n  {shown}{tail}"
        )

    def __reduce__(self):
        return type(self), (self.groups_file, self.paths)


def read_groups(
    path: str | Path,
    root: str | Path | None = None,
    *,
    check_files: bool = True,
    require_sorted: bool = True,
    prefix_map: dict[str, str] | None = None,
) -> list[list[dict[str, Any]]]:
    """Read a groups file; each item becomes {"audio_file": abs str, "score", "singer", ...}.

    Args:
        root: folder that relative `audio_file`s resolve against (default: the file's folder).
        check_files: raise MissingAudioError listing every missing audio file at once.
        require_sorted: when scores are present, every group must be non-increasing (ties ok).
        prefix_map: rewrite absolute path prefixes, e.g. {"/data/nfs/audio": "/mnt/audio"},
            for files copied from another machine.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(
            f"{path}: groups file does not exist (set data.train_files= / data.val_files= and "
            f"data.root= to your groups files, or make the demo corpus with `{DEMO_CORPUS}`)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: tolerate a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise GroupsFormatError(f"{path}: cannot read as UTF-8 text: {exc}") from exc
    try:
        data = json.loads(strip_trailing_commas(text))
    except json.JSONDecodeError as exc:
        raise GroupsFormatError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc

    base = Path(root) if root is not None else path.parent
    if not isinstance(data, list):
        raise GroupsFormatError(f"{path}: top level must be a list of groups, got {_kind(data)}")
    groups = [_parse_group(path, g, group, base, prefix_map or {}) for g, group in enumerate(data)]
    if require_sorted:
        _check_sorted(path, groups)
    warn_conflicting_scores(path, groups)
    if check_files:
        missing = [
            it["audio_file"] for g in groups for it in g if not os.path.isfile(it["audio_file"])
        ]
        if missing:
            raise MissingAudioError(path, list(dict.fromkeys(missing)))
    return groups


def conflicting_scores(groups: list[list[dict]]) -> dict[str, list[tuple[int, int, float]]]:
    """Clips listed more than once with different scores: audio_file -> [(group, position,
    score), ...]. Such labels contradict each other (a copy-paste slip, or two raters)."""
    seen: dict[str, list[tuple[int, int, float]]] = {}
    for g, group in enumerate(groups):
        for i, it in enumerate(group):
            if it.get("score") is not None:
                seen.setdefault(it["audio_file"], []).append((g, i, float(it["score"])))
    return {a: hits for a, hits in seen.items() if len({s for _, _, s in hits}) > 1}


def warn_conflicting_scores(path: Path, groups: list[list[dict]]) -> None:
    """Log one warning per groups file naming the clips that carry contradicting scores."""
    bad = conflicting_scores(groups)
    if not bad:
        return
    shown = "; ".join(
        f"{a}: " + ", ".join(f"group {g} item {i} = {s:g}" for g, i, s in hits)
        for a, hits in list(bad.items())[:_SHOW_MISSING]
    )
    log.warning("%s: %d clip(s) appear with different scores: %s", path, len(bad), shown)


def strip_trailing_commas(text: str) -> str:
    """Remove commas whose next non-space character is `]` or `}`, leaving strings untouched."""
    out: list[str] = []
    in_string = escaped = False
    pending_comma = -1  # index in `out` of a comma that may turn out to be trailing
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch in "]}" and pending_comma >= 0:
            out[pending_comma] = ""
        if not ch.isspace():
            pending_comma = -1
        if ch == ",":
            pending_comma = len(out)
        elif ch == '"':
            in_string = True
        out.append(ch)
    return "".join(out)


def _parse_group(path: Path, g: int, group: Any, base: Path, prefix_map: dict[str, str]) -> list:
    if not isinstance(group, list):
        raise GroupsFormatError(f"{path}: group {g} must be a list of items, got {_kind(group)}")
    if not group:
        raise GroupsFormatError(f"{path}: group {g} is empty")
    return [_parse_item(path, g, i, item, base, prefix_map) for i, item in enumerate(group)]


def _parse_item(path: Path, g: int, i: int, item: Any, base: Path, prefix_map: dict[str, str]):
    where = f"{path}: group {g}, item {i}"
    if not isinstance(item, dict):
        raise GroupsFormatError(f"{where}: must be an object, got {_kind(item)}")
    audio = item.get(AUDIO_FILE)
    if not isinstance(audio, str) or not audio.strip():
        raise GroupsFormatError(f"{where}: needs a non-empty string {AUDIO_FILE!r}")
    out = dict(item)
    out[AUDIO_FILE] = _resolve(audio.strip(), base, prefix_map)
    out[SCORE] = _parse_score(where, item.get(SCORE))
    singer = item.get(SINGER)
    out[SINGER] = None if singer is None or singer == "" else str(singer)
    return out


def _parse_score(where: str, score: Any) -> float | None:
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, int | float | str):
        raise GroupsFormatError(f"{where}: score must be a number, got {_kind(score)}")
    try:
        value = float(score)  # original data stores some scores as strings, e.g. "85"
    except ValueError:
        raise GroupsFormatError(f"{where}: score {score!r} is not a number") from None
    if not math.isfinite(value):
        raise GroupsFormatError(f"{where}: score {score!r} is not finite")
    return value


def _resolve(audio: str, base: Path, prefix_map: dict[str, str]) -> str:
    for old, new in prefix_map.items():
        old = old.rstrip("/")
        if audio == old or audio.startswith(old + "/"):
            audio = new.rstrip("/") + audio[len(old) :]
            break
    audio = os.path.expanduser(audio)
    if not os.path.isabs(audio):
        audio = os.path.join(base, audio)
    return os.path.normpath(os.path.abspath(audio))


def _check_sorted(path: Path, groups: list[list[dict]]) -> None:
    problems = []
    for g, group in enumerate(groups):
        scores = [it["score"] for it in group]
        if all(s is None for s in scores):
            continue  # unscored (seed 002's example): order is the annotation
        if any(s is None for s in scores):
            unscored = [i for i, s in enumerate(scores) if s is None]
            problems.append(f"group {g}: items {unscored} have no score while others do")
            continue
        bad = [(i, i + 1) for i in range(len(scores) - 1) if scores[i] < scores[i + 1]]
        if bad:
            pairs = ", ".join(f"{i}->{j} ({scores[i]:g} < {scores[j]:g})" for i, j in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            problems.append(f"group {g} is not sorted high to low at positions {pairs}{more}")
    if problems:
        raise GroupsFormatError(f"{path}: " + "; ".join(problems) + " (positions are 0-based)")


def _kind(x: Any) -> str:
    return type(x).__name__
