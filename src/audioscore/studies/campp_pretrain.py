"""A tiny CAM++ trained for speaker identity on synthetic singers (docs/timbre.md), and its
singer probe: the command line of `audioscore.studies.campp_speaker`.

    python -m audioscore.studies.campp_pretrain --out campp.bin \
        --probe outputs/timbre/corpora/control/val.json
    python -m audioscore.studies.campp_pretrain --weights campp.bin --probe <groups.json>  # no training
"""

from __future__ import annotations

import argparse
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", help="train with the default settings and write the weights here")
    ap.add_argument("--weights", help="an existing CAM++ weights file (instead of --out)")
    ap.add_argument("--probe", nargs="*", default=[], help="groups files whose clips are probed")
    ap.add_argument("--max-s", type=float, default=1.5, help="seconds of each clip (the crop)")
    args = ap.parse_args(argv)
    if bool(args.out) == bool(args.weights):
        ap.error("give one of --out and --weights")
    # torch, torchaudio, scikit-learn and the synthetic corpus: ~4 s of import on 2 cores,
    # which --help and bad arguments answer without
    import torch

    from audioscore.models.components.campp import CamppEncoder, build_tiny_campp_encoder
    from audioscore.studies.campp_speaker import pretrain_campp, singer_probe

    torch.set_num_threads(1)
    res: dict[str, Any] = {}
    if args.out:
        res["fit"] = pretrain_campp(args.out)
        print(f"trained: {res['fit']}")
    encoders = {
        "random": build_tiny_campp_encoder(seed=0),
        "pretrained": CamppEncoder(str(args.out or args.weights)),
    }
    for groups in args.probe:
        for name, enc in encoders.items():
            r = singer_probe(enc, groups, max_s=args.max_s)
            res[f"{groups}:{name}"] = r
            print(f"{groups} {name:10s}: accuracy {r['accuracy']:.3f}, chance {r['chance']:.3f}, "
                  f"margin {r['margin']:+.3f}")  # fmt: skip
    return res


if __name__ == "__main__":
    main()
