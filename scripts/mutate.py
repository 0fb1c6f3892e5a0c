"""Mutation testing of the modules that hold contracts (mutmut 3.x), one module at a time.

    python scripts/mutate.py                     # every module in MODULES, then the report
    python scripts/mutate.py preprocess judge    # only these (names or slugs of MODULES)
    python scripts/mutate.py --report            # rewrite docs/mutation.md from saved results
    python scripts/mutate.py --list              # the modules and their test selections

mutmut reads its settings from `pyproject.toml` in the directory it runs in and mutates
everything under `source_paths`, choosing tests for a mutant from the tests that ran its
function. To scope each module to its own fast tests, this driver gives every module its own
work directory `mutants/<slug>/` (symlinks to src/, tests/, conf/, scripts/ and a pyproject.toml
with a `[tool.mutmut]` table naming only that module and its tests), runs `mutmut run` there and
saves the verdicts to `mutants/<slug>/summary.json`. `--report` turns the summaries and the
reasons in `docs/mutation-notes.toml` (mutant name -> one line: the test that kills it or why it
is equivalent) into `docs/mutation.md`. A mutant whose note starts with "equivalent" is left out
of the score's denominator.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"
NOTES = ROOT / "docs" / "mutation-notes.toml"
REPORT = ROOT / "docs" / "mutation.md"
GOAL = 0.90
LINKED = ("src", "tests", "conf", "scripts")
MUTMUT = [sys.executable, "-m", "mutmut"]


@dataclass(frozen=True)
class Module:
    slug: str
    paths: tuple[str, ...]  # under src/, files or folders
    tests: tuple[str, ...]  # pytest selection (paths, node ids, -k expressions)
    names: tuple[str, ...] = field(default=())  # other names accepted on the command line

    @property
    def only_mutate(self) -> list[str]:
        return [f"src/{p}*" if p.endswith("/") else f"src/{p}" for p in self.paths]


# In order of how much depends on the contract: the first ones run first.
MODULES = (
    Module(
        "preprocess",
        ("audiobase/preprocess.py",),
        ("tests/test_contracts_preprocess.py",),
    ),
    Module(
        "lalm_judge",
        ("rewards/lalm_judge.py",),
        (
            "tests/test_contracts_lalm_judge.py",
            "tests/test_lalm_judge.py",
            "-k",
            "not bench_run and not survives_500 and not gives_up",  # transport's, slow
        ),
        ("judge",),
    ),
    Module(
        "pairwise",
        ("bench/pairwise.py",),
        (
            "tests/test_contracts_pairwise.py",
            "tests/test_lalm_judge.py",
            "-k",
            "pairwise and not bench_run",
        ),
    ),
    Module(
        "guard",
        ("bench/guard.py",),
        ("tests/test_contracts_guard.py", "tests/test_bench_concurrency.py"),
    ),
    Module(
        "calibrate",
        ("audioscore/calibrate.py",),
        (
            "tests/test_contracts_calibrate.py",
            "tests/test_calibrate.py",
            "-k",
            "not training_logs",  # a training run: minutes per mutant
        ),
    ),
    Module(
        "legacy",
        ("audioscore/legacy.py",),
        ("tests/test_contracts_legacy.py",),  # test_convert builds MuQ models: minutes each
    ),
    Module(
        "losses",
        ("audioscore/losses/",),
        ("tests/test_contracts_losses.py", "tests/test_head_losses.py"),
    ),
    Module(
        "audio",
        ("audiobase/audio.py",),
        ("tests/test_contracts_audio.py", "tests/test_audio.py"),
    ),
    Module(
        "safe_config",
        ("audioscore/safe_config.py",),
        ("tests/test_contracts_safe_config.py", "tests/test_safe_loading.py"),
    ),
    Module(
        "transport",
        ("rewards/transport.py", "rewards/http.py"),
        (
            "tests/test_contracts_transport.py",
            "tests/test_http_model.py",
            "-k",
            "not tiny_cmi_rm and not survives_500",  # a model server / seconds of backoff each
        ),
        ("http",),
    ),
    Module(
        "store",
        ("bench/store.py", "bench/resume.py"),
        (
            "tests/test_contracts_store.py",
            # not test_bench_resume.py / the bench runs of test_bench_concurrency.py: a whole
            # bench run in mutmut's forked worker runs past its time limit (every mutant that
            # survives the contract tests then reads as a timeout), and
            # test_edited_model_module_... fails in mutmut's clean run
            "tests/test_bench_concurrency.py::test_compaction_refuses_up_front_when_the_disk_is_short",
        ),
        ("resume",),
    ),
    Module(
        "metrics",
        ("bench/metrics.py", "bench/columns.py"),
        ("tests/test_contracts_metrics.py", "tests/test_bench_metrics.py"),
    ),
)

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests"}
STATUS.update({36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"})
STATUS.update({34: "skipped", 37: "caught by type check", -9: "segfault", -11: "segfault"})


def find(names: list[str]) -> list[Module]:
    if not names:
        return list(MODULES)
    out = []
    for name in names:
        hits = [m for m in MODULES if name in (m.slug, *m.names)]
        if not hits:
            known = ", ".join(m.slug for m in MODULES)
            raise SystemExit(f"unknown module {name!r}; known: {known}")
        out += hits
    return out


def work_dir(module: Module, fresh: bool = True) -> Path:
    """mutants/<slug>/ with the tree linked in and a pyproject.toml scoped to `module`.
    `fresh`: start from an empty folder; else keep the last run's mutants and verdicts and only
    rewrite pyproject.toml (a contract test file written since then joins the selection)."""
    d = WORK / module.slug
    if fresh:
        shutil.rmtree(d, ignore_errors=True)  # stale mutants of an old source are wrong
        d.mkdir(parents=True)
        for name in LINKED:
            (d / name).symlink_to(ROOT / name, target_is_directory=True)
    # a test file not written yet is left out (a module may have no contract tests of its own)
    tests = [
        t for t in module.tests if not t.startswith("tests/") or (ROOT / t.split("::")[0]).exists()
    ]
    base = (ROOT / "pyproject.toml").read_text()
    table = {
        "source_paths": ["src"],
        "only_mutate": module.only_mutate,
        "also_copy": ["conf", "scripts"],
        # a mutant that makes a test wait forever uses no CPU, so mutmut's CPU-time limit never
        # fires: pytest-timeout fails that test instead (a kill: the hang is caught)
        "pytest_add_cli_args": [
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow and not gpu",
            "--timeout=120",
        ],
        "pytest_add_cli_args_test_selection": tests,
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    (d / "pyproject.toml").write_text(base + "\n".join(lines) + "\n")
    return d


def verdicts(d: Path) -> dict[str, str]:
    """mutant name -> status, from mutmut's .meta files under `d`/mutants/src."""
    out: dict[str, str] = {}
    for meta in sorted((d / "mutants" / "src").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in codes.items():
            out[name] = STATUS.get(code, "suspicious") if code is not None else "not checked"
    return out


# run inside a work dir: mutant name -> unified diff, from mutmut's own mutants/ tree
SHOW = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({n: get_diff_for_mutant(n) for n in sys.argv[1:]}))
"""


def diffs_of(d: Path, names: list[str]) -> dict[str, str]:
    """The mutated line(s) of each mutant, as '-old / +new' (one process for all of them)."""
    if not names:
        return {}
    shown = subprocess.run(
        [sys.executable, "-c", SHOW, *names], cwd=d, capture_output=True, text=True, check=True
    ).stdout
    out = {}
    for name, diff in json.loads(shown).items():
        changed = [
            ln
            for ln in diff.splitlines()
            if ln[:1] in "+-" and not ln.startswith(("+++", "---")) and ln[1:].strip()
        ]
        out[name] = " / ".join(re.sub(r"\s+", " ", ln) for ln in changed)
    return out


def run(module: Module, max_children: int, mode: str = "full", timeouts: bool = False) -> dict:
    """mutmut over `module` in its work dir -> the summary, saved as summary.json.

    mode "full": a fresh work dir, every mutant. "survivors": the last run's work dir, only its
    surviving mutants again, against the current tests (mutmut copies tests/ anew and collects
    stats for new tests); a killed mutant stays killed since tests are only added. "collect":
    run nothing, summarise the last run (e.g. one that was interrupted). `timeouts`: with
    "survivors", rerun the timeouts too (a timeout on a loaded machine may be no hang at all)."""
    d = work_dir(module, fresh=mode == "full") if mode != "collect" else WORK / module.slug
    names: list[str] = []
    if mode == "survivors":
        caught = ("killed",) if timeouts else ("killed", "timeout")
        names = [n for n, s in verdicts(d).items() if s not in caught]
        if not names:
            mode = "collect"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # mutmut forks its workers from a process that has run torch: one OpenMP thread keeps a
    # forked worker from waiting forever on the parent's thread pool (and suits a shared box)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0, rc = time.monotonic(), None
    if mode != "collect":
        with (d / "mutmut.log").open("a" if names else "w") as log:
            cmd = [*MUTMUT, "run", "--max-children", str(max_children), *names]
            rc = subprocess.run(
                cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT
            ).returncode
    seconds = round(time.monotonic() - t0)
    old = d / "summary.json"
    rerun, before = {}, {}
    if mode != "full" and old.exists():  # keep the full run's time; note the rerun's
        previous = json.loads(old.read_text())
        rerun = {"rerun_seconds": seconds + previous.get("rerun_seconds", 0)} if names else {}
        seconds, before = previous["seconds"], previous["verdicts"]
    found = verdicts(d)
    # a rerun of some mutants may leave the others' verdicts unset in mutmut's files (it
    # regenerates them when the test selection changed): those keep the last run's verdict
    for n, s in found.items():
        if s == "not checked" and n not in names and n in before:
            found[n] = before[n]
    survivors = diffs_of(d, [n for n, s in found.items() if s != "killed"])
    summary = {
        "module": module.slug,
        "paths": [f"src/{p}" for p in module.paths],
        "tests": list(module.tests),
        "returncode": rc,
        "seconds": seconds,
        **rerun,
        "verdicts": found,
        "diffs": survivors,
    }
    (d / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{module.slug}: {len(found)} mutants in {seconds} s (mutmut exit {rc})", flush=True)
    return summary


def load_notes() -> dict[str, str]:
    if not NOTES.exists():
        return {}
    return {str(k): str(v) for k, v in tomllib.loads(NOTES.read_text()).items()}


def report() -> None:
    """docs/mutation.md from mutants/*/summary.json and docs/mutation-notes.toml."""
    notes = load_notes()
    rows, sections, missing = [], [], []
    for module in MODULES:
        path = WORK / module.slug / "summary.json"
        if not path.exists():
            rows.append(f"| {module.slug} | {', '.join(module.paths)} | not run | | | | | | | |")
            continue
        s = json.loads(path.read_text())
        v = s["verdicts"]
        count = {k: sum(1 for x in v.values() if x == k) for k in ("killed", "survived", "timeout")}
        other = len(v) - sum(count.values())
        equivalent = [
            n for n, x in v.items() if x != "killed" and notes.get(n, "").startswith("equivalent")
        ]
        scored = len(v) - len(equivalent)
        caught = count["killed"] + count["timeout"]
        score = caught / scored if scored else 1.0
        ok = "yes" if score >= GOAL else "**no**"
        rows.append(
            f"| {module.slug} | {', '.join(module.paths)} | {len(v)} | {count['killed']} | "
            f"{count['survived']} | {count['timeout']} | {other} | {len(equivalent)} | "
            f"{100 * score:.1f} % {ok} | {s['seconds'] / 60:.1f} |"
        )
        listed = [n for n in v if v[n] not in ("killed", "timeout") or n in notes]
        if not listed:
            continue
        lines = [
            f"### {module.slug}",
            "",
            "| mutant | status | change | reason |",
            "|---|---|---|---|",
        ]
        for n in sorted(listed, key=_natural):
            note = notes.get(n)
            if note is None:
                missing.append(n)
                note = "**no reason recorded**"
            change = s["diffs"].get(n, "").replace("|", "\\|")
            lines.append(f"| `{n}` | {v[n]} | `{change}` | {note.replace('|', '/')} |")
        sections.append("\n".join(lines))
    text = [
        "# Mutation testing",
        "",
        "`make mutate` (scripts/mutate.py, mutmut 3.x) mutates the modules that hold contracts,",
        "one at a time, each against its own fast tests (the `tests` of `MODULES` in the script).",
        "A mutant is *killed* when a test fails, *timeout* when the tests ran past mutmut's limit",
        "(counted as caught), *survived* when every test passed. Survivors are listed below with",
        "the reason from `docs/mutation-notes.toml`: the test that now kills it, or why the",
        "mutant is equivalent (no input can tell it from the original). Score = (killed +",
        f"timeout) / (mutants - equivalent); the goal is {GOAL:.0%} per module.",
        "",
        "| module | mutated | mutants | killed | survived | timeout | other | equivalent | score "
        "| minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "*other*: no test ran the mutated function, or mutmut could not classify the run",
        "(segfault, suspicious); these count as not caught. *minutes*: the full run on a shared",
        "2-core machine. After adding tests, `python scripts/mutate.py --survivors MODULE` reruns",
        "only the survivors (a killed mutant stays killed: tests are only added).",
        "",
        "## Surviving mutants and mutants with a note",
        "",
        *(sec + "\n" for sec in sections),
    ]
    REPORT.write_text("\n".join(text).rstrip() + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)}")
    if missing:
        print(f"{len(missing)} survivors have no reason in {NOTES.relative_to(ROOT)}:")
        for n in missing:
            print(f"  {n}")


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="slugs of MODULES (default: all)")
    ap.add_argument("--report", action="store_true", help="only rewrite docs/mutation.md")
    how = ap.add_mutually_exclusive_group()
    how.add_argument(
        "--collect", action="store_true", help="summarise the last runs' verdicts, run nothing"
    )
    how.add_argument(
        "--survivors", action="store_true", help="rerun only the last runs' surviving mutants"
    )
    ap.add_argument(
        "--timeouts", action="store_true", help="with --survivors: rerun the timeouts too"
    )
    ap.add_argument("--list", action="store_true", help="list the modules and their tests")
    ap.add_argument(
        "--max-children", type=int, default=4, help="mutants tested at once (most wait on sockets)"
    )
    args = ap.parse_args()
    if args.list:
        for m in MODULES:
            print(f"{m.slug:12} {' '.join(m.paths):45} {' '.join(m.tests)}")
        return
    if not args.report:
        for module in find(args.modules):
            mode = "collect" if args.collect else "survivors" if args.survivors else "full"
            run(module, args.max_children, mode, args.timeouts)
    report()


if __name__ == "__main__":
    main()
