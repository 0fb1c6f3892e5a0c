"""Convert other scorers' checkpoints into this project's exports.

    python -m audioscore.convert legacy SRC OUT [--muq ID_OR_DIR] [--scale raw|legacy] [--full-encoder]

`legacy`: the original scorer's checkpoint directory (`type.txt`, `weights.pt`, `muq_lora.pt`;
read by `audioscore.legacy`, exported by `audioscore.legacy_export.convert_legacy`) -> an export
directory that `load_scorer`, `python -m audioscore.score`, `bench.run model=audioscore` and `init_from=` accept.
The score is higher-is-better (minus the original's musicality logit); `--scale legacy` also
stores the display transform that prints the original's numbers (`5 - (2 tanh(l) + 3)`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from audiobase.weights import DEFAULT_PRETRAINED

SCALES = ("raw", "legacy")  # as `audioscore.legacy_export.SCALES`, which needs torch to import


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audioscore.convert", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="source", required=True)
    p = sub.add_parser("legacy", help="the original scorer's checkpoint directory")
    p.add_argument("src", help="directory with type.txt, weights.pt (and muq_lora.pt)")
    p.add_argument("out", help="export directory to write")
    p.add_argument(
        "--muq",
        default=DEFAULT_PRETRAINED,
        help=f"MuQ hub id or local directory of the base weights (default {DEFAULT_PRETRAINED})",
    )
    p.add_argument(
        "--scale",
        choices=SCALES,
        default="raw",
        help="raw: minus the original's logit (default); legacy: scores print as the original's",
    )
    p.add_argument(
        "--full-encoder",
        action="store_true",
        help="store MuQ's base weights in the export instead of reloading them from --muq",
    )
    args = parser.parse_args(argv)
    # the original's nets (torch, transformers, peft, MuQ): ~8 s of import on 2 cores, which
    # --help and bad arguments answer without
    from audioscore.legacy import LegacyFormatError
    from audioscore.legacy_export import ConvertError, convert_legacy

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = convert_legacy(
            args.src, args.out, muq=args.muq, scale=args.scale, full_encoder=args.full_encoder
        )
    except (LegacyFormatError, ConvertError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported scorer: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
