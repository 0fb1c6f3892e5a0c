"""Every command README.md prints in a code block, run as printed.

The workspace stands for a fresh clone after `make demo` (a small synthetic corpus in
data/synth, exports of both plans in outputs/demo, a few user clips). A command whose README
line needs something more (weights a user downloads, their own checkpoint, a running server)
gets a tiny stand-in built with the real loading path's format (`needs`); first it runs without
it and must stop in one line naming what to do (`missing`). Hub weights that cannot exist here
(MuQ-large, real data) stop in that one line (`stops`). Training commands get
`trainer.max_steps=4` appended: the only change to a printed command, to bound the run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_CORPUS
from helpers.legacy import write_legacy_checkpoint
from helpers.routes import make_tiny_export, write_clips

from audiobase.audio import save_audio
from audiobase.muq import build_tiny_muq_dir
from audioscore.synth import make_corpus
from rewards.cmi_rm.tiny import build_tiny_cmi_rm
from rewards.songeval import build_tiny_songeval

ROOT = Path(__file__).resolve().parents[1]
SHORT_TRAINING = "trainer.max_steps=4"


@dataclass(frozen=True)
class Case:
    needs: tuple[str, ...] = ()  # stand-ins for what the README line says a user brings
    missing: str = ""  # the one-line error without `needs` names this
    stops: str = ""  # with `needs`, still a one-line exit 2 naming this (weights not here)
    skip: str = ""  # why this line cannot run on a test machine (and what covers it)


# the README's commands, in README order; placeholders are filled by `fill`
CASES: dict[str, Case] = {
    "make demo": Case(skip="the workspace below is a small `make demo`; tests of each step"),
    "make test": Case(skip="this suite"),
    "python -m audioscore.train experiment=muq_lora": Case(stops="data.train_files"),
    "python -m audioscore.train experiment=hybrid_campp trainer.devices=4": Case(
        stops="data.train_files"
    ),
    "python -m audioscore.train experiment=muq_lora debug=tiny": Case(),
    "python -m audioscore.export outputs/train/muq_lora/<run> --ckpt last": Case(),
    "srun python -m audioscore.train experiment=hybrid_campp trainer=ddp": Case(
        skip="SLURM; tests/test_multinode.py trains 2 nodes with torchrun"
    ),
    "python -m audioscore.score outputs/demo/plan_a/export a.m4a b.wav": Case(),
    "python -m audioscore.score outputs/demo/plan_a/export songs/ --out scores.csv": Case(),
    "python -m audioscore.score outputs/demo/plan_a/export songs/ --raw": Case(),
    "python -m audioscore.convert legacy ckpts/best_model_step_132000 ckpts/legacy_export": Case(
        needs=("legacy",), missing="best_model_step_132000", stops="--muq"
    ),
    "python -m audioscore.convert legacy SRC OUT --scale legacy": Case(
        needs=("legacy",), stops="--muq"
    ),
    "python -m audioscore.convert legacy SRC OUT --muq ckpts/MuQ-large-msd-iter --full-encoder": (
        Case(needs=("legacy", "muq"))
    ),
    "python -m bench.run model=cmi_rm": Case(needs=("cmi_rm",), missing="model.checkpoint="),
    "python -m bench.run model=cmi_rm dataset=cmi_rewardbench": Case(
        needs=("cmi_rm",), stops="dataset.jsonl="
    ),
    "python -m bench.run model=audioscore": Case(),
    "python -m bench.run model=songeval": Case(
        needs=("songeval",), missing="model.checkpoint=", stops="model.muq="
    ),
    "python -m bench.run -m model=dnsmos,pitch": Case(),
    "python -m bench.run model=custom model.class_path=my_pkg.my_mod:MyModel "
    "'+model.init_kwargs.sr=24000'": Case(needs=("custom",), missing="my_pkg"),
    "python -m bench.run model=http model.url=http://127.0.0.1:8000/score "
    "model.api_key_env=MY_KEY": Case(needs=("server",)),
    "python -m bench.run -m model=cmi_rm_tiny,audioscore": Case(),
    "python -m bench.run model=cmi_rm trainer.devices=4": Case(needs=("cmi_rm",)),
    "python -m bench.run model=cmi_rm subset=CMI-Pref stage=score": Case(needs=("cmi_rm",)),
    "python -m bench.run model=cmi_rm stage=evaluate": Case(needs=("cmi_rm",)),
    "python -m bench.run model=cmi_rm preset=upstream": Case(needs=("cmi_rm",)),
    "python -m bench.evaluate outputs/bench/cmi_rm/synth/results.jsonl": Case(),
    "python scripts/bench_throughput.py model=cmi_rm_tiny": Case(),
    "python scripts/bench_throughput.py compare --theirs '...'": Case(
        skip="needs another runner's command line; tests/test_bench_throughput_compare.py"
    ),
    "python -m rewards.serve --model cmi_rm_tiny --port 8000": Case(),
}


def readme_commands() -> list[str]:
    """Command lines of README.md's ```bash blocks, comments cut; a continued line (`\\`) is
    named by its first line."""
    lines, inside, lang = [], False, ""
    for raw in (ROOT / "README.md").read_text().splitlines():
        if raw.startswith("```"):
            inside, lang = not inside, raw[3:].strip()
            continue
        if inside and lang == "bash":
            line = re.sub(r"\s+#.*$", "", raw).rstrip(" \\").strip()
            if line and not line.startswith(("#", "data.", "data_")) and not raw[:1].isspace():
                lines.append(line)
    return lines


def case_of(command: str) -> tuple[str, Case]:
    for key, case in CASES.items():
        if command == key or (command.startswith(key) and key.startswith("srun")):
            return key, case
    raise KeyError(command)


def test_every_readme_command_has_a_case():
    """A command added to (or changed in) README.md must be added here, and a case whose
    command left the README goes with it."""
    printed = readme_commands()
    unknown = [c for c in printed if not any(c == k or c.startswith(k) for k in CASES)]
    assert not unknown, f"README commands without a case in {Path(__file__).name}: {unknown}"
    gone = [k for k in CASES if not any(c == k or c.startswith(k) for c in printed)]
    assert not gone, f"cases for commands README.md no longer prints: {gone}"


# --- running them ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A fresh clone after a small `make demo`: corpus, both plans' exports, user clips."""
    ws = tmp_path_factory.mktemp("clone")
    (ws / "scripts").symlink_to(ROOT / "scripts")  # the clone's scripts
    make_corpus(ws / "data" / "synth", **SMALL_CORPUS)
    for plan in ("plan_a", "plan_b"):
        make_tiny_export(ws / "outputs" / "demo" / plan)
    clips = write_clips(ws / "songs")
    shutil.copy(clips[0], ws / "b.wav")
    t = np.arange(24_000) / 24_000
    save_audio(ws / "a.m4a", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24_000)
    return ws


def provide(need: str, ws: Path) -> None:
    """A tiny stand-in, in the format and at the path the README names."""
    if need == "cmi_rm":
        build_tiny_cmi_rm(ws / "ckpts" / "CMI-RM")
    elif need == "songeval":
        build_tiny_songeval(ws / "ckpts" / "SongEval")
    elif need == "muq":
        build_tiny_muq_dir(ws / "ckpts" / "MuQ-large-msd-iter", depth=8)
    elif need == "legacy":
        write_legacy_checkpoint(
            ws / "ckpts" / "best_model_step_132000", dim=32, depth=8, r=4, alpha=8, hidden=64
        )
    elif need == "custom":
        (ws / "my_pkg").mkdir(exist_ok=True)
        (ws / "my_pkg" / "__init__.py").write_text("")
        (ws / "my_pkg" / "my_mod.py").write_text(
            "import numpy as np\n\n\n"
            "class MyModel:\n"
            "    def __init__(self, sr, checkpoint=None, device='cpu'):\n"
            "        self.sr = sr\n\n"
            "    def score_batch(self, inputs, batch_size=1, max_dur=None, **kw):\n"
            "        wavs = [np.asarray(x.audio, dtype=np.float64) for x in inputs]\n"
            "        rms = [float(np.sqrt(np.mean(w**2))) for w in wavs]\n"
            "        return np.array([[r, r] for r in rms])\n"
        )
    elif need == "server":
        pass  # started around the command: see `serving`
    else:
        raise ValueError(need)


def environment() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the active venv
    env["MY_KEY"] = "secret-for-the-test"
    env.pop("CMI_RM_CHECKPOINT", None)
    env.pop("SONGEVAL_CHECKPOINT", None)
    env.pop("AUDIOSCORE_CHECKPOINT", None)
    return env


def fill(command: str, ws: Path) -> str:
    """The README's placeholders: a finished run, a user's checkpoint and an output folder."""
    if "<run>" in command:
        runs = sorted((ws / "outputs" / "train" / "muq_lora").iterdir())
        assert runs, "the debug=tiny training command runs first and leaves a run"
        command = command.replace("outputs/train/muq_lora/<run>", str(runs[-1].relative_to(ws)))
    if " SRC OUT" in command:
        out = f"ckpts/export_{len(list(ws.glob('ckpts/export_*')))}"
        command = command.replace(" SRC OUT", f" ckpts/best_model_step_132000 {out}")
    if "audioscore.train" in command:
        command += f" {SHORT_TRAINING}"
    return command


def run(command: str, ws: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, shell=True, cwd=ws, env=environment(), capture_output=True, text=True, timeout=900
    )


def assert_one_line_stop(proc: subprocess.CompletedProcess, names: str, command: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, (command, proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, (command, proc.stderr[-3000:])
    assert len(lines) == 1 and names in lines[0], (command, names, proc.stderr[-3000:])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_server(ws: Path) -> subprocess.Popen:
    """`python -m rewards.serve --model cmi_rm_tiny --port 8000`, as printed; returns once it
    answers /health."""
    if not port_free(8000):
        pytest.skip("port 8000 is taken on this machine (the README's command binds it)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewards.serve", "--model", "cmi_rm_tiny", "--port", "8000"],
        cwd=ws,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the server prints its address once it listens
        if "8000" in line and "http" in line.lower():
            break
    else:
        raise AssertionError(f"server exited {proc.wait()} before listening")
    with urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=60) as r:
        assert r.status == 200
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("command", list(CASES))
def test_readme_command_runs_as_printed(command, workspace):
    case = CASES[command]
    if case.skip:
        pytest.skip(case.skip)
    ws = workspace
    if command.startswith("python -m rewards.serve"):
        stop_server(start_server(ws))
        return
    if case.missing:
        bare = run(fill(command, ws), ws)
        assert_one_line_stop(bare, case.missing, command)
    for need in case.needs:
        provide(need, ws)
    server = start_server(ws) if "server" in case.needs else None
    try:
        proc = run(fill(command, ws), ws)
    finally:
        if server is not None:
            stop_server(server)
    if case.stops:
        assert_one_line_stop(proc, case.stops, command)
    else:
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr, (command, proc.stderr[-3000:])
