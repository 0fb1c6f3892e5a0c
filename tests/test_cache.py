"""FeatureCache: keys, round trip, corruption handling, and atomicity across processes."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from audiobase.cache import CacheError, FeatureCache, file_digest


def test_put_get_roundtrip(tmp_path):
    cache = FeatureCache(tmp_path, "campp-test")
    k = cache.key("abc", 0, 24000)
    assert cache.get(k) is None
    emb = torch.randn(192)
    frames = torch.randn(8, 512).t()  # non-contiguous on purpose
    cache.put(k, {"emb": emb, "frames": frames})
    got = cache.get(k)
    assert set(got) == {"emb", "frames"}
    torch.testing.assert_close(got["emb"], emb)
    torch.testing.assert_close(got["frames"], frames)
    assert (cache.hits, cache.misses) == (1, 1)
    assert k in cache
    # no temp files left behind
    assert [p.name for p in cache.path(k).parent.iterdir()] == [f"{k}.safetensors"]


def test_key_is_deterministic_and_sensitive(tmp_path):
    cache = FeatureCache(tmp_path, "ns")
    parts = ("deadbeef", {"sr": 16000, "chunk_s": 10.0}, np.arange(4), torch.ones(2), b"x")
    assert cache.key(*parts) == cache.key(*parts)
    assert cache.key(*parts) == FeatureCache(tmp_path / "other", "ns").key(*parts)
    variants = [
        ("deadbeef", {"sr": 16000, "chunk_s": 5.0}, np.arange(4), torch.ones(2), b"x"),
        ("deadbeef", {"sr": 16000, "chunk_s": 10.0}, np.arange(5), torch.ones(2), b"x"),
        ("deadbeef", {"sr": 16000, "chunk_s": 10.0}, np.arange(4), torch.zeros(2), b"x"),
        ("deadbeee", {"sr": 16000, "chunk_s": 10.0}, np.arange(4), torch.ones(2), b"x"),
    ]
    keys = {cache.key(*v) for v in variants} | {cache.key(*parts)}
    assert len(keys) == 5
    assert cache.key("1") != cache.key(1)
    assert cache.key("ab", "c") != cache.key("a", "bc")
    with pytest.raises(CacheError):
        cache.key(object())


def test_namespaces_are_separate(tmp_path):
    a, b = FeatureCache(tmp_path, "a"), FeatureCache(tmp_path, "b")
    k = a.key("same")
    a.put(k, {"x": torch.ones(3)})
    assert b.get(k) is None
    with pytest.raises(CacheError):
        FeatureCache(tmp_path, "../escape")


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = FeatureCache(tmp_path, "ns")
    k = cache.key("x")
    cache.put(k, {"x": torch.ones(3)})
    cache.path(k).write_bytes(b"\x00garbage")
    assert cache.get(k) is None
    cache.put(k, {"x": torch.full((3,), 2.0)})  # recomputation overwrites it
    assert cache.get(k)["x"].tolist() == [2.0, 2.0, 2.0]


def test_file_digest_follows_content(tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(b"one")
    d1 = file_digest(f)
    assert d1 == file_digest(tmp_path / "a.wav")
    f.write_bytes(b"two!")
    assert file_digest(f) != d1


def _hammer(root: str, seed: int, n: int) -> None:
    cache = FeatureCache(root, "ns")
    for i in range(n):
        k = cache.key("shared", i % 3)
        # every writer stores the same deterministic value for a key, as ranks do
        cache.put(k, {"x": torch.arange(20_000, dtype=torch.float32) + i % 3})
        got = cache.get(k)
        assert got is not None and got["x"].shape == (20_000,)
        assert torch.equal(got["x"], torch.arange(20_000, dtype=torch.float32) + i % 3)


def test_concurrent_writers_never_expose_partial_files(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), s, 30)) for s in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    leftovers = [p for p in (tmp_path / "ns").rglob("*") if p.is_file()]
    assert len(leftovers) == 3 and all(p.suffix == ".safetensors" for p in leftovers)


def test_atomic_writes_get_the_umask_mode_and_leave_nothing_on_error(tmp_path):
    import os

    from audiobase.files import atomic_path, write_text

    old = os.umask(0o022)
    try:
        p = write_text(tmp_path / "a.txt", "x")
        assert (p.stat().st_mode & 0o777) == 0o644  # readable by others, as open() would make it
    finally:
        os.umask(old)
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("suffix", [".tmp", ".tmp.wav"])
def test_next_write_removes_stale_temp_files_of_interrupted_writes(tmp_path, suffix):
    """A killed writer leaves `.<name>.<random><suffix>`; the next write to that target removes
    such leftovers once they are old enough that no live writer can own them."""
    import os
    import time

    from audiobase.files import STALE_TEMP_AGE_S, atomic_path

    stale = tmp_path / f".x.wav.k3j_9a0q{suffix}"  # named as mkstemp names them
    stale_dir = tmp_path / f".x.wav.zz8aa1b2{suffix}"  # an interrupted directory write
    busy = tmp_path / f".x.wav.b7c2d1e0{suffix}"  # another writer's, in progress
    other = tmp_path / f".y.wav.k3j_9a0q{suffix}"  # another target's: its own writes clean it
    notes = tmp_path / ".x.wav.notes"  # not a temp name
    for p in (stale, busy, other, notes):
        p.write_bytes(b"half")
    stale_dir.mkdir()
    (stale_dir / "weights").write_bytes(b"half")
    old = time.time() - STALE_TEMP_AGE_S - 60
    for p in (stale, stale_dir, other, notes):
        os.utime(p, (old, old))
    with atomic_path(tmp_path / "x.wav", suffix=suffix) as tmp:
        tmp.write_bytes(b"whole")
    assert not stale.exists() and not stale_dir.exists()
    assert busy.exists() and other.exists() and notes.exists()
    assert (tmp_path / "x.wav").read_bytes() == b"whole"
