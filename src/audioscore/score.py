"""Score audio with an exported scorer: `python -m audioscore.score EXPORT FILES_OR_DIRS...`.

Folders are walked (recursively, sorted) for audio files by extension; a symlink there that
leads nowhere (broken or looping) is counted in a warning and gets an error row. Files longer
than `--max-seconds` (default: the export's contract, 15 min) get an error row without being
decoded whole. Prints CSV rows
`path,score,raw_score,error` (header first) to stdout as batches finish, and writes the same
table to `--out` when given. `score` is on the label scale when the export stores a calibration
(`--raw`: the raw score; ranks are the same either way); `raw_score` is the net's output. Files
are decoded ahead in DataLoader worker processes, at most a few batches of audio in memory; a
bad file gets a row with its error (and a line on stderr), the others still score, and the exit
status is 1 if any file failed (2 if the export cannot be loaded). A progress bar goes to
stderr on long lists. No Lightning import here, and no torch before the arguments are parsed.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from typing import TYPE_CHECKING, cast

import numpy as np
from tqdm import tqdm

from audiobase.audio import AudioError
from audiobase.files import walk_files, write_text
from audiobase.preprocess import Preprocess

if TYPE_CHECKING:
    from torch.utils.data import Dataset

# what a folder is searched for (PyAV + soundfile decode these)
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".aiff", ".aif", ".wma"}
)
COLUMNS = ("path", "score", "raw_score", "error")
PROGRESS_MIN_FILES = 50  # shorter lists print no progress bar
SHOWN_BROKEN = 3  # broken links a warning names (the error rows name them all)
Item = tuple[str, np.ndarray | None, str | None]  # path, model input [T], error


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Files as given; folders -> their audio files (recursive, sorted by path), including
    the symlinks that lead nowhere (those get error rows). Returns (paths, broken links)."""
    out: list[str] = []
    broken: list[str] = []
    for spec in inputs:
        if os.path.isdir(spec):
            files, dead = walk_files(spec, AUDIO_EXTENSIONS)
            out.extend(sorted(map(str, files + dead)))
            broken.extend(map(str, dead))
        else:
            out.append(spec)  # a missing or unreadable file gets its error row
    return out, broken


def broken_links_warning(broken: list[str]) -> str:
    """One line: how many broken links the folders held, and the first few."""
    shown = ", ".join(broken[:SHOWN_BROKEN]) + (", ..." if len(broken) > SHOWN_BROKEN else "")
    return (
        f"warning: {len(broken)} broken or looping symlink(s) in the folders ({shown}); "
        "each gets an error row"
    )


class PreparedFiles:
    """Index -> (path, model input [T] or None, error or None), decoded in worker processes
    (a map-style dataset: what a DataLoader needs is `__len__` and `__getitem__`)."""

    def __init__(self, paths: list[str], preprocess: Preprocess) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Item:
        path = self.paths[i]
        try:
            return path, self.preprocess(path), None
        except (AudioError, OSError, ValueError) as e:
            return path, None, str(e) or type(e).__name__


def format_row(row: dict[str, str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in COLUMNS])
    return buf.getvalue()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m audioscore.score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("ckpt_dir", help="exported scorer directory (config.yaml + model.safetensors)")
    ap.add_argument("files", nargs="+", help="audio files or folders (walked for audio files)")
    ap.add_argument("--out", help="also write the CSV table here")
    ap.add_argument("--raw", action="store_true", help="score = raw score (no calibration)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="decoding processes (0 = in-process)")
    ap.add_argument(
        "--max-dur", type=float, default=None, help="seconds per clip (default: export's)"
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="longer files are refused before they are decoded whole (default: 900)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.max_seconds is not None and not args.max_seconds > 0:
        print(f"error: --max-seconds must be > 0, got {args.max_seconds}", file=sys.stderr)
        return 2
    # torch and the scorer: ~2 s of import on 2 cores; --help and bad arguments answer without
    from torch.utils.data import DataLoader

    from audioscore.export.scorer import ExportError, load_scorer

    try:
        model = load_scorer(
            args.ckpt_dir, device=args.device, max_dur=args.max_dur, max_seconds=args.max_seconds
        )
    except (ExportError, OSError) as e:
        print(f"error: cannot load scorer: {e}", file=sys.stderr)
        return 2
    paths, broken = expand_inputs(args.files)
    if broken:
        print(broken_links_warning(broken), file=sys.stderr)
    if not paths:
        print(f"error: no audio files in {args.files}", file=sys.stderr)
        return 1
    batch_size = max(1, args.batch_size)
    table = [format_row(dict(zip(COLUMNS, COLUMNS, strict=True)))]
    print(table[0], end="", flush=True)
    failed = extrapolated = 0
    with tqdm(
        total=len(paths), unit="file", file=sys.stderr, disable=len(paths) < PROGRESS_MIN_FILES
    ) as bar:
        # decoded files in input order, in batches; workers keep 2 batches each ready ahead
        files = cast("Dataset[Item]", PreparedFiles(paths, model.plan.preprocess))
        loader: DataLoader[Item] = DataLoader(
            files,
            batch_size=batch_size,
            num_workers=args.workers,
            collate_fn=list,
            prefetch_factor=2 if args.workers > 0 else None,
        )
        for batch in loader:
            ok = [(i, wav) for i, (_, wav, _) in enumerate(batch) if wav is not None]
            raw = np.full(len(batch), np.nan)
            if ok:
                raw[[i for i, _ in ok]] = model.raw_scores([w for _, w in ok], batch_size)
            score = raw if args.raw else model.calibrate(raw)
            if not args.raw and model.calibration is not None:
                extrapolated += int(model.calibration.extrapolated(score[np.isfinite(raw)]).sum())
            for (path, _, err), s, r in zip(batch, score, raw, strict=True):
                if err is None:
                    row = {"path": path, "score": f"{s:.6f}", "raw_score": f"{r:.6f}", "error": ""}
                else:
                    failed += 1
                    row = {"path": path, "score": "", "raw_score": "", "error": err}
                    tqdm.write(f"error: {err}", file=sys.stderr)
                table.append(format_row(row))
                print(table[-1], end="", flush=True)
            bar.update(len(batch))
    if extrapolated:
        print(
            f"note: {extrapolated} score(s) lie outside the label range the calibration saw "
            f"(raw scores past its ends; order is kept)",
            file=sys.stderr,
        )
    if args.out:
        write_text(args.out, "".join(table))
        print(f"wrote {args.out} ({len(paths)} files, {failed} failed)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
