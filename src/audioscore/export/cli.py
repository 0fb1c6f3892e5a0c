"""`python -m audioscore.export RUN_DIR [--ckpt best|last|PATH] [--out DIR]`: the arguments are
parsed before `audioscore.export.run` (torch, Lightning, the DataModule) is imported."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m audioscore.export",
        description="Export a finished training run's checkpoint as a scorer folder "
        "(python -m audioscore.export RUN_DIR [--ckpt best|last|PATH] [--out DIR])",
    )
    ap.add_argument("run_dir", help="a training run folder (holds .hydra/ and checkpoints/)")
    ap.add_argument("--ckpt", default="best", help="best (default), last, or a .ckpt path")
    ap.add_argument("--out", default=None, help="default: RUN_DIR/export_<checkpoint name>")
    args = ap.parse_args(argv)
    # torch + Lightning + transformers: ~9 s of import on 2 cores; --help answers without them
    from audioscore.export.run import export_run
    from audioscore.safe_config import UntrustedInputError

    try:
        dest = export_run(args.run_dir, args.ckpt, args.out)
    except UntrustedInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported scorer: {dest}")
    return 0
