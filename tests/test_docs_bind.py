"""The docs bind to the code: every `python -m MODULE` they print names a module that exists,
every repo path they name exists, every training or bench command they print composes with the
configs in conf/ (keys that exist, choices that exist), every `key=value` they print sets a key
that exists, every Python name and test they cite exists, and every option list of a config
group names exactly the group's yaml files."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "ckpts" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OTHER_TOOLS = {"pytest", "pip", "venv", "torch.distributed.run"}
PATH = re.compile(
    r"(?<![\w/.])((?:scripts|docs|conf|src|tests)/[\w./-]+\.(?:py|md|yaml|sh|png|csv|toml))"
)
COMMAND = re.compile(r"python -m (audioscore\.train|bench\.run)((?: [^#`|]*)?)")
CONF = {"audioscore.train": "train", "bench.run": "bench"}


def doc_lines() -> list[tuple[str, str]]:
    return [(d.relative_to(ROOT).as_posix(), ln) for d in DOCS for ln in d.read_text().splitlines()]


def commands() -> list[tuple[str, str, list[str]]]:
    """(doc, command, overrides) of each training / bench command the docs print; a user's
    own configs (`my_conf`: tests/test_bring_your_own.py) and usage templates (`<name>`,
    `[key=value ...]`) are not commands."""
    out = []
    for doc, line in doc_lines():
        m = COMMAND.search(line)
        if not m or "my_conf" in line or "<" in m.group(2) or "[key=value" in line:
            continue
        try:
            tokens = shlex.split(m.group(2))
        except ValueError:  # a line continued with a backslash: its first line is read
            tokens = shlex.split(m.group(2).rstrip(" \\"))
        overrides = [t for t in tokens if "=" in t and not t.startswith("-") and "$" not in t]
        if "-m" in tokens:  # a sweep: its first value of each swept key stands for the rest
            overrides = [re.sub(r"=([^\[,]+),.*", r"=\1", o) for o in overrides]
        out.append((doc, m.group(1), overrides))
    return out


def test_every_module_and_path_the_docs_name_exists():
    missing = []
    for doc, line in doc_lines():
        for mod in re.findall(r"python -m ([A-Za-z_][\w.]*)", line):
            if mod not in OTHER_TOOLS and importlib.util.find_spec(mod) is None:
                missing.append(f"{doc}: python -m {mod}")
        for path in PATH.findall(line):
            if not (ROOT / path).exists():
                missing.append(f"{doc}: {path}")
    assert not missing, missing


@pytest.mark.parametrize(("doc", "module", "overrides"), commands())
def test_every_printed_command_composes(doc, module, overrides):
    conf = ROOT / "conf" / CONF[module]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        compose(CONF[module], overrides=overrides)


def test_the_docs_print_the_headline_commands():
    printed = {(module, " ".join(ov)) for _, module, ov in commands()}
    assert ("audioscore.train", "experiment=hybrid_campp trainer.devices=4") in printed
    assert ("bench.run", "model=cmi_rm") in printed


def test_keys_ckpts_readme_names_exist():
    """Backticked `model.…` keys in ckpts/README.md are keys of the composed configs."""
    text = (ROOT / "ckpts" / "README.md").read_text()
    named = set(re.findall(r"`(model\.[\w.]+)`", text))
    keys = {k for k in named if not k.endswith((".safetensors", ".yaml", ".json", ".bin"))}
    assert {"model.net.encoder.pretrained", "model.net.timbre.source", "model.checkpoint"} <= keys
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "train"), version_base="1.3"):
        train = compose("train", overrides=["experiment=hybrid_campp"])
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "bench"), version_base="1.3"):
        bench = compose("bench", overrides=["model=cmi_rm"])
    for key in keys:
        found = OmegaConf.select(train, key, default="absent") != "absent"
        found = found or OmegaConf.select(bench, key, default="absent") != "absent"
        assert found, key


# the generated mutation report cites mutants (`mod.x_fn__mutmut_3`) and the tests that kill them
BOUND_DOCS = [d for d in DOCS if d.name != "mutation.md"]
PACKAGES = ("audiobase", "audioscore", "rewards", "bench")
FILE_SUFFIXES = ("jsonl", "json", "yaml", "csv", "md", "py", "png", "log", "txt", "safetensors")


def resolves(name: str) -> bool:
    """`pkg.mod.attr...` is an importable module, or an attribute path under one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def test_every_python_name_the_docs_cite_resolves():
    """`audioscore.export.load_scorer`, `bench.models.fingerprint`, ...: modules and the
    functions and classes in them."""
    missing = []
    for doc in BOUND_DOCS:
        for line in doc.read_text().splitlines():
            for name in re.findall(rf"`((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)", line):
                if name.rsplit(".", 1)[1] not in FILE_SUFFIXES and not resolves(name):
                    missing.append(f"{doc.name}: {name}")
    assert not missing, missing


def test_every_test_the_docs_cite_exists():
    defined = set()
    for path in (ROOT / "tests").rglob("*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE))
    cited = {
        (doc.name, name)
        for doc in BOUND_DOCS
        for name in re.findall(r"(?<![\w/])(test_\w+)(?!\w*\.py)", doc.read_text())
    }
    files = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    missing = sorted(f"{d}: {n}" for d, n in cited if n not in defined and n not in files)
    assert not missing, missing


def group_options() -> dict[str, list[set[str]]]:
    """Config group -> its options, per app (a name such as `model/` is in both)."""
    out: dict[str, list[set[str]]] = {}
    for app in ("train", "bench"):
        for group in (ROOT / "conf" / app).iterdir():
            if group.is_dir():
                out.setdefault(group.name, []).append({p.stem for p in group.glob("*.yaml")})
    return out


def group_lists() -> list[tuple[str, str, set[str]]]:
    """(doc, group, names) for each option list the docs print as "`group/` (`a`, `b`, ...)"."""
    out = []
    for doc in BOUND_DOCS:
        text = " ".join(doc.read_text().split())
        for m in re.finditer(r"`(\w+)/` \(", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            names = set(re.findall(r"`([A-Za-z_]\w*)`", text[m.end() : i - 1])) - {"null"}
            out.append((doc.name, m.group(1), names))
    return out


def test_every_option_list_of_a_config_group_names_exactly_its_options():
    """ "`model/` (`muq_lora`, ...)": the names are the group's yaml files, all of them."""
    options = group_options()
    lists = [(d, g, n) for d, g, n in group_lists() if g in options]
    assert len(lists) >= 10  # README and design.md list every training group
    wrong = [
        f"{doc}: {group}/ lists {sorted(names)}; conf has {[sorted(o) for o in options[group]]}"
        for doc, group, names in lists
        if not any(names == opts for opts in options[group])
    ]
    assert not wrong, wrong


def has_key(cfg, key: str) -> bool:
    """`key` is a node of `cfg` (a `???` value counts), or sits under a free-form mapping
    (`init_kwargs`, `score_kwargs`) the config leaves empty."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return False
        if part not in node.keys():
            return node.keys() == set() and key.split(".")[-2] in {"init_kwargs", "score_kwargs"}
        node = node._get_node(part)
    return True


def test_every_config_key_the_docs_set_exists():
    """`model.max_dur=30`, `data.crop_grid_seconds=null`, ...: a key some composed training
    experiment or bench model has."""
    configs = []
    for app, group in (("train", "experiment"), ("bench", "model")):
        with initialize_config_dir(config_dir=str(ROOT / "conf" / app), version_base="1.3"):
            for p in sorted((ROOT / "conf" / app / group).glob("*.yaml")):
                configs.append(compose(app, overrides=[f"{group}={p.stem}"]))
    key = re.compile(r"(?<![\w./~-])((?:model|data|trainer|dataset|paths)(?:\.\w+)+)=")
    missing = []
    for doc, line in doc_lines():
        if doc.endswith("mutation.md"):
            continue
        for k in key.findall(line.replace("+model.", "model.")):
            if not any(has_key(c, k) for c in configs):
                missing.append(f"{doc}: {k}")
    assert not missing, missing
