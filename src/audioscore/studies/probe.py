"""Linear probe for singer identity on an exported scorer's pooled representation.

    python scripts/probe_singer.py outputs/train/muq_lora/<run>/export data/synth/val.json

Loads the export (`audioscore.export.load_net`), runs the held-out clips of a groups file
through it exactly as `score_batch` prepares them (centre crop, loudness), collects `pooled`
[N, P], and fits a standardised logistic regression with stratified k-fold cross-validation.
Prints accuracy, chance (majority-class rate) and the margin above chance; `--out` also writes
the result as JSON. A GRL run should leave a much smaller margin than its no-GRL twin.

`--part`: `audio` (default) probes the MuQ part only, i.e. drops the CAM++ dims that plan B
appends (a frozen speaker embedding identifies singers by design); `all` probes everything;
`timbre` only the CAM++ dims.

EXPORT may also be a Lightning checkpoint of a run (e.g. RUN/checkpoints/last.ckpt): it is first
exported next to the run as RUN/export_<name> from the run's saved config.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.utils import instantiate
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from audiobase.audio import AudioError
from audiobase.files import write_json
from audioscore.data.groups import read_groups
from audioscore.export import equal_length_batches, export_scorer, load_scorer
from audioscore.models.components.scorer import VocalScorer
from audioscore.safe_config import UntrustedInputError, read_yaml, resolve_stored


def read_clips(groups_file: str, root: str | None = None) -> list[dict[str, Any]]:
    """Unique clips with a singer label from a groups file."""
    seen: dict[str, dict[str, Any]] = {}
    for group in read_groups(groups_file, root=root, require_sorted=False):
        for item in group:
            if item.get("singer") is not None:
                seen.setdefault(item["audio_file"], item)
    if not seen:
        raise ValueError(f"{groups_file}: no clip carries a `singer` field; nothing to probe")
    return list(seen.values())


@torch.inference_mode()
def pooled_features(
    net: torch.nn.Module,
    prepare: Callable[[str], np.ndarray],
    paths: list[str],
    batch_size: int = 8,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """Run clips prepared by `prepare` (a `Preprocess` contract) through a `VocalScorer`.

    Returns (pooled [N_ok, P], raw scores [N_ok], ok indices, failures) for the clips that decode.
    """
    wavs, ok, failures = [], [], []
    for i, p in enumerate(paths):
        try:
            wavs.append(prepare(p))
            ok.append(i)
        except (AudioError, OSError, ValueError) as e:  # record and carry on
            failures.append(f"{p}: {e}")
    was_training = net.training
    net.eval()
    pooled: list[Any] = [None] * len(wavs)
    scores = np.zeros(len(wavs))
    for idx in equal_length_batches([len(w) for w in wavs], batch_size):
        x = torch.from_numpy(np.stack([wavs[j] for j in idx])).to(device)  # [B, T]
        lengths = torch.full((len(idx),), x.shape[1], dtype=torch.long, device=device)
        out = net(x, lengths)
        rows = out["pooled"].float().cpu().numpy()  # [B, P]
        for j, row, sc in zip(idx, rows, out["score"].float().cpu().numpy(), strict=True):
            pooled[j], scores[j] = row, sc
    net.train(was_training)
    return np.stack(pooled), scores, ok, failures


def extract_pooled(
    export_dir: str, paths: list[str], batch_size: int = 8, device: str = "cpu"
) -> tuple[np.ndarray, list[int], list[str], int]:
    """pooled [N_ok, P] for the clips that decode; returns (pooled, ok indices, failures, E)."""
    scorer = load_scorer(export_dir, device)
    pooled, _, ok, failures = pooled_features(scorer.net, scorer.prepare, paths, batch_size, device)
    e_dim = cast(VocalScorer, scorer.net).head.extra_dim  # clip timbre dims, appended last
    return pooled, ok, failures, e_dim


def select_part(pooled: np.ndarray, timbre_dim: int, part: str) -> np.ndarray:
    """The slice of pooled to probe; plan B's head appends the timbre embedding last."""
    if part == "all" or timbre_dim == 0:
        if part == "timbre":
            raise ValueError("--part timbre needs a scorer with a timbre branch")
        return pooled
    if part == "audio":
        return pooled[:, :-timbre_dim]
    if part == "timbre":
        return pooled[:, -timbre_dim:]
    raise ValueError(f"--part must be audio, all or timbre, got {part!r}")


def fit_probe(
    x: np.ndarray,
    labels: list[str],
    folds: int = 5,
    seed: int = 0,
    repeats: int = 10,
    C: float = 1.0,
) -> dict[str, float]:
    """Cross-validated logistic-regression accuracy vs majority-class chance.

    With few held-out clips one k-fold split is noisy; `repeats` reshuffled splits are averaged.
    `C`: inverse L2 penalty on standardised features (1 = the acceptance probe; a large C, e.g.
    1e4, is a nearly unregularised probe that also reads low-variance directions).
    """
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    counts = np.bincount(y)
    folds = int(min(folds, counts.min()))
    if folds < 2:
        raise ValueError(f"need >= 2 clips per singer for cross-validation, got counts {counts}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=C))
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    acc = cross_val_score(clf, x, y, cv=cv, scoring="accuracy")
    chance = float(counts.max() / counts.sum())
    return {
        "accuracy": float(acc.mean()),
        "accuracy_std": float(acc.std()),
        "chance": chance,
        "margin": float(acc.mean()) - chance,
        "folds": folds,
        "repeats": repeats,
        "n_clips": int(len(y)),
        "n_singers": int(len(counts)),
        "dim": int(x.shape[1]),
        "C": float(C),
    }


def export_checkpoint(ckpt: str | os.PathLike) -> Path:
    """RUN/checkpoints/X.ckpt -> RUN/export_X (built from RUN/.hydra/config.yaml)."""
    ckpt = Path(ckpt)
    run_dir = ckpt.parent.parent
    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{ckpt}: no run config at {cfg_file}")
    # a run config is data from disk: resolved once, with harmless resolvers only, and only
    # the project's own components may be built from it (audioscore.safe_config)
    stored = resolve_stored(read_yaml(cfg_file), str(cfg_file), ("model.net", "data.preprocess"))
    net_config, pre_config = stored["model.net"], stored["data.preprocess"]
    net = instantiate(net_config, _convert_="all")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    pre = instantiate(pre_config)
    out = run_dir / f"export_{ckpt.stem}"
    return export_scorer(net.eval(), out, net_config=net_config, preprocess=pre)


def probe(
    export_dir: str,
    groups_file: str,
    *,
    root: str | None = None,
    part: str = "audio",
    folds: int = 5,
    seed: int = 0,
    repeats: int = 10,
    batch_size: int = 8,
    C: float = 1.0,
) -> dict[str, Any]:
    if str(export_dir).endswith(".ckpt"):
        export_dir = str(export_checkpoint(export_dir))
    clips = read_clips(groups_file, root)
    pooled, ok, failures, e_dim = extract_pooled(
        export_dir, [c["audio_file"] for c in clips], batch_size
    )
    x = select_part(pooled, e_dim, part)
    res: dict[str, Any] = fit_probe(x, [clips[i]["singer"] for i in ok], folds, seed, repeats, C)
    res.update(export=str(export_dir), groups=str(groups_file), part=part, failures=failures)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("groups_file", help="held-out clips with `singer` (e.g. data/synth/val.json)")
    ap.add_argument("--root", default=None, help="folder relative audio paths resolve against")
    ap.add_argument("--part", default="audio", choices=["audio", "all", "timbre"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=10, help="reshuffled k-fold repeats")
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 penalty (1e4: ~unregularised)")
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    try:
        res = probe(
            args.export_dir,
            args.groups_file,
            root=args.root,
            part=args.part,
            folds=args.folds,
            seed=args.seed,
            repeats=args.repeats,
            C=args.C,
        )
    except (UntrustedInputError, FileNotFoundError) as e:
        print(f"probe: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for f in res["failures"]:
        print(f"skipped {f}", file=sys.stderr)
    print(
        f"singer probe ({res['part']}, {res['dim']}-d, {res['n_clips']} clips, "
        f"{res['n_singers']} singers, {res['folds']}-fold x{res['repeats']}, C={res['C']:g}): accuracy {res['accuracy']:.3f} "
        f"± {res['accuracy_std']:.3f} vs chance {res['chance']:.3f} "
        f"(margin {res['margin']:+.3f})"
    )
    if args.out:
        write_json(args.out, res)


if __name__ == "__main__":
    main()
