"""Training on several machines through Lightning's own launch: two torchrun "nodes" on
localhost (one CPU process each, rendezvous on 127.0.0.1) train one model together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.train import FAST
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_node(
    node_rank: int, port: int, run_dir: Path, ranks_dir: Path, root: Path
) -> list[str]:
    """The command docs/scaling.md gives for one node of 2, with 1 CPU process per node."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
    launcher += ["--node_rank", str(node_rank), "--nproc_per_node", "1"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    train = ["-m", "audioscore.train", "experiment=muq_lora", *FAST, f"data.root={root}"]
    train += ["trainer.num_nodes=2", "trainer.devices=1", "trainer.accelerator=cpu"]
    train += ["trainer.strategy=ddp", f"hydra.run.dir={run_dir}"]
    # every rank writes its weights at fit start and end (only rank 0 writes checkpoints)
    train += ["+callbacks.rank_weights._target_=helpers.rank_weights.SaveRankWeights"]
    train += [f"+callbacks.rank_weights.out={ranks_dir}"]
    return launcher + train


@pytest.mark.slow
def test_two_torchrun_nodes_train_the_same_weights(tmp_path, synth_corpus):
    """`torchrun --nnodes 2 --node_rank R` started once per node: Lightning's
    TorchElasticEnvironment makes one world of 2; both ranks end with identical weights that
    differ from the start, and only node 0 writes checkpoints and the export."""
    port, ranks = free_port(), tmp_path / "ranks"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    procs = []
    for r in (0, 1):  # each node its own run dir, as on machines without a shared disk
        cmd = torchrun_node(r, port, tmp_path / f"node{r}", ranks, synth_corpus["root"])
        log = open(tmp_path / f"node{r}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    try:
        # ~60 s on a busy 2-core machine (4 processes, each importing torch)
        codes = [p.wait(timeout=600) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    logs = [(tmp_path / f"node{r}.log").read_text() for r in (0, 1)]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in logs)

    for r in (0, 1):
        place = json.loads((ranks / f"rank{r}.json").read_text())
        assert place["global_rank"] == r and place["node_rank"] == r
        assert place["world_size"] == 2 and place["num_nodes"] == 2
        assert place["cluster_environment"] == "TorchElasticEnvironment"
        assert place["global_step"] == 2
    start = load_file(str(ranks / "rank0_start.safetensors"))
    ends = [load_file(str(ranks / f"rank{r}_end.safetensors")) for r in (0, 1)]
    assert ends[0].keys() == ends[1].keys() == start.keys()
    assert all(torch.equal(ends[0][k], ends[1][k]) for k in start)  # gradients were shared
    assert any(not torch.equal(ends[0][k], start[k]) for k in start)  # and they trained
    assert (tmp_path / "node0" / "export" / "model.safetensors").is_file()
    assert list((tmp_path / "node0" / "checkpoints").glob("*.ckpt"))
    assert not (tmp_path / "node1" / "checkpoints").exists()  # rank 1 writes no checkpoint
