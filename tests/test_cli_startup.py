"""`--help` of every command-line tool the docs print answers without loading the heavy
libraries (torch, Lightning, transformers, peft, scikit-learn): those cost seconds of import
each and only the chosen job needs them. Checked on the modules a run loaded, not on a clock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OURS = ("audiobase", "audioscore", "rewards", "bench")
HEAVY = ("torch", "lightning", "transformers", "peft", "sklearn")

PROBE = """
import json, runpy, sys
HEAVY = set(json.loads(sys.argv[2]))
sys.argv = [sys.argv[1], "--help"]
code = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code or 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & HEAVY)
print("\\n@@", json.dumps({"code": code, "heavy": heavy}))
"""


def printed_clis() -> list[str]:
    """Every `python -m MODULE` of ours the docs print."""
    mods = set()
    for doc in DOCS:
        for mod in re.findall(r"python -m ([A-Za-z_][\w.]*)", doc.read_text()):
            if mod.split(".")[0] in OURS:
                mods.add(mod)
    return sorted(mods)


def test_the_docs_print_the_main_clis():
    assert {"audioscore.train", "audioscore.score", "bench.run", "rewards.serve"} <= set(
        printed_clis()
    )


@pytest.mark.parametrize("module", printed_clis())
def test_help_loads_no_heavy_library(module):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    tail = proc.stdout.rsplit("@@", 1)
    assert len(tail) == 2, (module, proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(tail[1])
    assert result["code"] == 0, (module, proc.stderr[-3000:])
    assert "usage" in tail[0].lower() or "== Config ==" in tail[0], (module, tail[0][:500])
    assert result["heavy"] == [], f"python -m {module} --help imports {result['heavy']}"
