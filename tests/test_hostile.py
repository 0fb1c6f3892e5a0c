"""Attacks on the boundary, one test each: everything a user brings in (export folders,
checkpoints, run folders, results files, bench JSONL, HTTP requests, audio files) is data.
Read top to bottom, this module is the list of attacks the trust model (docs/security.md)
defends against; each test names the input, the attack and what must happen instead."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


# === 1-3. Code from data: config interpolation, double resolution, remote code ===========


# === 4. Server: slow clients, nested JSON, truncated audio ================================


# === 5. Decompression bombs and folder walks ==============================================
import base64 as b64_5
import csv as csv_5
import io as io_5
import tracemalloc as tracemalloc_5

import numpy as np_5

import requests as requests_5
from helpers.bench import serve as serve_5
from helpers.bombs import write_silent_flac
from helpers.routes import make_tiny_export
from hydra.utils import instantiate as instantiate_5
from omegaconf import OmegaConf as OmegaConf_5

from audiobase.audio import AudioTooLongError
from audiobase.audio import save_audio as save_audio_5
from audiobase.preprocess import Preprocess as Preprocess_5
from audioscore import score as score_cli_5
from audioscore.data.datamodule import ClipLoader
from bench.baselines import SignalStatsReward
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


def test_server_refuses_flac_bytes_sent_as_wav(tmp_path):
    """Attack: a FLAC bomb posted as the 'wav' of a /score request. Only WAV is read (a WAV
    is never much larger decoded than sent): 400 naming the format."""
    data = write_silent_flac(tmp_path / "bomb.flac", BOMB_SECONDS, sr=16_000).read_bytes()
    srv, url = serve_5(SignalStatsReward())
    try:
        body = {"audio": {"format": "wav", "sr": 16_000, "data": b64_5.b64encode(data).decode()}}
        r = requests_5.post(url, json=body, timeout=30)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.status_code == 400 and "not a WAV file" in r.json()["error"]


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


# === 7. Training resume ===================================================================


# === end of attacks ========================================================================
