"""scripts/bench_throughput.py compare: two commands, interleaved, medians, one JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "bench_throughput.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
# a fake runner: logs its side to a shared file, leaves a statistics.json or a timing.json
FAKE = (
    "import json, sys, pathlib; side, out, log = sys.argv[1:4]; "
    "open(log, 'a').write(side + ' ' + ' '.join(sys.argv[4:]) + '\\n'); "
    "o = pathlib.Path(out) / 'm' / 'd'; o.mkdir(parents=True); "
    "stats = {'run': {'audio_seconds': 100.0, 'wall_s': 2.0}}; "
    "timing = {'scoring_s': 4.0}; "
    "(o / ('statistics.json' if side == 'ours' else 'timing.json')).write_text("
    "json.dumps(stats if side == 'ours' else timing))"
)


def compare(
    tmp_path: Path, theirs_extra: str = "", repeats: int = 3
) -> subprocess.CompletedProcess:
    log = tmp_path / "order.log"
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "compare",
            "--repeats",
            str(repeats),
            "--out",
            str(tmp_path / "cmp.json"),
            "--ours",
            f"{{python}} {fake} ours {{out}} {log}",
            "--ours-override",
            "dataset.root=x y",
            "--theirs",
            f"{{python}} {fake} theirs {{out}} {log} $MARK{theirs_extra}",
            "--theirs-env",
            "MARK=m-{out}",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_interleaved_runs_medians_and_scoring_rates(tmp_path):
    p = compare(tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = (tmp_path / "order.log").read_text().splitlines()
    assert [x.split()[0] for x in lines] == ["ours", "theirs"] * 3  # interleaved
    assert all(x.endswith("dataset.root=x y") for x in lines[::2])  # override appended, quoted
    assert all("m-" in x and "bench_throughput_theirs_" in x for x in lines[1::2])  # env, {out}
    r = json.loads((tmp_path / "cmp.json").read_text())
    assert [x["side"] for x in r["runs"]] == ["ours", "theirs"] * 3
    ours, theirs = r["sides"]["ours"], r["sides"]["theirs"]
    assert ours["runs"] == theirs["runs"] == 3
    assert ours["scoring_audio_s_per_s"]["median"] == pytest.approx(50.0)  # 100 s / 2 s
    assert theirs["scoring_audio_s_per_s"]["median"] == pytest.approx(25.0)  # ours' audio / 4 s
    assert r["speedup_scoring"] == pytest.approx(2.0)
    w = ours["wall_s"]
    assert w["min"] <= w["median"] <= w["max"]
    assert r["speedup_e2e"] == pytest.approx(theirs["wall_s"]["median"] / w["median"])
    assert len(r["speedup_e2e_per_pair"]) == 3
    assert "wall_s (model build + scoring)" in ours["scoring_from"][0]


def test_a_failing_command_is_reported(tmp_path):
    p = compare(tmp_path, theirs_extra=" && exit 7", repeats=1)
    assert p.returncode == 1
    r = json.loads((tmp_path / "cmp.json").read_text())
    assert r["sides"]["theirs"]["failed_runs"] == 1 and r["runs"][1]["rc"] == 7


def test_upstream_comparison_skips_without_a_checkout(tmp_path):
    script = SCRIPT.parent / "bench_vs_upstream.py"
    env = {k: v for k, v in ENV.items() if k != "CMI_REWARDBENCH"}
    p = subprocess.run(
        [sys.executable, str(script), "--upstream", str(tmp_path / "none"), "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0
    assert "skipped: upstream CMI-RewardBench not found" in p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing built or run


def test_compare_records_cpu_seconds_per_run(tmp_path):
    p = compare(tmp_path, repeats=1)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "cmp.json").read_text())
    assert all(r["cpu_s"] > 0 for r in report["runs"])  # each fake run starts an interpreter
    assert report["cpu_ratio"] > 0
