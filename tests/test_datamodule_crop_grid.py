"""data.crop_grid_seconds: training crops on a fixed per-clip grid, so frozen-encoder features
of training crops repeat (cache hits); null keeps today's continuous random crops exactly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from audiobase.audio import MUQ_SR
from audioscore.data.datamodule import DEFAULT_PREPROCESS, ClipLoader, GroupsDataModule, grid_offset
from audioscore.data.groups import read_groups


@pytest.mark.parametrize("spare,grid", [(2.7, 1.0), (3.0, 1.0), (0.3, 1.0), (5.55, 2.0)])
def test_grid_offsets_cover_the_clip_in_steps_of_at_most_grid(spare, grid):
    rng = np.random.default_rng(0)
    got = sorted({grid_offset(spare, grid, rng) for _ in range(400)})
    steps = int(np.ceil(spare / grid - 1e-9))
    assert len(got) == steps + 1  # a fixed, small set of starts
    assert got[0] == 0.0 and got[-1] == pytest.approx(spare)  # both ends reachable
    assert np.diff(got).max() <= grid + 1e-9


def clip_paths(corpus: dict, min_dur: float) -> list[str]:
    from audiobase.audio import audio_duration

    items = [it for g in read_groups(corpus["train"]) for it in g]
    paths = [it["audio_file"] for it in items if audio_duration(it["audio_file"]) > min_dur]
    assert paths
    return paths[:2]


def test_loader_grid_repeats_crops_and_null_is_unchanged(synth_corpus):
    path = clip_paths(synth_corpus, 2.5)[0]
    crop = 1.0
    pre = DEFAULT_PREPROCESS.replace(max_dur=crop)
    gridded = ClipLoader(pre, crop_grid_s=0.5)
    spare = gridded.duration(path) - crop
    rng = np.random.default_rng(1)
    recs = [gridded.load(path, rng) for _ in range(40)]
    starts = {r["start"] for r in recs}
    allowed = {int(round(o * MUQ_SR)) for o in np.linspace(0, spare, int(np.ceil(spare / 0.5)) + 1)}
    assert starts <= allowed and len(starts) >= 3
    # the same crop gives the same samples and key every time (a cache hit for frozen encoders)
    by_start = {}
    for r in recs:
        if r["start"] in by_start:
            assert r["key"] == by_start[r["start"]]["key"]
            np.testing.assert_array_equal(r["wav"], by_start[r["start"]]["wav"])
        by_start[r["start"]] = r
    # null: continuous starts drawn exactly as before (same RNG stream)
    free = ClipLoader(pre)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(5):
        want = int(round(float(rng_b.uniform(0.0, spare)) * MUQ_SR))
        assert free.load(path, rng_a)["start"] == want
    # validation (rng=None) stays the centre crop with or without the grid
    assert gridded.load(path, None)["start"] == free.load(path, None)["start"]
    with pytest.raises(ValueError, match="crop_grid_seconds"):
        ClipLoader(pre, crop_grid_s=0.0)


def test_datamodule_grid_makes_training_crops_repeat(synth_corpus):
    def keys(grid: float | None) -> list[str]:
        dm = GroupsDataModule(
            [str(synth_corpus["train"])],
            [str(synth_corpus["val"])],
            preprocess=DEFAULT_PREPROCESS.replace(max_dur=2.0),
            crop_grid_seconds=grid,
            groups_per_batch=2,
            max_group_size=6,
            steps_per_epoch=6,
            num_workers=0,
        )
        dm.setup("fit")
        out = []
        for epoch in range(3):
            dm.trainer = SimpleNamespace(current_epoch=epoch)  # each epoch draws anew
            out += [k for b in dm.train_dataloader() for k in b["keys"]]
        return out

    free, grid = keys(None), keys(1.0)
    # 3-4 s clips, 2 s crops: at most 3 grid starts per clip, so keys repeat a lot
    assert len(set(free)) == len(free)
    assert len(set(grid)) < 0.7 * len(grid)
