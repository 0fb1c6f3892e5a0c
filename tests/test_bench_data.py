"""Benchmark JSONL reading, subset rules, paths and duration batching."""

from __future__ import annotations

import json

import pytest
from helpers.bench import make_toy_bench

from bench.data import (
    BenchDataError,
    BenchRow,
    fill_durations,
    make_batches,
    read_bench,
    read_selection,
    resolve_path,
    subset_of,
)


def test_read_bench_filters_split_and_source(tmp_path):
    make_toy_bench(tmp_path)
    rows = read_bench(tmp_path / "bench.jsonl", tmp_path)
    assert {r.subset for r in rows} == {"PAM", "MusicEval", "MusicArena", "CMI-Pref"}
    assert len(rows) == 12 + 7 + 6 + 8  # the train row and the unknown source are dropped
    assert all(r.raw["split"] == "test" for r in rows)
    r = next(r for r in rows if r.subset == "CMI-Pref" and r.raw["ref-audio-path"])
    assert r.audio_a.startswith(str(tmp_path)) and r.ref_audio.endswith("ref0.wav")
    assert r.sides == ["a", "b"]
    keys = [r.key for r in rows]
    assert len(set(keys)) == len(keys)
    only = read_bench(tmp_path / "bench.jsonl", tmp_path, subsets=["PAM"], start_idx=2, end_idx=5)
    assert [r.subset for r in only] == ["PAM"] * 3 and only[0].index == 2


def test_subset_rules_follow_upstream():
    assert subset_of("PAM (music)") == "PAM"
    assert subset_of("SongEval") == "MusicEval"
    assert subset_of("MusicEval-extra") is None  # upstream matches MusicEval exactly
    assert subset_of("Music Arena ['01-2025JULAUG']") == "MusicArena"
    assert subset_of("cmi-arena-annotation") == "CMI-Pref"
    assert subset_of(None) is None
    assert resolve_path("", "/r") is None
    assert resolve_path("/abs/x.wav", "/r") == "/abs/x.wav"
    assert resolve_path("a/../b.wav", "/r") == "/r/b.wav"


def test_bad_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"source": "PAM"}) + "\n{not json\n")
    with pytest.raises(BenchDataError, match=r"bad\.jsonl: line 2: invalid JSON"):
        read_bench(p, tmp_path)
    with pytest.raises(BenchDataError, match="not found"):
        read_bench(tmp_path / "none.jsonl", tmp_path)
    with pytest.raises(BenchDataError, match="unknown subsets"):
        read_bench(p, tmp_path, subsets=["PAMM"])


def fake_row(i: int, durs: list[float]) -> BenchRow:
    raw = {"audio-path": "a.wav"} | ({"audio2": "b.wav"} if len(durs) == 2 else {})
    return BenchRow(
        i, str(i), "PAM", raw, "a", "b" if len(durs) == 2 else None, None, durations=durs
    )


def test_batches_by_duration_keep_pairs_together():
    rows = [fake_row(i, [float(d)] * (1 + i % 2)) for i, d in enumerate([5, 60, 1, 30, 200, 2, 7])]
    batches = make_batches(rows, batch_size=3, max_dur=120.0)
    assert sorted(r.index for b in batches for r in b) == list(range(7))
    for b in batches:
        assert sum(len(r.sides) for r in b) <= 3 or len(b) == 1
    costs = [sum(min(d, 120.0) for d in r.durations) for b in batches for r in b]
    assert costs == sorted(costs, reverse=True)  # longest first, similar lengths together
    capped = make_batches(rows, batch_size=100, max_dur=120.0, max_batch_seconds=130.0)
    assert all(
        sum(min(d, 120) for r in b for d in r.durations) <= 130 or len(b) == 1 for b in capped
    )
    in_order = make_batches(rows, batch_size=2, max_dur=120.0, batching="file")
    assert [r.index for b in in_order for r in b] == list(range(7))


def test_fill_durations_reads_metadata(tmp_path):
    make_toy_bench(tmp_path)
    rows = read_bench(tmp_path / "bench.jsonl", tmp_path, subsets=["MusicArena", "MusicEval"])
    fill_durations(rows, threads=2)
    pair = next(r for r in rows if r.subset == "MusicArena")
    assert len(pair.durations) == 2 and all(0.4 < d < 1.5 for d in pair.durations)
    missing = next(r for r in rows if r.raw["audio-path"].endswith("nope.wav"))
    assert missing.durations == [0.0]


def test_worker_batches_travel_as_one_tensor_with_the_same_values(tmp_path):
    import torch

    from audiobase.preprocess import Preprocess
    from bench.infer import decode_row, make_loader, pack_audio

    make_toy_bench(tmp_path)
    rows = read_bench(tmp_path / "bench.jsonl", tmp_path)
    pre = Preprocess(sr=8000, max_dur=0.3)
    batch = [r for r in rows if r.raw.get("ref-audio-path")] + rows[:3]
    alone = [decode_row(r, pre) for r in batch]
    packed = pack_audio([decode_row(r, pre) for r in batch])

    def waves(decoded):
        return [
            (x.audio, x.ref_audio)
            for d in decoded
            for x in d["sides"].values()
            if not isinstance(x, str)
        ]

    storages = set()
    for (a, ra), (b, rb) in zip(waves(alone), waves(packed), strict=True):
        assert torch.equal(a, b) and (ra is None) == (rb is None)
        if ra is not None:
            assert torch.equal(ra, rb)
        storages |= {t.untyped_storage().data_ptr() for t in (b, rb) if t is not None}
    assert len(storages) == 1  # every waveform of the batch is a view of one tensor
    pair = next(d for d in packed if len(d["sides"]) == 2 and d["row"].ref_audio)
    a, b = pair["sides"]["a"], pair["sides"]["b"]
    assert a.ref_audio is b.ref_audio  # the ref both sides share stays one tensor
    # through a DataLoader worker: the same values as decoding in this process
    (got,) = list(make_loader([batch], pre, num_workers=1))
    for (a, ra), (b, rb) in zip(waves(alone), waves(got), strict=True):
        assert torch.equal(a, b) and (ra is None or torch.equal(ra, rb))


def test_decode_row_reports_each_side(tmp_path):
    from audiobase.preprocess import Preprocess
    from bench.infer import decode_row
    from rewards.base import BatchInput

    make_toy_bench(tmp_path)
    good = next(
        r for r in read_bench(tmp_path / "bench.jsonl", tmp_path) if r.raw.get("ref-audio-path")
    )
    d = decode_row(good, Preprocess(sr=8000, max_dur=0.3))
    assert isinstance(d["sides"]["a"], BatchInput) and d["sides"]["a"].audio.shape == (2400,)
    assert d["sides"]["b"].ref_audio.shape == (2400,) and d["notes"] == []
    empty = fake_row(7, [0.0])
    empty.audio_a, empty.ref_audio = None, str(tmp_path / "missing_ref.wav")
    d = decode_row(empty, Preprocess(sr=8000, max_dur=1.0))
    assert d["sides"]["a"] == "AudioMissingError: row 7: empty 'audio-path' in the benchmark file"
    assert (
        d["notes"][0].startswith("ref_audio_error: AudioMissingError")
        and "missing_ref.wav" in d["notes"][0]
    )


def test_journal_survives_a_line_cut_by_a_kill(tmp_path):
    from bench.store import ResultWriter, compact, read_latest

    path = tmp_path / "results.jsonl"
    with ResultWriter(path) as w:
        w.write([{"bench_row_key": "k0", "bench_row_index": 0, "status": "error"}])
    with open(path, "a") as f:
        f.write('{"bench_row_key": "k1", "bench_row_in')  # the kill
    with ResultWriter(path) as w:  # the rerun appends after the cut line, not onto it
        w.write([{"bench_row_key": "k1", "bench_row_index": 1, "status": "ok"}])
        w.write([{"bench_row_key": "k0", "bench_row_index": 0, "status": "ok"}])
    latest = read_latest([path])
    assert {k: r["status"] for k, r in latest.items()} == {"k0": "ok", "k1": "ok"}
    rows = compact(path, keep=lambda r: r["bench_row_key"] != "gone")
    assert [r["bench_row_key"] for r in rows] == ["k0", "k1"]
    assert path.read_text().count("\n") == 2


def test_toy_bench_layout(tmp_path):
    path = make_toy_bench(tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 12 + 5 + 6 + 8 + 4
    assert (tmp_path / rows[0]["audio-path"]).is_file()
    assert not (tmp_path / "MusicEval_data/test_audio/nope.wav").exists()


def test_utf8_bom_is_accepted(tmp_path):
    path = make_toy_bench(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Windows editors save it
    assert len(read_bench(path, tmp_path)) == 33


def test_selection_counts_what_each_filter_dropped(tmp_path):
    path = make_toy_bench(tmp_path)
    sel = read_selection(path, tmp_path, subsets=["PAM"], start_idx=2, end_idx=5)
    rows, counts = sel.rows, sel.counts
    assert len(rows) == 3
    assert counts == {
        "lines": 35,
        "dropped_split": 1,
        "dropped_source": 1,
        "dropped_subsets": 21,
        "dropped_slice": 9,
        "selected": 3,
    }
