"""Benchmark plots are written atomically: a process killed while writing a PNG leaves no
half-written PNG under the plot's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from PIL import Image

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from bench.metrics import select_rows
    from bench.plots import make_plots

    rows = json.load(open(sys.argv[1]))
    # the kernel kills this process (SIGXFSZ, which Python ignores by default) when a write
    # passes 2 kB: in the middle of the first PNG
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
    make_plots(select_rows(rows, "test"), sys.argv[2])
    """
)


def test_a_kill_while_writing_a_plot_leaves_no_broken_png(tmp_path):
    rows = [
        {"source": "PAM (music)", "split": "test", "musicality": i % 5 + 1.0,
         "predicted_musicality": 0.1 * i, "audio-path": f"pam/sys{i % 3}/{i}.wav"}
        for i in range(40)
    ]  # fmt: skip
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    out = tmp_path / "plots"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "rows.json"), str(out)],
        env=env,
        capture_output=True,
    )
    assert proc.returncode == -25, proc.stderr.decode()[-2000:]  # SIGXFSZ: killed mid-write
    assert list(out.iterdir()), "the kill did not come while a PNG was written"
    for png in out.glob("[!.]*.png"):  # a PNG under its own name is whole (temps are hidden)
        with Image.open(png) as im:
            im.load()
