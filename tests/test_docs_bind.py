"""The docs bind to the code: every `python -m MODULE` they print names a module that exists,
every repo path they name exists, and every training or bench command they print composes
with the configs in conf/ (keys that exist, choices that exist)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

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
