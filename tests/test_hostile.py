"""Attacks on the boundary, one test each: everything a user brings in (export folders,
checkpoints, run folders, results files, bench JSONL, HTTP requests, audio files) is data.
Read top to bottom, this module is the list of attacks the trust model (docs/security.md)
defends against; each test names the input, the attack and what must happen instead."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


# === 1-3. Code from data: config interpolation, double resolution, remote code ===========

import json as json_1_3  # noqa: E402
import shutil as shutil_1_3  # noqa: E402
import subprocess as subprocess_1_3  # noqa: E402
import sys as sys_1_3  # noqa: E402
from pathlib import Path as Path_1_3  # noqa: E402

import torch as torch_1_3  # noqa: E402
import yaml as yaml_1_3  # noqa: E402
from helpers.remote_code import crafted_cmi_rm  # noqa: E402
from helpers.routes import make_tiny_export, write_clips  # noqa: E402
from helpers.train import compose_train  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from omegaconf import OmegaConf as OmegaConf_1_3  # noqa: E402

from audioscore.export import ExportError, load_scorer, read_export_config  # noqa: E402
from audioscore.probe import export_checkpoint  # noqa: E402
from audioscore.safe_config import StoredConfigError, UnsafeTargetError  # noqa: E402
from audioscore.train import load_init_weights  # noqa: E402
from bench.guard import RunRefused  # noqa: E402
from bench.models import build_model  # noqa: E402
from rewards.build import build_reward_model  # noqa: E402
from rewards.cmi_rm import CheckpointError, CMIRewardModel  # noqa: E402
from rewards.cmi_rm.tiny import build_tiny_cmi_rm  # noqa: E402
from rewards.serve import load_model as serve_load_model  # noqa: E402

ROOT_1_3 = Path_1_3(__file__).resolve().parents[1]
AUDIOSCORE_RM = "rewards.audioscore_rm.AudioscoreRewardModel"


def open_payload(victim: Path_1_3) -> str:
    """An interpolation that, resolved, is a node Hydra builds: open(victim, "w") truncates it."""
    return "${oc.create:{_target_: builtins.open, file: '" + str(victim) + "', mode: w}}"


@pytest.fixture(scope="module")
def export_1_3(tmp_path_factory) -> Path_1_3:
    return make_tiny_export(tmp_path_factory.mktemp("hostile_1_3"))


@pytest.fixture
def victim_1_3(tmp_path) -> Path_1_3:
    path = tmp_path / "victim.txt"
    path.write_text("keep me")
    return path


def crafted_export(export: Path_1_3, out: Path_1_3, edit) -> Path_1_3:
    """A copy of `export` whose config.yaml went through `edit(config)`."""
    shutil_1_3.copytree(export, out)
    config = yaml_1_3.safe_load((out / "config.yaml").read_text())
    edit(config)
    (out / "config.yaml").write_text(yaml_1_3.safe_dump(config))
    return out


def plant(where: str, payload: str):
    """An edit planting `payload` in one position of an export config; returns (edit, key)."""

    def edit(config):
        head, lora = config["net"]["head"], config["net"]["encoder"]["lora"]
        if where == "value":
            head["hidden_dim"] = payload
        elif where == "key":
            head[payload] = 1
        elif where == "nested list":
            lora["target_modules"] = ["linear_q", ["linear_v", payload]]
        elif where == "escaped":
            head["hidden_dim"] = "\\" + payload
        elif where == "inside text":
            config["meta"] = {"note": f"trained on {payload} data"}

    key = {
        "value": "net.head.hidden_dim",
        "key": "key net.head.${oc.create",
        "nested list": "net.encoder.lora.target_modules[1][1]",
        "escaped": "net.head.hidden_dim",
        "inside text": "meta.note",
    }[where]
    return edit, key


POSITIONS = ["value", "key", "nested list", "escaped", "inside text"]


@pytest.mark.parametrize("where", POSITIONS)
def test_export_interpolation_is_refused_naming_the_key_by_every_loader(
    export_1_3, victim_1_3, tmp_path, where
):
    """Attack: an export's config.yaml holds `${oc.create:{_target_: builtins.open, ...}}` (in a
    value, a key, a nested list, escaped, inside text), which Hydra would resolve into an object
    after the `_target_` allowlist looked. Every loader refuses it naming file and key; the
    victim file stays intact."""
    edit, key = plant(where, open_payload(victim_1_3))
    bad = crafted_export(export_1_3, tmp_path / "bad", edit)
    rm_cfg = {"name": "audioscore", "_target_": AUDIOSCORE_RM, "checkpoint": str(bad)}
    loaders = {
        "load_scorer": lambda: load_scorer(bad),
        "read_export_config": lambda: read_export_config(bad),
        "model=audioscore": lambda: build_reward_model(dict(rm_cfg)),
        "init_from": lambda: load_init_weights(torch_1_3.nn.Linear(2, 2), str(bad)),
    }
    for name, load in loaders.items():
        with pytest.raises(ExportError) as err:
            load()
        assert f"{bad / 'config.yaml'}: refusing {key}" in str(err.value), name
        assert victim_1_3.read_text() == "keep me", name
    bench_cfg = OmegaConf_1_3.create({"model": rm_cfg, "device": "cpu"})
    with pytest.raises(RunRefused) as err:
        build_model(bench_cfg)  # bench.run and its sharded ranks: exit 2
    assert f"refusing {key}" in str(err.value) and err.value.exit_code == 2
    assert victim_1_3.read_text() == "keep me"
    with pytest.raises(SystemExit) as exit_:
        serve_load_model("audioscore", [f"checkpoint={bad}"])  # rewards.serve --model
    assert exit_.value.code == 2 and victim_1_3.read_text() == "keep me"


def run_cli(*args: str) -> subprocess_1_3.CompletedProcess:
    return subprocess_1_3.run(
        [sys_1_3.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT_1_3, timeout=300
    )


def test_score_and_serve_clis_exit_2_on_an_interpolated_export(export_1_3, victim_1_3, tmp_path):
    """Attack: an interpolated export given to `python -m audioscore.score` and to `python -m
    rewards.serve --model audioscore`: both exit 2 naming the key, nothing is opened."""
    edit, key = plant("value", open_payload(victim_1_3))
    bad = crafted_export(export_1_3, tmp_path / "bad", edit)
    clip = write_clips(tmp_path, [("a.wav", 0.5, 24_000)])[0]
    score = run_cli("audioscore.score", str(bad), str(clip))
    assert score.returncode == 2, score.stderr
    assert f"refusing {key}" in score.stderr and score.stdout == ""
    serve = run_cli(
        "rewards.serve", "--model", "audioscore", "--set", f"checkpoint={bad}", "--port", "0"
    )
    assert serve.returncode == 2, serve.stderr
    assert f"refusing {key}" in serve.stderr and "Traceback" not in serve.stderr
    assert victim_1_3.read_text() == "keep me"


# hypothesis: interpolation strings planted anywhere in a real export config

PAYLOADS = [
    "${oc.create:{_target_: builtins.open, file: '%(victim)s', mode: w}}",
    "\\${oc.create:{_target_: builtins.open, file: '%(victim)s', mode: w}}",
    "${oc.decode:'{_target_: builtins.open, file: \"%(victim)s\", mode: w}'}",
    "${oc.select:nothing.here,${oc.create:{_target_: pathlib.Path.touch, self: '%(planted)s'}}}",
    "${oc.env:HOME}",
    "${net.head}",
    "${now:%%Y}",
]


def config_paths(node, path=()):
    """Every (path, kind) where a string could be planted: dict values, dict keys, list items."""
    if isinstance(node, dict):
        yield path, "new key"
        for k, v in node.items():
            yield (*path, k), "value"
            yield from config_paths(v, (*path, k))
    elif isinstance(node, list):
        yield path, "append"
        for i, v in enumerate(node):
            yield (*path, i), "value"
            yield from config_paths(v, (*path, i))


def plant_at(config, path, kind, text):
    node = config
    for p in path[:-1] if kind == "value" else path:
        node = node[p]
    if kind == "value":
        node[path[-1]] = text
    elif kind == "new key":
        node[text] = [text]
    else:
        node.append({"x": [text]})


@pytest.fixture(scope="module")
def export_config_1_3(export_1_3) -> dict:
    return yaml_1_3.safe_load((export_1_3 / "config.yaml").read_text())


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_planted_interpolations_never_build_anything(
    export_1_3, export_config_1_3, tmp_path_factory, data
):
    """Attack (property): any of several interpolation strings (resolver calls, escaped ones,
    references, inside text) planted at a random place of a real export config (a value, a new
    key, a list item, at any depth). Loading always refuses, naming the file; the victim file
    stays intact and the planted file is never created, so nothing outside the allowlist ran."""
    tmp = tmp_path_factory.mktemp("planted")
    victim, planted = tmp / "victim.txt", tmp / "planted.txt"
    victim.write_text("keep me")
    config = json_1_3.loads(json_1_3.dumps(export_config_1_3))
    spots = list(config_paths(config))
    n = data.draw(st.integers(1, 3), label="how many")
    for _ in range(n):
        path, kind = data.draw(st.sampled_from(spots), label="where")
        payload = data.draw(st.sampled_from(PAYLOADS), label="payload")
        prefix = data.draw(st.sampled_from(["", "a ", "x/"]), label="prefix")
        text = prefix + payload % {"victim": victim, "planted": planted}
        plant_at(config, path, kind, text)
        spots = list(config_paths(config))
    bad = tmp / "export"
    shutil_1_3.copytree(export_1_3, bad)
    (bad / "config.yaml").write_text(yaml_1_3.safe_dump(config))
    try:
        load_scorer(bad)
    except ExportError as e:
        assert str(bad / "config.yaml") in str(e)
    else:  # a plant that replaced the whole net, or every plant overwritten by a later one
        assert "${" not in (bad / "config.yaml").read_text()
    assert victim.read_text() == "keep me" and not planted.exists()


# the run config `audioscore.probe` rebuilds a net from


def run_folder(tmp_path: Path_1_3, edit) -> Path_1_3:
    """A run folder whose .hydra/config.yaml (a real one, unresolved, as training saves it)
    went through `edit(config)`; returns its checkpoint path."""
    cfg = compose_train("experiment=muq_lora", "debug=tiny", f"paths.data_dir={tmp_path}")
    config = yaml_1_3.safe_load(OmegaConf_1_3.to_yaml(cfg, resolve=False))
    edit(config)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "config.yaml").write_text(yaml_1_3.safe_dump(config))
    ckpt = run / "checkpoints" / "last.ckpt"
    torch_1_3.save({"state_dict": {}}, ckpt)
    return ckpt


def test_probe_refuses_a_resolver_call_in_the_run_config(victim_1_3, tmp_path):
    """Attack: a run's .hydra/config.yaml calls `oc.create` (here from a key the net references,
    elsewhere in the file); `audioscore.probe` refuses it naming the key, before building."""

    def edit(config):
        config["paths"]["evil"] = open_payload(victim_1_3)
        config["model"]["net"]["head"]["hidden_dim"] = "${paths.evil}"

    ckpt = run_folder(tmp_path, edit)
    with pytest.raises(
        StoredConfigError, match=r"refusing paths\.evil: calls the resolver 'oc\.create'"
    ):
        export_checkpoint(ckpt)
    assert victim_1_3.read_text() == "keep me"


def test_probe_resolves_the_run_config_once(victim_1_3, tmp_path):
    """Attack: an escaped `\\${oc.create:...}` in a run config is a literal string after one
    resolution; resolved twice (probe's old path: OmegaConf, then Hydra again) it became live.
    The probe resolves once and refuses a string still holding `${` (Hydra would resolve it),
    and its CLI exits 2 naming the key."""

    def edit(config):
        config["model"]["net"]["head"]["hidden_dim"] = "\\" + open_payload(victim_1_3)

    ckpt = run_folder(tmp_path, edit)
    with pytest.raises(
        StoredConfigError, match=r"refusing model\.net\.head\.hidden_dim: holds"
    ) as err:
        export_checkpoint(ckpt)
    assert not isinstance(err.value, UnsafeTargetError)
    assert victim_1_3.read_text() == "keep me"
    groups = tmp_path / "groups.json"
    groups.write_text("[]")
    cli = run_cli("audioscore.probe", str(ckpt), str(groups))
    assert cli.returncode == 2, cli.stderr
    assert "refusing model.net.head.hidden_dim" in cli.stderr and "Traceback" not in cli.stderr
    assert victim_1_3.read_text() == "keep me"


# a CMI-RM checkpoint whose tower folder carries code


@pytest.fixture(scope="module")
def tiny_cmi_1_3(tmp_path_factory) -> Path_1_3:
    return build_tiny_cmi_rm(tmp_path_factory.mktemp("cmi_1_3") / "tiny")


@pytest.mark.parametrize("opt_in_file", [False, True], ids=["plain", "config-opts-itself-in"])
def test_cmi_rm_folder_with_remote_code_is_refused_naming_the_key(
    tiny_cmi_1_3, tmp_path, opt_in_file
):
    """Attack: a CMI-RM checkpoint whose tower folder has `auto_map` + a .py (muq loads towers
    with trust_remote_code=True, so loading it imported and ran that .py). Refused before
    anything is loaded, naming the opt-in key `trust_remote_code`; the marker the .py would
    write never appears, also when the checkpoint's own config.yaml claims the opt-in."""
    marker = tmp_path / "marker.txt"
    folder = crafted_cmi_rm(tiny_cmi_1_3, tmp_path, marker, opt_in_file)
    with pytest.raises(CheckpointError, match=r"`trust_remote_code: true`") as err:
        CMIRewardModel(folder)
    assert "evil.py" in str(err.value) and "auto_map in config.json" in str(err.value)
    assert not marker.exists()


# === 4. Server: slow clients, nested JSON, truncated audio ================================


# === 5. Decompression bombs and folder walks ==============================================


# === 6, 8, 9. Paths, locks and non-finite scores in the bench =============================


# === 7. Training resume ===================================================================


# === end of attacks ========================================================================
