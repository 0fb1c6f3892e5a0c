"""bench.store and bench.resume: the results journal (append, read back, last record wins,
compaction) and setting aside the records of another fingerprint, on tiny tmp files."""

from __future__ import annotations

import json
import logging
import shutil
from collections import namedtuple

import pytest

from bench.guard import DiskSpaceError, RunRefused
from bench.resume import RESULTS, append_lines, aside_path, part_files, set_aside
from bench.store import (
    ResultsFileError,
    ResultsStore,
    ResultWriter,
    check_record,
    compact,
    iter_lines,
    iter_records,
    read_latest,
    read_results,
)

FP_A, FP_B = "a" * 16, "b" * 16


def rec(key: str, index: int = 0, fp: str | None = FP_A, **more) -> dict:
    out = {"bench_row_key": key, "bench_row_index": index, **more}
    if fp is not None:
        out["bench_fingerprint"] = fp
    return out


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def keys(records) -> list[str]:
    return [r["bench_row_key"] for r in records]


# ------------------------------------------------------------------------ ResultWriter


def test_writer_creates_the_folder_and_each_write_is_readable_before_close(tmp_path):
    path = tmp_path / "a" / "b" / "r.jsonl"
    w = ResultWriter(path)
    assert path.parent.is_dir()
    w.write([rec("k1")])
    assert path.read_text() == json.dumps(rec("k1")) + "\n"
    w.write([rec("k2"), rec("k3")])
    assert keys(iter_records(path)) == ["k1", "k2", "k3"]
    w.close()


def test_writer_appends_to_an_existing_journal(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(jsonl(rec("old")))
    with ResultWriter(path) as w:
        w.write([rec("new")])
    assert path.read_text() == jsonl(rec("old"), rec("new"))


def test_writer_ends_a_line_cut_by_a_kill_before_appending(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"bench_row_key": "cut')
    with ResultWriter(path) as w:
        w.write([rec("new")])
    assert path.read_text() == '{"bench_row_key": "cut\n' + jsonl(rec("new"))
    assert keys(iter_records(path)) == ["new"]


def test_writer_ends_a_one_byte_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("{")
    with ResultWriter(path) as w:
        w.write([rec("new")])
    assert path.read_text() == "{\n" + jsonl(rec("new"))


def test_writer_close_ends_the_file_and_a_second_close_is_harmless(tmp_path):
    w = ResultWriter(tmp_path / "r.jsonl")
    w.write([rec("k")])
    f = w._f
    w.close()
    assert f.closed and w._f is None
    w.close()


def test_writer_reopens_after_close(tmp_path):
    path = tmp_path / "r.jsonl"
    w = ResultWriter(path)
    w.write([rec("a")])
    w.close()
    w.write([rec("b")])
    w.close()
    assert path.read_text() == jsonl(rec("a"), rec("b"))


def test_context_manager_returns_the_writer_and_closes_it(tmp_path):
    with ResultWriter(tmp_path / "r.jsonl") as w:
        assert isinstance(w, ResultWriter)
        w.write([rec("k")])
    assert w._f is None


# ------------------------------------------------------------------------ check_record


def test_results_file_error_names_file_line_and_reason(tmp_path):
    e = ResultsFileError(tmp_path / "r.jsonl", 7, "bad")
    assert str(e) == f"{tmp_path / 'r.jsonl'}:7: bad"
    assert (e.path, e.lineno, e.reason) == (str(tmp_path / "r.jsonl"), 7, "bad")
    assert isinstance(e, RunRefused)


def test_check_record_accepts_a_record_without_index_or_fingerprint(tmp_path):
    check_record(tmp_path, 1, {"bench_row_key": "k"})
    check_record(tmp_path, 1, {"bench_row_key": "k", "bench_fingerprint": ""})
    check_record(tmp_path, 1, {"bench_row_key": "k", "bench_fingerprint": "0123456789abcdef"})


def test_check_record_refuses_a_key_that_is_not_a_string(tmp_path):
    with pytest.raises(ResultsFileError) as e:
        check_record(tmp_path / "r", 3, {"bench_row_key": 5})
    assert str(e.value) == f"{tmp_path / 'r'}:3: bench_row_key must be a string, got int 5"


def test_check_record_refuses_an_index_that_is_not_an_integer(tmp_path):
    for bad in ("1", 1.0, True):
        with pytest.raises(ResultsFileError) as e:
            check_record(tmp_path / "r", 2, {"bench_row_key": "k", "bench_row_index": bad})
        assert (
            str(e.value) == f"{tmp_path / 'r'}:2: bench_row_index must be an integer, got {bad!r}"
        )


@pytest.mark.parametrize("fp", ["ABCDEF", "a" * 65, "../x", 16, "a b", "abc\n"])
def test_check_record_refuses_a_fingerprint_that_is_not_hex_digits(tmp_path, fp):
    with pytest.raises(ResultsFileError) as e:
        check_record(tmp_path / "r", 4, {"bench_row_key": "k", "bench_fingerprint": fp})
    assert (e.value.path, e.value.lineno) == (str(tmp_path / "r"), 4)
    assert e.value.reason == (
        f"bench_fingerprint must be hex digits (bench.run writes 16), got {fp!r:.80}: "
        "this line was not written by bench.run; remove it or move the file away"
    )


def test_check_record_accepts_64_hex_digits(tmp_path):
    check_record(tmp_path, 1, {"bench_row_key": "k", "bench_fingerprint": "f" * 64})


# ------------------------------------------------------------------------ reading


def test_iter_lines_numbers_lines_counting_blank_ones(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2]\n')
    assert list(iter_lines(path)) == [(1, {"a": 1}), (4, [2])]


def test_iter_lines_reads_a_byte_order_mark_on_the_first_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert list(iter_lines(path)) == [(1, {"a": 1})]


def test_iter_lines_skips_a_cut_line_with_a_warning_naming_it(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"cut\n{"b": 2}\n')
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        assert list(iter_lines(path)) == [(1, {"a": 1}), (3, {"b": 2})]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:2: skipping an unreadable line (cut by a kill?)"
    ]


def test_iter_lines_reads_a_byte_order_mark_only_on_the_first_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n\xef\xbb\xbf{"b": 2}\n')
    assert list(iter_lines(path)) == [(1, {"a": 1})]


def test_iter_lines_refuses_text_that_is_not_utf8_naming_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.raises(ResultsFileError) as e:
        list(iter_lines(path))
    assert e.value.reason.startswith("not UTF-8 text (")
    assert (e.value.path, e.value.lineno) == (str(path), 2)


def test_iter_lines_refuses_json_nested_too_deeply(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ResultsFileError) as e:
        list(iter_lines(path))
    assert str(e.value) == f"{path}:1: JSON nested too deeply"


def test_iter_records_of_a_missing_file_is_empty(tmp_path):
    assert list(iter_records(tmp_path / "none.jsonl")) == []
    assert list(iter_records(tmp_path)) == []  # a folder is not a journal


def test_iter_records_keyed_keeps_only_our_records(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(jsonl(rec("k"), {"upstream": 1}) + "[1]\n3\n")
    assert list(iter_records(path)) == [rec("k")]
    assert list(iter_records(path, keyed=False)) == [rec("k"), {"upstream": 1}]


def test_iter_records_reads_on_after_a_line_it_leaves_out(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("[1]\n" + jsonl({"upstream": 1}, rec("k")))
    assert list(iter_records(path)) == [rec("k")]
    assert list(iter_records(path, keyed=False)) == [{"upstream": 1}, rec("k")]


def test_iter_records_checks_our_records(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(jsonl(rec("k"), {"bench_row_key": "x", "bench_row_index": "1"}))
    with pytest.raises(ResultsFileError) as e:
        list(iter_records(path))
    assert (e.value.path, e.value.lineno) == (str(path), 2)


def test_read_latest_keeps_the_last_record_per_row_over_journals_in_order(tmp_path):
    p1, p2 = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    p1.write_text(jsonl(rec("a", status="error"), rec("b", status="ok")))
    p2.write_text(jsonl(rec("a", status="ok")))
    latest = read_latest([p1, p2, tmp_path / "missing.jsonl"])
    assert latest == {"a": rec("a", status="ok"), "b": rec("b", status="ok")}


def test_read_latest_turns_a_nan_score_of_a_dimension_the_model_has_into_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    field = "predicted_musicality"
    path.write_text(
        jsonl(
            rec("a", status="ok", **{field: 0.5}),
            rec("b", status="ok", **{field: None, "bench_nan_scores": [field]}),
        )
    )
    latest = read_latest([path])
    assert latest["a"]["status"] == "ok" and latest["b"]["status"] == "error"


def test_read_results_orders_our_rows_by_index_then_upstream_rows_in_file_order(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        jsonl({"up": 2}, rec("c", 2), rec("a", 1), {"up": 1}, rec("c", 2, status="x"))
        + jsonl({"bench_row_key": "z"})
    )
    rows = read_results(path)
    assert rows == [
        {"bench_row_key": "z"},
        rec("a", 1),
        rec("c", 2, status="x"),
        {"up": 2},
        {"up": 1},
    ]


def test_read_results_flags_nan_scores(tmp_path):
    path = tmp_path / "r.jsonl"
    field = "predicted_musicality"
    path.write_text(
        jsonl(
            rec("a", 0, status="ok", **{field: 0.5}),
            rec("b", 1, status="ok", **{field: None, "bench_nan_scores": [field]}),
        )
    )
    assert [r["status"] for r in read_results(path)] == ["ok", "error"]


# ------------------------------------------------------------------------ compact


def test_compact_merges_parts_one_record_per_row_sorted_and_removes_parts(tmp_path):
    results, part = tmp_path / "results.jsonl", tmp_path / "results.rank1.jsonl"
    results.write_text(jsonl(rec("b", 1), rec("a", 0, status="error")))
    part.write_text(jsonl(rec("a", 0, status="ok"), rec("c", 1)))
    rows = compact(results, [part])
    assert rows == [rec("a", 0, status="ok"), rec("b", 1), rec("c", 1)]
    assert list(iter_records(results)) == rows
    assert not part.exists()


def test_compact_sorts_rows_by_index_before_key(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(jsonl(rec("a", 1), rec("z", 0)))
    assert keys(compact(results)) == ["z", "a"]


def test_compact_sorts_rows_without_an_index_first(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(jsonl(rec("a", 1), {"bench_row_key": "z"}))
    assert keys(compact(results)) == ["z", "a"]


def test_compact_drops_the_rows_keep_refuses(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(jsonl(rec("a", 0), rec("b", 1)))
    rows = compact(results, keep=lambda r: r["bench_row_key"] != "a")
    assert keys(rows) == ["b"] and keys(iter_records(results)) == ["b"]


def test_compact_tolerates_a_missing_part(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(jsonl(rec("a")))
    assert keys(compact(results, [tmp_path / "results.rank0.jsonl"])) == ["a"]


Usage = namedtuple("Usage", "total used free")


def test_compact_needs_the_size_of_the_journals_free_and_no_more(tmp_path, monkeypatch):
    results, part = tmp_path / "results.jsonl", tmp_path / "results.rank0.jsonl"
    results.write_text(jsonl(rec("a")))
    part.write_text(jsonl(rec("b")))
    need = results.stat().st_size + part.stat().st_size
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(0, 0, need - 1))
    with pytest.raises(DiskSpaceError, match=f"compacting {results} needs"):
        compact(results, [part])
    assert part.exists() and keys(iter_records(results)) == ["a"]
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(0, 0, need))
    assert keys(compact(results, [part])) == ["a", "b"]


# ------------------------------------------------------------------------ resume


def test_part_files_are_the_rank_journals_sorted(tmp_path):
    for name in ("results.rank1.jsonl", "results.rank0.jsonl", "results.jsonl", "x.jsonl"):
        (tmp_path / name).write_text("")
    assert [p.name for p in part_files(tmp_path)] == ["results.rank0.jsonl", "results.rank1.jsonl"]


def test_aside_path_names_the_fingerprint_or_unknown(tmp_path):
    assert aside_path(tmp_path, FP_A) == tmp_path / f"results.{FP_A}.jsonl"
    assert aside_path(tmp_path, "") == tmp_path / "results.unknown.jsonl"


def test_aside_path_refuses_a_fingerprint_that_is_not_hex(tmp_path):
    with pytest.raises(RunRefused) as e:
        aside_path(tmp_path, "../x")
    assert (
        str(e.value) == f"{tmp_path}: fingerprint '../x' is not hex digits; refusing to name a file"
    )


def test_append_lines_ends_an_unended_last_line_first(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text("x")
    append_lines(path, ["y", "z"])
    assert path.read_text() == "x\ny\nz\n"


def test_append_lines_creates_the_file(tmp_path):
    path = tmp_path / "f.jsonl"
    append_lines(path, ["y"])
    assert path.read_text() == "y\n"


def test_set_aside_of_the_same_fingerprint_moves_nothing(tmp_path):
    (tmp_path / RESULTS).write_text(jsonl(rec("a", fp=FP_A)))
    assert set_aside(tmp_path, FP_A) == []
    assert keys(iter_records(tmp_path / RESULTS)) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESULTS]


def test_set_aside_renames_a_file_of_one_other_fingerprint(tmp_path, caplog):
    text = jsonl(rec("a", fp=FP_A))
    (tmp_path / RESULTS).write_text(text)
    with caplog.at_level(logging.WARNING, logger="bench.resume"):
        moved = set_aside(tmp_path, FP_B)
    assert moved == [tmp_path / f"results.{FP_A}.jsonl"]
    assert moved[0].read_text() == text and not (tmp_path / RESULTS).exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: the model, its code, weights, preprocessing or batching changed "
        f"(fingerprint {FP_B}); earlier scores moved to results.{FP_A}.jsonl, scoring starts "
        f"afresh in {RESULTS}"
    ]


def test_set_aside_files_records_without_a_fingerprint_as_unknown(tmp_path):
    (tmp_path / RESULTS).write_text(jsonl(rec("a", fp=None)))
    assert set_aside(tmp_path, FP_B) == [tmp_path / "results.unknown.jsonl"]


def test_set_aside_splits_a_mixed_file_and_keeps_the_runs_own_records(tmp_path):
    (tmp_path / RESULTS).write_text(
        jsonl(rec("a", fp=FP_A), rec("b", fp=FP_B), rec("c", fp=None), rec("d", fp=FP_A))
    )
    moved = set_aside(tmp_path, FP_B)
    assert moved == [tmp_path / "results.unknown.jsonl", tmp_path / f"results.{FP_A}.jsonl"]
    assert keys(iter_records(moved[1])) == ["a", "d"]
    assert keys(iter_records(moved[0])) == ["c"]
    assert (tmp_path / RESULTS).read_text() == json.dumps(rec("b", fp=FP_B)) + "\n"


def test_set_aside_appends_to_an_existing_aside_file(tmp_path):
    aside = tmp_path / f"results.{FP_A}.jsonl"
    aside.write_text(jsonl(rec("old", fp=FP_A)))
    (tmp_path / RESULTS).write_text(jsonl(rec("new", fp=FP_A)))
    assert set_aside(tmp_path, FP_B) == [aside]
    assert keys(iter_records(aside)) == ["old", "new"]
    assert (tmp_path / RESULTS).read_text() == ""


def test_set_aside_takes_the_rank_parts_and_removes_them(tmp_path):
    part = tmp_path / "results.rank0.jsonl"
    (tmp_path / RESULTS).write_text(jsonl(rec("a", fp=FP_A)))
    part.write_text(jsonl(rec("b", fp=FP_A), rec("c", fp=FP_B)))
    moved = set_aside(tmp_path, FP_B)
    assert moved == [tmp_path / f"results.{FP_A}.jsonl"]
    assert keys(iter_records(moved[0])) == ["a", "b"]
    assert keys(iter_records(tmp_path / RESULTS)) == ["c"] and not part.exists()


def test_set_aside_of_parts_alone_of_the_run_keeps_them(tmp_path):
    part = tmp_path / "results.rank0.jsonl"
    part.write_text(jsonl(rec("b", fp=FP_B)))
    assert set_aside(tmp_path, FP_B) == []
    assert part.exists()


def test_set_aside_brings_back_the_runs_own_scores_after_the_current_ones(tmp_path, caplog):
    kept = tmp_path / f"results.{FP_B}.jsonl"
    kept.write_text(jsonl(rec("old", fp=FP_B)))
    (tmp_path / RESULTS).write_text(jsonl(rec("a", fp=FP_A)))
    with caplog.at_level(logging.WARNING, logger="bench.resume"):
        moved = set_aside(tmp_path, FP_B)
    assert moved == [tmp_path / f"results.{FP_A}.jsonl"]
    assert keys(iter_records(tmp_path / RESULTS)) == ["old"] and not kept.exists()
    assert caplog.records[-1].getMessage() == (
        f"{tmp_path}: resuming the scores of fingerprint {FP_B} kept in {kept.name}"
    )


def test_set_aside_brings_back_kept_scores_before_the_current_file_of_its_own(tmp_path):
    kept = tmp_path / f"results.{FP_B}.jsonl"
    kept.write_text(jsonl(rec("old", fp=FP_B)))
    (tmp_path / RESULTS).write_text(jsonl(rec("new", fp=FP_B)) + "\n")
    assert set_aside(tmp_path, FP_B) == []
    assert (tmp_path / RESULTS).read_text() == jsonl(rec("old", fp=FP_B), rec("new", fp=FP_B))


def test_set_aside_without_results_brings_back_kept_scores(tmp_path):
    kept = tmp_path / f"results.{FP_B}.jsonl"
    kept.write_text(jsonl(rec("old", fp=FP_B)))
    assert set_aside(tmp_path, FP_B) == []
    assert (tmp_path / RESULTS).read_text() == jsonl(rec("old", fp=FP_B))


def test_set_aside_when_the_aside_file_exists_appends_instead_of_renaming(tmp_path):
    aside = tmp_path / f"results.{FP_A}.jsonl"
    aside.write_text("x")  # unended line
    (tmp_path / RESULTS).write_text(jsonl(rec("a", fp=FP_A)))
    set_aside(tmp_path, FP_B)
    assert aside.read_text() == "x\n" + json.dumps(rec("a", fp=FP_A)) + "\n"


def test_set_aside_keeps_the_runs_records_one_a_line_and_text_unescaped(tmp_path):
    mine = [rec("b", fp=FP_B, text="é"), rec("c", fp=FP_B)]
    (tmp_path / RESULTS).write_text(jsonl(rec("a", fp=FP_A, text="é"), *mine))
    set_aside(tmp_path, FP_B)
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in mine]
    assert (tmp_path / RESULTS).read_text(encoding="utf-8") == "".join(lines)
    assert '"text": "é"' in (tmp_path / f"results.{FP_A}.jsonl").read_text(encoding="utf-8")


def test_set_aside_logs_every_file_that_received_records(tmp_path, caplog):
    (tmp_path / RESULTS).write_text(jsonl(rec("a", fp=FP_A), rec("c", fp=None), rec("b", fp=FP_B)))
    with caplog.at_level(logging.WARNING, logger="bench.resume"):
        set_aside(tmp_path, FP_B)
    assert (
        caplog.records[0]
        .getMessage()
        .endswith(
            f"earlier scores moved to results.unknown.jsonl, results.{FP_A}.jsonl, scoring starts "
            f"afresh in {RESULTS}"
        )
    )


# ------------------------------------------------------------------------ ResultsStore


def ok(key: str, index: int = 0, fp: str | None = FP_A, **more) -> dict:
    return rec(key, index, fp, status="ok", predicted_musicality=1.0, **more)


def test_store_opens_results_and_rank_parts_in_file_order(tmp_path):
    (tmp_path / RESULTS).write_text(jsonl(ok("k1"), ok("k2")))
    (tmp_path / "results.rank1.jsonl").write_text(jsonl(ok("k4")))
    (tmp_path / "results.rank0.jsonl").write_text(jsonl(ok("k3")))
    store = ResultsStore.open(tmp_path)
    assert keys(store.records) == ["k1", "k2", "k3", "k4"]
    assert store.results == tmp_path / RESULTS


def test_store_of_an_empty_folder_holds_nothing(tmp_path):
    store = ResultsStore.open(tmp_path)
    assert store.records == [] and store.latest() == {} and store.done(FP_A) == set()


def test_latest_keeps_the_last_record_of_each_key_as_a_copy(tmp_path):
    first, last = ok("k1", note="first"), ok("k1", note="last")
    store = ResultsStore(tmp_path, [first, ok("k2"), last])
    latest = store.latest()
    assert sorted(latest) == ["k1", "k2"] and latest["k1"]["note"] == "last"
    latest["k1"]["note"] = "changed"
    assert last["note"] == "last"  # the store's records are not the copies


def test_latest_turns_a_nan_score_into_an_error_without_touching_the_records(tmp_path):
    good = ok("k1")
    nan = rec(
        "k2", status="ok", predicted_musicality=None, bench_nan_scores=["predicted_musicality"]
    )
    store = ResultsStore(tmp_path, [good, nan])
    latest = store.latest()
    assert latest["k2"]["status"] != "ok" and "NonFiniteScore" in latest["k2"]["inference_error"]
    assert nan["status"] == "ok" and "inference_error" not in nan


def test_done_is_the_ok_rows_of_that_fingerprint_by_their_last_record(tmp_path):
    records = [
        ok("k1"),
        ok("k2", fp=FP_B),
        ok("k3"),
        rec("k3", status="error", inference_error="boom"),  # retried later: not done
        rec("k4", status="error"),
        ok("k5", fp=None),
    ]
    store = ResultsStore(tmp_path, records)
    assert store.done(FP_A) == {"k1"}
    assert store.done(FP_B) == {"k2"}


def test_writer_appends_to_the_results_file_and_add_records_what_it_wrote(tmp_path):
    (tmp_path / RESULTS).write_text(jsonl(ok("k1")))
    store = ResultsStore.open(tmp_path)
    w = store.writer()
    w.write([ok("k2", 1)])
    w.close()
    assert keys(iter_records(tmp_path / RESULTS)) == ["k1", "k2"]
    assert keys(store.records) == ["k1"]  # the writer does not change the store by itself
    store.add([ok("k2", 1)])
    assert keys(store.records) == ["k1", "k2"] and store.done(FP_A) == {"k1", "k2"}


def test_store_compact_merges_parts_keeps_the_last_record_in_row_order(tmp_path):
    (tmp_path / RESULTS).write_text(jsonl(ok("k2", 2), rec("k1", 1, status="error")))
    (tmp_path / "results.rank0.jsonl").write_text(jsonl(ok("k1", 1, note="retried")))
    (tmp_path / "results.rank1.jsonl").write_text(jsonl(ok("k0", 0)))
    store = ResultsStore.open(tmp_path)
    rows = store.compact()
    assert keys(rows) == ["k0", "k1", "k2"] and rows[1]["note"] == "retried"
    assert keys(iter_records(tmp_path / RESULTS)) == ["k0", "k1", "k2"]
    assert part_files(tmp_path) == []
    assert store.records == rows  # later lookups see the compacted file


def test_store_compact_drops_what_keep_refuses(tmp_path):
    (tmp_path / RESULTS).write_text(jsonl(ok("k1", 1), ok("k2", 2, fp=FP_B)))
    store = ResultsStore.open(tmp_path)
    rows = store.compact(keep=lambda r: r["bench_fingerprint"] == FP_A)
    assert keys(rows) == ["k1"] and keys(iter_records(tmp_path / RESULTS)) == ["k1"]


def test_store_compact_refuses_up_front_when_the_disk_is_short(tmp_path, monkeypatch):
    (tmp_path / RESULTS).write_text(jsonl(ok("k1", 1), ok("k2", 2)))
    (tmp_path / "results.rank0.jsonl").write_text(jsonl(ok("k3", 3)))
    before = (tmp_path / RESULTS).read_text()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 10, 10))
    store = ResultsStore.open(tmp_path)
    with pytest.raises(DiskSpaceError, match=f"compacting {tmp_path / RESULTS}"):
        store.compact()
    assert (tmp_path / RESULTS).read_text() == before and part_files(tmp_path)


def test_set_aside_on_a_store_updates_its_records(tmp_path):
    (tmp_path / RESULTS).write_text(jsonl(ok("k1", fp=FP_B), ok("k2", fp=FP_A)))
    store = ResultsStore.open(tmp_path)
    moved = set_aside(store, FP_A)
    assert moved == [aside_path(tmp_path, FP_B)]
    assert keys(store.records) == ["k2"] and store.done(FP_A) == {"k2"}
    assert keys(iter_records(tmp_path / RESULTS)) == ["k2"]
    assert keys(iter_records(moved[0])) == ["k1"]


def test_set_aside_renames_a_file_of_one_other_fingerprint_whole(tmp_path):
    body = jsonl(ok("k1", fp=FP_B), ok("k2", fp=FP_B))
    (tmp_path / RESULTS).write_text(body)
    store = ResultsStore.open(tmp_path)
    assert set_aside(store, FP_A) == [aside_path(tmp_path, FP_B)]
    assert aside_path(tmp_path, FP_B).read_text() == body
    assert store.records == [] and not (tmp_path / RESULTS).exists()


def test_set_aside_brings_back_the_kept_records_of_the_fingerprint_before_the_new_ones(tmp_path):
    aside_path(tmp_path, FP_A).write_text(jsonl(ok("k1", fp=FP_A)))
    (tmp_path / RESULTS).write_text(jsonl(ok("k2", fp=FP_A)))
    store = ResultsStore.open(tmp_path)
    assert set_aside(store, FP_A) == []
    assert keys(store.records) == ["k1", "k2"]
    assert keys(iter_records(tmp_path / RESULTS)) == ["k1", "k2"]
    assert not aside_path(tmp_path, FP_A).exists()


def test_writer_written_holds_every_batch_it_wrote(tmp_path):
    w = ResultWriter(tmp_path / RESULTS)
    w.write([rec("k1")])
    w.write([rec("k2"), rec("k3")])
    w.close()
    assert keys(w.written) == ["k1", "k2", "k3"]
