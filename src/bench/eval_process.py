"""A scoring run's evaluation in a child process started with the run (`bench.eval_child`).

Computing the metrics needs scipy.stats and drawing the plots matplotlib: about 1.4 CPU-s of
imports on the 2-core project machine, which in the runner's process would hold Python's lock
the scoring threads need, and on an 80-row run finished after the last batch. The child
imports them on the core that the model's build leaves to the decoding workers, then gets the
compacted rows, writes every metrics file (`bench.evaluate.evaluate_rows`) while forked
copies of it draw the plots, and answers with metrics.json's content. If the child fails, the
evaluation runs here instead, with the same files and the same error if it fails again.
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
MAX_WAYS = 4  # forked drawing copies: ten plots, a fifth copy would mostly wait
# how far below the caller the child runs when not told: the lowest priority (bench.run tells
# it bench.yaml's decode_nice, the decoding workers' step, 0 by default)
NICE = 19


class EvalProcess:
    """`python -m bench.eval_child` waiting on stdin for a job; `evaluate` (or `submit`, then
    `result`); `close` stops a child never used."""

    def __init__(self, nice: int = NICE, ways: int | None = None) -> None:
        # one drawing copy per core: they run while the child computes the metrics
        ways = ways or max(1, min(MAX_WAYS, os.cpu_count() or 1))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
        self.proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "bench.eval_child", str(nice), str(ways)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.job: tuple[list[dict[str, Any]], Path, dict[str, Any], str] | None = None

    def evaluate(
        self, rows: Sequence[dict[str, Any]], out_dir: str | Path, **kwargs: Any
    ) -> dict[str, Any]:
        """`bench.evaluate.evaluate_rows(rows, out_dir, **kwargs)`, run by the child."""
        self.submit(rows, out_dir, **kwargs)
        return self.result()

    def submit(self, rows: Sequence[dict[str, Any]], out_dir: str | Path, **kwargs: Any) -> None:
        """Hand the child the rows to evaluate into `out_dir`; returns at once."""
        fd, name = tempfile.mkstemp(prefix="bench_eval_rows_", suffix=".json")
        rows = list(rows)
        with os.fdopen(fd, "w") as f:
            json.dump({"rows": rows, "out_dir": str(out_dir), "kwargs": kwargs}, f, default=str)
        self.job = (rows, Path(out_dir), kwargs, name)
        try:
            assert self.proc is not None and self.proc.stdin is not None
            self.proc.stdin.write(name + "\n")
            self.proc.stdin.flush()  # the child reads one line; communicate() closes the pipe
        except (OSError, ValueError):  # the child is gone: result() evaluates here
            pass

    def result(self) -> dict[str, Any]:
        """metrics.json's content once the child has written every file (evaluated here if
        the child failed)."""
        if self.job is None:
            raise RuntimeError("EvalProcess.result() before submit()")
        rows, out_dir, kwargs, name = self.job
        proc, self.proc = self.proc, None
        try:
            metrics = self._wait(proc) if proc is not None else None
        finally:
            Path(name).unlink(missing_ok=True)
        if metrics is not None:
            return metrics
        # fallback only: importing the metrics' and plots' libraries here is what the child
        # is for (see the top)
        from bench.evaluate import evaluate_rows

        return evaluate_rows(rows, out_dir, **kwargs)

    @staticmethod
    def _wait(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
        out, err = proc.communicate()
        if proc.returncode == 0:
            try:
                return dict(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError, TypeError):
                err = f"unreadable answer {out[-500:]!r}"
        log.warning(
            "evaluation process failed (exit %s): %s; evaluating here instead",
            proc.returncode,
            err.strip()[-2000:],
        )
        return None

    def close(self) -> None:
        """Stop the child if it was never used (a failed or refused run)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()
        if self.job is not None:
            Path(self.job[3]).unlink(missing_ok=True)
