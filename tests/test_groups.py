"""audioscore.data.groups: seed 002's format verbatim, sort check, missing files, paths."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from audioscore.data import GroupsFormatError, MissingAudioError, read_groups
from audioscore.data.groups import strip_trailing_commas

SEED_EXAMPLE = Path(__file__).parent / "data" / "seed002_groups.json"
SEED_DIR = "/data/nfs/audioscore/data/sort/data/audio"
SEED_NAMES = ["20732755_final.m4a", "463674_250811122315010877.m4a"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def touch_all(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_seed_example_is_rejected_by_plain_json():
    with pytest.raises(json.JSONDecodeError):
        json.loads(SEED_EXAMPLE.read_text())


def test_seed_example_verbatim_without_file_check():
    groups = read_groups(SEED_EXAMPLE, check_files=False)
    assert [[it["audio_file"] for it in g] for g in groups] == [
        [f"{SEED_DIR}/{n}" for n in SEED_NAMES]
    ]
    assert all(it["score"] is None and it["singer"] is None for it in groups[0])


def test_seed_example_with_remapped_prefix(tmp_path):
    touch_all(tmp_path / "audio", SEED_NAMES)
    groups = read_groups(SEED_EXAMPLE, prefix_map={SEED_DIR: str(tmp_path / "audio")})
    assert [it["audio_file"] for it in groups[0]] == [
        str(tmp_path / "audio" / n) for n in SEED_NAMES
    ]


def test_seed_example_reports_every_missing_file():
    with pytest.raises(MissingAudioError) as info:
        read_groups(SEED_EXAMPLE)
    assert info.value.paths == [f"{SEED_DIR}/{n}" for n in SEED_NAMES]
    assert "2 audio file(s) not found" in str(info.value) and str(SEED_EXAMPLE) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_files_are_collected_across_groups(tmp_path):
    touch_all(tmp_path, ["a.wav", "c.wav"])
    items = [
        [{"audio_file": n, "score": 90 - i} for i, n in enumerate(names)]
        for names in (["a.wav", "b.wav"], ["c.wav", "d.wav", "e.wav"])
    ]
    path = write(tmp_path / "g.json", json.dumps(items))
    with pytest.raises(MissingAudioError) as info:
        read_groups(path)
    assert info.value.paths == [str(tmp_path / n) for n in ("b.wav", "d.wav", "e.wav")]
    again = pickle.loads(pickle.dumps(info.value))
    assert again.paths == info.value.paths


def test_relative_paths_resolve_against_file_folder_or_root(tmp_path):
    touch_all(tmp_path / "idx" / "clips", ["a.wav"])
    touch_all(tmp_path / "elsewhere" / "clips", ["a.wav"])
    path = write(tmp_path / "idx" / "g.json", '[[{"audio_file": "clips/a.wav", "score": 80}]]')
    assert read_groups(path)[0][0]["audio_file"] == str(tmp_path / "idx" / "clips" / "a.wav")
    other = read_groups(path, root=tmp_path / "elsewhere")
    assert other[0][0]["audio_file"] == str(tmp_path / "elsewhere" / "clips" / "a.wav")


def test_scores_strings_singer_and_extra_keys(tmp_path):
    text = """[[
        {"audio_file": "a.wav", "score": "85", "singer": 7, "lyrics": "la",},
        {"audio_file": "b.wav", "score": 85.0, "singer": "s2"},
        {"audio_file": "c.wav", "score": 60,},
    ],]"""
    groups = read_groups(write(tmp_path / "g.json", text), check_files=False)
    assert [it["score"] for it in groups[0]] == [85.0, 85.0, 60.0]  # ties are allowed
    assert [it["singer"] for it in groups[0]] == ["7", "s2", None]
    assert groups[0][0]["lyrics"] == "la"


def test_ascending_group_is_rejected_with_group_and_positions(tmp_path):
    groups = [
        [{"audio_file": "a.wav", "score": 90}, {"audio_file": "b.wav", "score": 80}],
        [
            {"audio_file": "c.wav", "score": 50},
            {"audio_file": "d.wav", "score": 70},
            {"audio_file": "e.wav", "score": 60},
        ],
    ]
    path = write(tmp_path / "g.json", json.dumps(groups))
    with pytest.raises(GroupsFormatError) as info:
        read_groups(path, check_files=False)
    msg = str(info.value)
    assert "group 1" in msg and "0->1" in msg and "group 0" not in msg and str(path) in msg
    assert len(read_groups(path, check_files=False, require_sorted=False)[1]) == 3


def test_sort_check_comes_before_missing_files(tmp_path):
    bad = [[{"audio_file": "a.wav", "score": 1}, {"audio_file": "b.wav", "score": 2}]]
    with pytest.raises(GroupsFormatError, match="not sorted"):
        read_groups(write(tmp_path / "g.json", json.dumps(bad)))


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"audio_file": "a.wav"}', "top level"),
        ('[{"audio_file": "a.wav"}]', "group 0 must be a list"),
        ("[[]]", "group 0 is empty"),
        ('[["a.wav"]]', "item 0: must be an object"),
        ('[[{"score": 80}]]', "audio_file"),
        ('[[{"audio_file": "a.wav", "score": "good"}]]', "not a number"),
        ('[[{"audio_file": "a.wav", "score": NaN}]]', "not finite"),
        ('[[{"audio_file": "a.wav", "score": true}]]', "must be a number"),
        ('[[{"audio_file": "a.wav", "score": 9}, {"audio_file": "b.wav"}]]', "no score"),
        ('[[{"audio_file": "a.wav"}', "invalid JSON at line 1"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path, text, match):
    path = write(tmp_path / "g.json", text)
    with pytest.raises(GroupsFormatError, match=match) as info:
        read_groups(path, check_files=False)
    assert str(path) in str(info.value)


def test_missing_groups_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="groups file"):
        read_groups(tmp_path / "none.json")


def test_strip_trailing_commas_leaves_strings_alone():
    text = '{"a": ",]", "b": ["x,}", "\\",]",], "c": 1 ,\n }'
    assert json.loads(strip_trailing_commas(text)) == {"a": ",]", "b": ["x,}", '",]'], "c": 1}
    assert strip_trailing_commas("[1, 2]") == "[1, 2]"
    with pytest.raises(json.JSONDecodeError):  # a doubled comma stays an error
        json.loads(strip_trailing_commas("[1,,]"))


def test_same_clip_with_different_scores_is_reported(tmp_path, caplog):
    import logging

    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(b"x")
    groups = [
        [{"audio_file": "a.wav", "score": 90}, {"audio_file": "b.wav", "score": 70}],
        [{"audio_file": "c.wav", "score": 80}, {"audio_file": "a.wav", "score": 60}],
        [{"audio_file": "b.wav", "score": 70}, {"audio_file": "c.wav", "score": 80}],
    ]
    (tmp_path / "g.json").write_text(json.dumps(groups))
    with caplog.at_level(logging.WARNING, logger="audioscore.data.groups"):
        read_groups(tmp_path / "g.json", require_sorted=False)
    text = caplog.text
    assert "1 clip(s) appear with different scores" in text  # b.wav agrees with itself
    assert "a.wav" in text and "group 0 item 0 = 90" in text and "group 1 item 1 = 60" in text
