"""GroupsDataModule: training draws seeded by (seed, epoch, position); validation truth."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from audioscore.data.datamodule import DEFAULT_PREPROCESS, GroupsDataModule
from audioscore.data.groups import read_groups
from audioscore.metrics import GroupRanking


def datamodule(train: str, val: str, **kw) -> GroupsDataModule:
    small = dict(groups_per_batch=2, max_group_size=3, steps_per_epoch=2, num_workers=0)
    dm = GroupsDataModule(
        [train], [val], preprocess=DEFAULT_PREPROCESS.replace(max_dur=1.0), **{**small, **kw}
    )
    dm.setup("fit")
    return dm


def epoch_keys(dm: GroupsDataModule, epoch: int) -> list[str]:
    dm.trainer = SimpleNamespace(current_epoch=epoch)  # what Lightning's trainer tells it
    return [k for batch in dm.train_dataloader() for k in batch["keys"]]


def test_training_draws_follow_the_seed_and_epoch_not_the_random_state(synth_corpus):
    """A run resumed at epoch 2 draws the groups and crops an uninterrupted run draws there,
    whatever else consumed random numbers before (model init, dropout, earlier epochs)."""
    train, val = str(synth_corpus["train"]), str(synth_corpus["val"])
    torch.manual_seed(7)  # seed_everything: the datamodule's seed defaults to torch's
    straight = datamodule(train, val)
    seen = [epoch_keys(straight, e) for e in range(3)]
    torch.rand(1000)  # a resumed process arrives with another random state
    resumed = datamodule(train, val)
    assert epoch_keys(resumed, 2) == seen[2]
    assert seen[2] != seen[1]  # each epoch draws anew
    assert epoch_keys(datamodule(train, val, seed=8), 2) != seen[2]


def test_a_worker_backed_loader_draws_for_the_epoch_of_its_first_batch(synth_corpus):
    """Lightning may create the training iterator before it restores a checkpoint's epoch (a
    scheduler asks for the number of steps in configure_optimizers); the worker then must not
    have drawn for the epoch the trainer said at that time, but for the epoch it says when the
    first batch is requested."""
    train, val = str(synth_corpus["train"]), str(synth_corpus["val"])
    dm = datamodule(train, val, num_workers=1)
    trainer = SimpleNamespace(current_epoch=0)
    dm.trainer = trainer
    early = iter(dm.train_dataloader())  # before the restore
    trainer.current_epoch = 2  # restored
    batches = list(early)
    assert [b["epoch"] for b in batches] == [2, 2]
    assert [k for b in batches for k in b["keys"]] == epoch_keys(datamodule(train, val), 2)


@pytest.mark.parametrize("scored", [True, False])
def test_validation_truth_ranks_the_best_clip_first(synth_corpus, tmp_path, scored):
    """Seed 002's groups files may have no `score`: then the order is the truth (best first,
    truth = -position), and a scorer that agrees with the true quality gets srcc = 1."""
    groups = read_groups(synth_corpus["val"])
    quality = {it["audio_file"]: float(it["score"]) for g in groups for it in g}
    if not scored:
        groups = [[{"audio_file": it["audio_file"]} for it in g] for g in groups]
    val = tmp_path / "val.json"
    val.write_text(json.dumps(groups))
    dm = datamodule(str(synth_corpus["train"]), str(val))
    metric = GroupRanking()
    truths = []
    for batch in dm.val_dataloader():
        pred = torch.tensor([quality[p] for p in batch["paths"]])  # a scorer that is right
        metric.update(batch["index"], pred, batch["truth"], batch["group"])
        truths += batch["truth"].tolist()
    m = metric.compute()
    assert m["srcc"] == pytest.approx(1.0) and m["pair_acc"] == pytest.approx(1.0)
    if not scored:
        assert truths[:3] == [0.0, -1.0, -2.0]  # the first group: its order, best first
