"""Our runner against upstream CMI-RewardBench's `inference_benchmark.py`, end to end.

    python scripts/bench_vs_upstream.py --upstream /path/to/CMI-RewardBench \\
        --pythonpath /path/with/pandas --rows 800 80 --repeats 3 --out outputs/bench/vs_upstream

For each `--rows N`: builds a synthetic benchmark of N rows (N/4 per subset) with
`scripts/make_synthetic_corpus.py` (once, under `--work`), then runs our runner and upstream's,
interleaved, `--repeats` pairs (`scripts/bench_throughput.py compare`): the same tiny CMI-RM
weights (`outputs/models/cmi_rm_tiny`, built by our runner on first use; upstream loads them
with its own model code, `--model cmi_rm`), CPU, batch_size 12, max_dur 120, evaluation
included on both sides (plots too on ours). Writes `<out>/rows_<N>.json` (per-run wall and CPU
seconds, medians, per-pair ratios) and prints the medians. Nothing is fetched.

Upstream is not part of this project: point `--upstream` (or `$CMI_REWARDBENCH`) at a checkout
of Haiwen-Xia/CMI-RewardBench; without one the script says so and exits 0 (skipped). Its
evaluator needs pandas, found on this interpreter or in `--pythonpath`; without it: skipped.
Upstream decodes with `torchaudio.load`; where torchaudio has no decoding backend (torchaudio
2.9+ without torchcodec) `scripts/upstream_shim/sitecustomize.py` maps it to PyAV for that
process only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "scripts" / "upstream_shim"
WEIGHTS = ROOT / "outputs" / "models" / "cmi_rm_tiny"


def skip(why: str) -> int:
    print(f"skipped: {why}", file=sys.stderr)
    return 0


def has_module(name: str, pythonpath: str) -> bool:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    code = f"import {name}"
    return (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode == 0
    )


def torchaudio_decodes(wav: Path) -> bool:
    code = f"import torchaudio; torchaudio.load({str(wav)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def corpus(work: Path, rows: int) -> Path:
    """A synthetic benchmark of `rows` rows (rows / 4 per subset), made once."""
    out = work / f"synth_{rows}"
    if not (out / "bench.jsonl").is_file():
        cmd = [
            sys.executable,
            str(ROOT / "scripts" / "make_synthetic_corpus.py"),
            "--out",
            str(out),
        ]
        cmd += ["--clips", "16", "--bench-rows", str(rows // 4)]
        subprocess.run(cmd, check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--upstream", default=os.environ.get("CMI_REWARDBENCH"), help="checkout")
    ap.add_argument("--pythonpath", default="", help="where upstream's pandas is installed")
    ap.add_argument("--rows", type=int, nargs="+", default=[800, 80])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="outputs/bench/vs_upstream/data", help="corpora go here")
    ap.add_argument("--out", default="outputs/bench/vs_upstream")
    a = ap.parse_args(argv)
    up = Path(a.upstream) if a.upstream else None
    if up is None or not (up / "inference_benchmark.py").is_file():
        return skip(
            f"upstream CMI-RewardBench not found ({up or 'no --upstream / $CMI_REWARDBENCH'}): "
            "pass a checkout of Haiwen-Xia/CMI-RewardBench to compare against its runner"
        )
    if not has_module("pandas", a.pythonpath):
        return skip("upstream's evaluator needs pandas: install it and pass --pythonpath DIR")
    work, out = Path(a.work).resolve(), Path(a.out).resolve()
    if not (WEIGHTS / "model.safetensors").is_file():  # our runner builds the tiny weights
        tiny = f"{sys.executable} -m bench.run stage=score output_root={work / 'weights_run'}"
        subprocess.run(
            f"{tiny} dataset.jsonl={corpus(work, 80)}/bench.jsonl dataset.root={corpus(work, 80)}",
            shell=True,
            check=True,
            cwd=ROOT,
        )
    theirs_path = [a.pythonpath]
    sample = next((corpus(work, min(a.rows)) / "audio").rglob("*.wav"), None)
    if sample is not None and not torchaudio_decodes(sample):
        theirs_path.insert(0, str(SHIM))
    for rows in a.rows:
        data = corpus(work, rows)
        q = shlex.quote
        theirs = (
            f"{{python}} inference_benchmark.py --model cmi_rm "
            f"--checkpoint {q(str(WEIGHTS / 'model.safetensors'))} --device cpu "
            f"--dataset_jsonl {q(str(data / 'bench.jsonl'))} --dataset_root {q(str(data))} "
            "--output_dir {out} --batch_size 12 --max_dur 120"
        )
        cmd = [sys.executable, str(ROOT / "scripts" / "bench_throughput.py"), "compare"]
        cmd += ["--repeats", str(a.repeats), "--out", str(out / f"rows_{rows}.json")]
        cmd += ["--ours-cwd", str(ROOT)]
        cmd += ["--ours-override", f"dataset.jsonl={data / 'bench.jsonl'}"]
        cmd += ["--ours-override", f"dataset.root={data}"]
        cmd += ["--ours-override", f"model.checkpoint={WEIGHTS}"]
        cmd += ["--theirs", theirs, "--theirs-cwd", str(up)]
        cmd += ["--theirs-env", "PYTHONPATH=" + os.pathsep.join(filter(None, theirs_path))]
        print(f"== {rows} rows ==", flush=True)
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
