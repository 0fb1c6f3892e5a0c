"""Plots drawn off the critical path: `bench.plots` in child processes started with the run.

Importing matplotlib and drawing the PNGs takes seconds (about 1.7 s + 1.0 s for the ten plots
of the synthetic set on the 2-core project machine). The runner starts `PlotProcess` when a run
begins: its children (one per two cores, at most `MAX_CHILDREN`, at the lowest CPU priority)
import matplotlib on whatever the model and the decoding workers leave idle, then share the
drawing of the compacted rows while the runner computes the metrics. The files are the ones `bench.plots.make_plots` writes in-process, which is also the
fallback if a child fails.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SRC = str(Path(__file__).resolve().parents[1])  # the folder holding the `bench` package
MAX_CHILDREN = 2  # ten plots: a third child's matplotlib import would cost more than it saves
MAX_WAYS = 4  # forked drawing copies per child
# children run at the lowest priority: their imports fill the cores that the model and the
# decoding workers (bench.yaml decode_nice) leave idle instead of slowing them
NICE = 19


class PlotProcess:
    """`python -m bench.plots k n` children waiting on stdin for a rows file; `submit`, then
    `result`; `close` stops children never used."""

    def __init__(self, children: int | None = None, nice: int = NICE) -> None:
        # one child per two cores: on 2 cores a second child's matplotlib import cost more CPU than
        # its share of the drawing saved
        n = children or max(1, min(MAX_CHILDREN, (os.cpu_count() or 1) // 2))
        # at drawing time each child forks copies of itself for the idle cores (no new import)
        ways = max(1, min(MAX_WAYS, (os.cpu_count() or 1) // n))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
        self.procs: list[subprocess.Popen[str]] = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.plots", str(k), str(n), str(nice), str(ways)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for k in range(n)
        ]
        self.job: tuple[list[dict[str, Any]], Path, str] | None = None

    def submit(self, rows: Sequence[dict[str, Any]], out_dir: str | Path) -> None:
        """Hand the children the rows to draw into `out_dir`; returns at once."""
        fd, name = tempfile.mkstemp(prefix="bench_plot_rows_", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"rows": list(rows), "out_dir": str(out_dir)}, f)
        self.job = (list(rows), Path(out_dir), name)
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write(name + "\n")
                proc.stdin.flush()  # a child reads one line; communicate() closes the pipe
            except (OSError, ValueError):  # that child is gone: result() draws here
                pass

    def result(self) -> list[Path]:
        """The PNGs written, in `make_plots`'s order (waits for the children); drawn in this
        process if a child failed."""
        if self.job is None:
            raise RuntimeError("PlotProcess.result() before submit()")
        rows, out_dir, name = self.job
        procs, self.procs = self.procs, []
        try:
            parts = [self._wait(p) for p in procs]
        finally:
            Path(name).unlink(missing_ok=True)
        done = [p for p in parts if p is not None]
        if not procs or len(done) < len(parts):
            from bench.plots import make_plots  # fallback only: matplotlib is slow to import

            return make_plots(rows, out_dir)
        n = len(done)  # child k drew plots k, k + n, ...: put them back in order
        ordered = [done[i % n][i // n] for i in range(sum(len(p) for p in done))]
        return [Path(p) for p in ordered if p is not None]

    @staticmethod
    def _wait(proc: subprocess.Popen[str]) -> list[str | None] | None:
        out, err = proc.communicate()
        if proc.returncode == 0:
            try:
                return list(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                err = f"unreadable answer {out[-500:]!r}"
        log.warning(
            "plot process failed (exit %s): %s; drawing the plots here instead",
            proc.returncode,
            err.strip()[-2000:],
        )
        return None

    def close(self) -> None:
        """Stop the children if they were never used (a failed or refused run)."""
        procs, self.procs = self.procs, []
        for proc in procs:
            proc.kill()
            proc.communicate()
        if self.job is not None:
            Path(self.job[2]).unlink(missing_ok=True)
