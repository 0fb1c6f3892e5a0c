"""Singer probe of the GE2E voice encoder beside the tiny random CAM++ (docs/timbre.md).

python scripts/probe_ge2e.py outputs/timbre_ge2e/corpora/control/val.json \
    [--campp-weights outputs/timbre_pt/campp_pretrained.bin] [--max-s 1.5 0]

For each groups file and crop (`--max-s`, 0 = whole clips): the cross-validated logistic singer
probe on each encoder's L2-normalised embeddings
(`audioscore.studies.campp_speaker.singer_probe`: C = 1, 5 folds x 5 repeats, margin = accuracy - chance) and the mean cosine similarity of clip pairs of
the same singer and of different singers.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from audiobase.audio import load_audio
from audioscore.data.groups import read_groups
from audioscore.models.components.campp import CamppEncoder, build_tiny_campp_encoder
from audioscore.models.components.ge2e import Ge2eEncoder
from audioscore.studies.campp_speaker import probe_clips


def cosines(encoder, wavs: list[np.ndarray], singers: list[str]) -> tuple[float, float]:
    emb = torch.nn.functional.normalize(encoder.embed_clips([torch.from_numpy(w) for w in wavs]))
    sim = (emb @ emb.T).numpy()
    same = np.equal.outer(np.array(singers), np.array(singers))
    off = ~np.eye(len(singers), dtype=bool)
    return float(sim[same & off].mean()), float(sim[~same].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("groups", nargs="+", help="groups files whose clips carry `singer`")
    ap.add_argument("--campp-weights", help="a (pretrained) CAM++ weights file to compare too")
    ap.add_argument("--max-s", type=float, nargs="+", default=[1.5, 0.0])
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    encoders = {"random CAM++": build_tiny_campp_encoder(seed=0), "GE2E": Ge2eEncoder()}
    if args.campp_weights:
        encoders["pretrained CAM++"] = CamppEncoder(args.campp_weights)
    for groups in args.groups:
        items: dict[str, str] = {}
        for group in read_groups(groups, require_sorted=False):
            for it in group:
                items.setdefault(it["audio_file"], str(it["singer"]))
        files = sorted(items)
        singers = [items[f] for f in files]
        for max_s in args.max_s:
            wavs = [load_audio(f, 24_000, duration=max_s or None) for f in files]
            crop = f"first {max_s:g} s" if max_s else "whole clips"
            for name, enc in encoders.items():
                r = probe_clips(enc, wavs, singers)
                same, diff = cosines(enc, wavs, singers)
                print(f"{groups} ({len(files)} clips, {crop}) {name:16s}: accuracy "
                      f"{r['accuracy']:.3f}, chance {r['chance']:.3f}, margin {r['margin']:+.3f}; "
                      f"cosine same singer {same:.3f}, different {diff:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
