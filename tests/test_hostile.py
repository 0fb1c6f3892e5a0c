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
from audioscore.studies.probe import export_checkpoint  # noqa: E402
from audioscore.safe_config import StoredConfigError, UnsafeTargetError  # noqa: E402
from audioscore.training.init_from import load_init_weights  # noqa: E402
from bench.guard import RunRefused  # noqa: E402
from bench.models import build_model  # noqa: E402
from rewards.build import build_reward_model  # noqa: E402
from rewards.cmi_rm import CheckpointError, CMIRewardModel  # noqa: E402
from rewards.cmi_rm.tiny import build_tiny_cmi_rm  # noqa: E402
from rewards.server import load_model as serve_load_model  # noqa: E402

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


# the run config `audioscore.studies.probe` rebuilds a net from


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
    elsewhere in the file); `audioscore.studies.probe` refuses it naming the key, before
    building."""

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
    cli = run_cli("audioscore.studies.probe", str(ckpt), str(groups))
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

from helpers.bench import serve as serve_in_thread
from helpers.bench import tone
from helpers.raw_http import (
    exchange,
    post_request,
    ready_connection,
    score_request,
    wav_file_request,
)

from audiobase.audio import AudioDecodeError, load_audio, save_audio
from bench.baselines import SignalStatsReward

SERVED_SR = 16_000  # SignalStatsReward's rate


@pytest.fixture
def scoring_server():
    """start(**make_server keys) -> a `rewards.serve` server (a signal-statistics model) in a
    thread; shut down after the test."""
    made = []

    def start(**kw):
        srv, _ = serve_in_thread(SignalStatsReward(sr=SERVED_SR), **kw)
        made.append(srv)
        return srv

    yield start
    for srv in made:
        srv.shutdown()
        srv.server_close()


SLOW_STARTS = {  # what a slow client sends before it stops
    "headers": b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: a",
    "body": b"POST /score HTTP/1.1\r\nAuthorization: Bearer k\r\nContent-Length: 900\r\n\r\n{",
}


@pytest.mark.parametrize("stall", sorted(SLOW_STARTS))
def test_slow_clients_cannot_hold_the_workers(scoring_server, stall):
    """Attack: slowloris. workers + 1 connections each send part of a request (headers without
    their end, or an authorised body's first byte) and stop. An authorised request must still
    be answered, within 2 s (the socket timeout bounds each read)."""
    srv = scoring_server(api_key="k", workers=2)
    slow = [ready_connection(srv.server_address) for _ in range(srv.workers + 1)]
    try:
        for s in slow:
            s.sendall(SLOW_STARTS[stall])
        clip = tone(0.5, 0.3, 440.0, 0.01, seed=0)
        status, body = exchange(srv.server_address, score_request(clip, SERVED_SR, "k"), 2.0)
    finally:
        for s in slow:
            s.close()
    assert status == 200, body


@pytest.mark.parametrize("opens", [b"[", b'{"a":'])
def test_json_nested_1000_deep_gets_a_400_and_the_server_keeps_serving(scoring_server, opens):
    """Attack: a body nesting arrays (or objects) 1000 levels deep, which a recursive JSON
    parser cannot finish. It must be answered 400 naming the depth; the server then serves on."""
    srv = scoring_server()
    closes = b"]" if opens == b"[" else b"}"
    nested = opens * 1000 + b"1" + closes * 1000
    status, body = exchange(srv.server_address, post_request(nested), 10.0)
    assert status == 400 and b"nested 1000 levels deep" in body, body
    clip = tone(0.5, 0.3, 440.0, 0.01, seed=0)
    assert exchange(srv.server_address, score_request(clip, SERVED_SR))[0] == 200


def test_a_truncated_wav_is_refused_as_the_cli_refuses_it(scoring_server, tmp_path):
    """Attack: a WAV cut short (its header declares 1 s, the file holds half of it). The score
    CLI's decoder refuses the file; the server must answer this item 400 naming the truncation,
    not score the half it holds."""
    path = save_audio(tmp_path / "clip.wav", tone(1.0, 0.3, 440.0, 0.01, seed=0), SERVED_SR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(path, SERVED_SR)  # what the score CLI decodes a file with
    srv = scoring_server()
    status, body = exchange(srv.server_address, wav_file_request(data[: len(data) // 2], SERVED_SR))
    assert status == 400 and b"audio: not a readable WAV: truncated" in body, body


# === 5. Decompression bombs and folder walks ==============================================
import base64 as b64_5
import csv as csv_5
import io as io_5
import tracemalloc as tracemalloc_5

import numpy as np_5

import requests as requests_5
from helpers.bench import serve as serve_5
from helpers.bombs import write_silent_flac
from hydra.utils import instantiate as instantiate_5
from omegaconf import OmegaConf as OmegaConf_5

from audiobase.audio import AudioTooLongError
from audiobase.audio import save_audio as save_audio_5
from audiobase.preprocess import Preprocess as Preprocess_5
from audioscore import score as score_cli_5
from audioscore.data.datamodule import ClipLoader
from bench.infer import decode_clip, model_preprocess

BOMB_SECONDS = 1200  # 20 min of silence: about 28 kB of FLAC


@pytest.fixture(scope="module")
def bomb_export(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("bomb_export"))


def score_folder_5(export, folder, capsys, *extra: str) -> tuple[int, dict[str, str], str]:
    """Run the score CLI on `folder`: (exit status, error column by file name, stderr)."""
    rc = score_cli_5.main([str(export), str(folder), "--workers", "0", *extra])
    out, err = capsys.readouterr()
    rows = list(csv_5.DictReader(io_5.StringIO(out)))
    return rc, {row["path"].rsplit("/", 1)[-1]: row["error"] for row in rows}, err


def test_score_cli_refuses_a_flac_bomb_by_its_header(bomb_export, tmp_path, capsys):
    """Attack: a 28 kB FLAC declaring 20 minutes of audio. The CLI gives it an error row naming
    the file and the 15-minute default limit, without decoding it; the other file scores."""
    save_audio_5(tmp_path / "song.wav", np_5.full(24_000, 0.1, np_5.float32), 24_000)
    write_silent_flac(tmp_path / "bomb.flac", BOMB_SECONDS)
    rc, errors, _ = score_folder_5(bomb_export, tmp_path, capsys)
    assert rc == 1 and errors["song.wav"] == ""
    assert "bomb.flac: longer than the limit of max_seconds=900 s" in errors["bomb.flac"]


def test_a_flac_bomb_hiding_its_length_is_stopped_at_the_limit(tmp_path):
    """Attack: the bomb's header declares no length (as a streamed encoder writes). Decoding
    counts samples and stops once past `max_seconds`: memory held stays a small fraction of
    what decoding the whole file takes."""
    path = write_silent_flac(tmp_path / "bomb.flac", BOMB_SECONDS, declare_length=False)
    pre = Preprocess_5(sr=8000, max_seconds=10)
    whole = BOMB_SECONDS * 8000 * 2  # the file's samples at 16 bits, the least a full decode holds
    tracemalloc_5.start()
    try:
        with pytest.raises(AudioTooLongError, match=r"max_seconds=10 s \(decoding passed"):
            pre.load(path)
        peak = tracemalloc_5.get_traced_memory()[1]
    finally:
        tracemalloc_5.stop()
    assert peak < whole / 20, f"held {peak} bytes; the whole file decodes to {whole}"


def test_training_data_refuses_a_bomb_at_the_configured_limit(tmp_path):
    """Attack: a bomb among the training clips. The data config's `preprocess.max_seconds`
    reaches the clip loader, which refuses the clip (the caller records it as a failure)."""
    cfg = OmegaConf_5.load("conf/train/data/groups.yaml").preprocess
    assert cfg.max_seconds == 900.0
    cfg.max_seconds = 60.0
    loader = ClipLoader(instantiate_5(cfg))
    with pytest.raises(AudioTooLongError, match="max_seconds=60 s"):
        loader.load(str(write_silent_flac(tmp_path / "bomb.flac", 120)), np_5.random.default_rng(0))


def test_bench_decoding_refuses_a_bomb_by_default(tmp_path):
    """Attack: a bench row pointing at a bomb. The runner's own contract (first `max_dur` s)
    still refuses the file by its declared length instead of decoding it."""
    path = write_silent_flac(tmp_path / "bomb.flac", BOMB_SECONDS)
    with pytest.raises(AudioTooLongError, match="max_seconds=900 s"):
        decode_clip(str(path), model_preprocess(SignalStatsReward(), 120.0))


def test_server_refuses_a_flac_bomb_sent_as_wav(tmp_path):
    """Attack: a 20-minute FLAC bomb posted as the 'wav' of a /score request. The server
    decodes through the CLI's path: refused by its declared length before decoding, 400
    naming the limit."""
    data = write_silent_flac(tmp_path / "bomb.flac", BOMB_SECONDS, sr=16_000).read_bytes()
    srv, url = serve_5(SignalStatsReward())
    try:
        body = {"audio": {"format": "wav", "sr": 16_000, "data": b64_5.b64encode(data).decode()}}
        r = requests_5.post(url, json=body, timeout=30)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.status_code == 400 and "max_seconds=900 s" in r.json()["error"]


def test_folder_walk_reports_links_that_lead_nowhere(bomb_export, tmp_path, capsys):
    """Attack: a folder whose symlinks lead nowhere (a missing target, a loop). Skipping them
    silently would score fewer files with exit 0; each gets an error row and a warning counts
    them."""
    save_audio_5(tmp_path / "song.wav", np_5.full(24_000, 0.1, np_5.float32), 24_000)
    (tmp_path / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    (tmp_path / "a.flac").symlink_to(tmp_path / "b.flac")
    (tmp_path / "b.flac").symlink_to(tmp_path / "a.flac")
    rc, errors, err = score_folder_5(bomb_export, tmp_path, capsys)
    assert rc == 1 and errors["song.wav"] == ""
    assert "broken symlink" in errors["gone.wav"] and "deleted.wav" in errors["gone.wav"]
    assert "symlink loop" in errors["a.flac"] and "symlink loop" in errors["b.flac"]
    assert "warning: 3 broken or looping symlink(s)" in err and "gone.wav" in err


# === 6, 8, 9. Paths, locks and non-finite scores in the bench =============================

import json as bench_json  # noqa: E402
import threading as bench_threading  # noqa: E402

import numpy as bench_np  # noqa: E402
from helpers.bench import make_cfg as bench_cfg  # noqa: E402
from helpers.bench import make_toy_bench  # noqa: E402

from bench.evaluate import main as evaluate_main  # noqa: E402
from bench.evaluate import evaluate_results_file  # noqa: E402
from bench.guard import OutputLock  # noqa: E402
from bench.run import run as bench_run  # noqa: E402
from bench.run import run_cli as bench_run_cli  # noqa: E402


@pytest.fixture(scope="module")
def bench_toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_bench")
    make_toy_bench(root, corrupt=False, missing=False)
    return root


def pam_results(bench_toy, out_root):
    """A finished signal_stats run on the toy PAM rows; returns its output folder."""
    bench_run(bench_cfg(bench_toy, out_root, subset="PAM"))
    return out_root / "signal_stats" / "toy"


def test_crafted_fingerprint_in_results_cannot_write_outside_the_run_folder(bench_toy, tmp_path):
    """Attack: a results.jsonl record whose `bench_fingerprint` is a path (`x/../../../victim/
    toy/bench`) is joined into the set-aside file's name; the runner must refuse (exit 2,
    naming file and line) and leave the other folder's bench.jsonl untouched."""
    out = pam_results(bench_toy, tmp_path)
    victim = tmp_path / "victim" / "toy" / "bench.jsonl"
    victim.parent.mkdir(parents=True)
    victim.write_text('{"precious": true}\n')
    rec = bench_json.loads((out / "results.jsonl").read_text().splitlines()[0])
    rec["bench_fingerprint"] = "x/../../../victim/toy/bench"
    with open(out / "results.jsonl", "a") as f:
        f.write(bench_json.dumps(rec) + "\n")
    assert bench_run_cli(bench_cfg(bench_toy, tmp_path, subset="PAM")) == 2
    assert victim.read_text() == '{"precious": true}\n'
    assert not (out / "results.x").exists()
    with pytest.raises(RunRefused, match=r"results\.jsonl:13: bench_fingerprint must be hex"):
        bench_run(bench_cfg(bench_toy, tmp_path, subset="PAM"))


@pytest.mark.parametrize("key", ["model.name", "dataset.name"])
def test_model_or_dataset_name_with_a_path_cannot_leave_the_output_root(bench_toy, tmp_path, key):
    """Attack: `model.name=../../elsewhere` (or dataset.name) names the output folder; it must
    be one safe path component, refused with exit 2 before anything is written."""
    cfg = bench_cfg(bench_toy, tmp_path / "root", subset="PAM", **{key: "../../elsewhere"})
    assert bench_run_cli(cfg) == 2
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "root").exists()


def test_list_valued_row_key_in_results_is_refused_naming_the_line(bench_toy, tmp_path, capsys):
    """Attack: a results line with `bench_row_key: [..]` (unhashable) crashed the reader with a
    traceback; bench.evaluate must exit 2 naming the file, the line and the field."""
    res = tmp_path / "results.jsonl"
    row = {"source": "MusicEval", "split": "test", "musicality": 3, "predicted_musicality": 1}
    res.write_text(bench_json.dumps(row) + "\n" + bench_json.dumps(row | {"bench_row_key": ["a"]}))
    assert evaluate_main([str(res), "--no-plots", "--n-boot", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{res}:2: bench_row_key must be a string" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[" * 100_000, "JSON nested too deeply"),
    ],
)
def test_malformed_results_line_exits_2_naming_file_and_line(tmp_path, capsys, line, problem):
    """Attack: a results file with a line that is not UTF-8, or JSON nested 100000 deep, gave
    a traceback and exit 1; it must be exit 2 with the file, line number and problem."""
    res = tmp_path / "results.jsonl"
    row = {"source": "MusicEval", "split": "test", "musicality": 3, "predicted_musicality": 1}
    res.write_bytes(bench_json.dumps(row).encode() + b"\n" + line + b"\n")
    assert evaluate_main([str(res), "--no-plots", "--n-boot", "0"]) == 2
    assert f"{res}:2: {problem}" in capsys.readouterr().err


def test_malformed_bench_dataset_line_exits_2_naming_file_and_line(bench_toy, tmp_path, capsys):
    """Attack: a bench dataset JSONL with a broken line made bench.run exit 1 with a
    traceback; it must exit 2 naming the file and the line number."""
    data = tmp_path / "bench.jsonl"
    data.write_text((bench_toy / "bench.jsonl").read_text() + '{"source": "PAM", oops\n')
    cfg = bench_cfg(bench_toy, tmp_path / "out", subset="PAM")
    cfg.dataset.jsonl = str(data)
    assert bench_run_cli(cfg) == 2
    n = len(data.read_text().splitlines())
    assert f"{data}: line {n}: invalid JSON" in capsys.readouterr().err


class PausedStats(SignalStatsReward):
    """The baseline, pausing in its second score_batch call (one batch already durable in
    results.jsonl) until the test releases it: a bench.run caught mid-write."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls, self.paused, self.release = 0, bench_threading.Event(), bench_threading.Event()

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        self.calls += 1
        if self.calls == 2:
            self.paused.set()
            assert self.release.wait(60), "the test never released the model"
        return super().score_batch(inputs, batch_size, max_dur, **kw)


def start_paused_run(bench_toy, out_root):
    """bench.run in a thread, paused mid-scoring; returns (model, thread, output folder)."""
    model = PausedStats(sr=16_000)
    cfg = bench_cfg(bench_toy, out_root, subset="PAM")
    thread = bench_threading.Thread(target=bench_run, args=(cfg,), kwargs={"model": model})
    thread.start()
    assert model.paused.wait(60), "bench.run never reached its second batch"
    return model, thread, out_root / "signal_stats" / "toy"


def test_evaluate_refuses_a_results_file_bench_run_is_writing(bench_toy, tmp_path, capsys):
    """Attack (race): `bench.evaluate` on a results.jsonl that bench.run is still appending to
    read half a run and wrote metrics over the run's. It must refuse (exit 4) naming the run."""
    model, thread, out = start_paused_run(bench_toy, tmp_path)
    try:
        assert evaluate_main([str(out / "results.jsonl"), "--no-plots", "--n-boot", "0"]) == 4
        err = capsys.readouterr().err
        assert "in use by bench.run (pid" in err and not (out / "metrics.json").exists()
        other = tmp_path / "elsewhere"  # reading it to write elsewhere: refused too
        assert evaluate_main([str(out / "results.jsonl"), "--out-dir", str(other)]) == 4
        assert not (other / "metrics.json").exists()
    finally:
        model.release.set()
        thread.join()


def test_evaluate_waits_for_bench_run_and_then_reads_the_whole_file(bench_toy, tmp_path):
    """Attack (race), `wait`: the evaluation says it is waiting, then reads the finished
    file (all 12 rows), never the half-written one."""
    model, thread, out = start_paused_run(bench_toy, tmp_path)
    waiting, lines, got = bench_threading.Event(), [], {}

    def on_wait(line):
        lines.append(line)
        waiting.set()

    def evaluate():
        got["m"] = evaluate_results_file(
            out / "results.jsonl", tmp_path / "mine", n_boot=0, plots=False, wait=True,
            on_wait=on_wait,
        )  # fmt: skip

    reader = bench_threading.Thread(target=evaluate)
    reader.start()
    try:
        assert waiting.wait(60), "the evaluation neither waited nor said so"
        assert "bench.evaluate waiting for bench.run (pid" in lines[0] and "m" not in got
    finally:
        model.release.set()
        thread.join()
        reader.join()
    assert got["m"]["n_rows"] == 12


def test_two_evaluations_of_one_folder_do_not_interleave(bench_toy, tmp_path, capsys):
    """Attack (race): two evaluations writing one folder's metrics files at once; the second
    is refused (exit 4) naming the first, and its files are not written."""
    out = pam_results(bench_toy, tmp_path)
    (out / "metrics.json").unlink()
    with OutputLock(out, what="bench.evaluate"):
        assert evaluate_main([str(out / "results.jsonl"), "--no-plots", "--n-boot", "0"]) == 4
        assert not (out / "metrics.json").exists()
    assert "in use by bench.evaluate (pid" in capsys.readouterr().err


class NonFiniteStats(SignalStatsReward):
    """The baseline, but NaN or inf for chosen prompts: a model that breaks on some clips."""

    broken = {
        "pam audioldm2 0": [bench_np.inf, 1.0],
        "pam audioldm2 1": [bench_np.nan, bench_np.nan],
        "pam musicgen_large 0": [0.5, bench_np.nan],  # musicality is finite for other clips
    }

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        out = bench_np.asarray(super().score_batch(inputs, batch_size, max_dur, **kw))
        for i, x in enumerate(inputs):
            out[i] = self.broken.get(x.text, out[i])
        return out


def test_nan_or_infinite_score_is_an_error_row_counted_named_and_retried(bench_toy, tmp_path):
    """Attack: a model returning NaN or inf for a clip was recorded as a success, its score
    dropped from the metrics and never retried. Each must be an error row, counted in
    statistics.json's failures, named in summary.md, and scored again on resume."""
    cfg = bench_cfg(bench_toy, tmp_path, subset="PAM")
    _, info = bench_run(cfg, model=NonFiniteStats(sr=16_000))
    out = tmp_path / "signal_stats" / "toy"
    rows = {r["prompt"]: r for r in map(bench_json.loads, open(out / "results.jsonl"))}
    assert {p for p, r in rows.items() if r["status"] == "error"} == set(NonFiniteStats.broken)
    assert all("NonFiniteScore" in rows[p]["inference_error"] for p in NonFiniteStats.broken)
    assert rows["pam musicgen_large 0"]["predicted_musicality"] is None
    stats = bench_json.loads((out / "statistics.json").read_text())
    assert stats["failed"] == 3 and stats["failure_reasons"] == {"score_error: NonFiniteScore": 3}
    assert "3 x `score_error: NonFiniteScore`" in (out / "summary.md").read_text()
    _, again = bench_run(cfg, model=SignalStatsReward(sr=16_000))
    retried = {
        rows_by_key["prompt"]
        for rows_by_key in map(bench_json.loads, open(out / "results.jsonl"))
        if rows_by_key["bench_row_key"] in again["scored_keys"]
    }
    assert retried == set(NonFiniteStats.broken) and again["failed_rows"] == 0


def test_nan_in_a_dimension_the_model_lacks_stays_a_success(bench_toy, tmp_path):
    """Not an attack: NaN in a column for every clip is the contract's "no such dimension";
    those rows stay ok (a musicality-only model)."""

    class MusicalityOnly(SignalStatsReward):
        def score_batch(self, inputs, batch_size, max_dur, **kw):
            out = bench_np.asarray(super().score_batch(inputs, batch_size, max_dur, **kw))
            out[:, 0] = bench_np.nan
            return out

    _, info = bench_run(
        bench_cfg(bench_toy, tmp_path, subset="PAM"), model=MusicalityOnly(sr=16_000)
    )
    assert info["failed_rows"] == 0 and info["total_rows"] == 12


# === 7. Training resume ===================================================================

from helpers.callbacks import Interrupted, keys_seen
from helpers.train import make_cfg, tiny_module

from audioscore.train import train

RESUME_KEYS = ("train/loss", "val/srcc", "val/ktau", "val/pair_acc", "val/mae", "val/adv_acc")


@pytest.mark.parametrize(
    "adversary",
    [
        [],
        [  # an MLP singer adversary with dropout, re-initialised when epoch 2 starts
            "experiment=muq_lora_grl",
            "adversary=mlp",
            "model.adversary.hidden_dim=8",
            "model.adversary.reset_every_epochs=2",
        ],
    ],
    ids=["plain", "adversary"],
)
def test_resume_after_a_kill_ends_where_the_uninterrupted_run_ends(
    tmp_path, synth_corpus, adversary
):
    """Attack: a run folder's last.ckpt resumed after the run was killed between epochs 2 and 3
    (4 epochs, worker-backed loader, dropout). The resumed epochs must draw the groups and crops
    of epochs 2 and 3 (it drew those of epoch 0 before), and dropout and the adversary's
    re-initialisation the same numbers, so the run ends with the uninterrupted run's metrics and
    weights (within 1e-6), not a silently different model."""
    common = [
        "export=false",
        "data.num_workers=1",
        "trainer.max_epochs=4",
        "+callbacks.keys_seen._target_=helpers.callbacks.KeysSeen",
        *adversary,
    ]
    straight_metrics, straight = train(make_cfg(tmp_path / "straight", synth_corpus, *common))
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=helpers.callbacks.CrashAtEpoch", "+callbacks.kill.epoch=2"]
    with pytest.raises(Interrupted):
        train(make_cfg(run, synth_corpus, *common, *kill))
    last = run / "checkpoints" / "last.ckpt"
    metrics, resumed = train(make_cfg(run, synth_corpus, *common, f"ckpt_path={last}"))

    drawn, expected = keys_seen(resumed["trainer"]), keys_seen(straight["trainer"])
    assert drawn == {2: expected[2], 3: expected[3]}
    keys = [k for k in RESUME_KEYS if k in straight_metrics]
    assert "val/srcc" in keys and ("val/adv_acc" in keys) == bool(adversary)
    assert {k: metrics[k] for k in keys} == pytest.approx(
        {k: straight_metrics[k] for k in keys}, abs=1e-6
    )
    want, got = straight["model"].state_dict(), resumed["model"].state_dict()
    assert want.keys() == got.keys()
    worst = max(float((want[k].double() - got[k].double()).abs().max()) for k in want)
    assert worst <= 1e-6


def test_a_batch_drawn_for_another_epoch_is_refused():
    """Attack: a training batch drawn for another epoch than the one being trained (a loader
    that read its epoch before the checkpoint restored it) must stop training with an error
    that says so, not train silently on other draws."""
    module = tiny_module()  # outside a trainer: epoch 0
    module.on_train_batch_start({"epoch": 0}, 0)
    with pytest.raises(RuntimeError, match="drawn for epoch 2 reached epoch 0"):
        module.on_train_batch_start({"epoch": 2}, 0)


# === end of attacks ========================================================================
