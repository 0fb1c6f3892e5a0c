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


# === 6, 8, 9. Paths, locks and non-finite scores in the bench =============================


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
