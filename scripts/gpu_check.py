"""GPU check: scoring throughput, peak memory, training step time and DDP at full size; one JSON.

python scripts/gpu_check.py [--out gpu_check.json] [--budget 270] [--parts a,b,...] [--smoke]

Prepared for a machine with a CUDA GPU; every model is random (no downloads), built from the
published configs and loaded through the user's path:
- `muq_scorer`: the plan A scorer at full size (conf/train `experiment=muq_lora`, MuQ-large
  architecture `model.net.encoder.muq_config=large`, layer 6 + LoRA + the full head), bf16
  autocast, batch sizes 1..64 of 30 s clips: audio-seconds per second, seconds per batch and
  peak GPU memory per batch size.
- `cmi_rm`: CMI-RM at full size: a random MuQ-large and a random XLM-R base (transformers'
  default `XLMRobertaConfig` is xlm-roberta-base's architecture) saved as MuQ-MuLan-large lays
  them out, the reward head from `CMIRMConfig`'s defaults (the released architecture), loaded
  with `rewards.cmi_rm.CMIRewardModel(checkpoint, device, bf16=True)` and scored with
  `score_batch` at the same batch sizes (text and lyrics prompts included). The tokenizer is the
  project's offline character tokenizer (XLM-R's sentencepiece model cannot be built offline),
  so prompts give more tokens than the real one would: text costs are an upper bound.
- `train_plan_a`, `train_plan_b`: one optimizer step (forward, ListMLE, backward, AdamW step,
  gradient clipping; Lightning, the config's precision: bf16-mixed on GPU) of
  `experiment=muq_lora` / `experiment=hybrid_campp` at full size (plan B's CAM++: the official
  class at cn_common's size, random), on the config's global batch (`data.groups_per_batch` x
  `data.max_group_size` clips of `data.preprocess.max_dur` s) of in-memory audio (no decoding,
  no feature cache: CAM++ runs every step); median step time after warm-up steps, peak memory.
- `ddp`: the plan A step with `devices=<all visible GPUs>` (Lightning DDP, the global batch split
  over ranks), in a subprocess (Lightning relaunches this script per rank); skipped with fewer
  than 2 GPUs. Scaling efficiency = DDP clips/s over single-GPU clips/s x GPUs.

Budget: `--budget` seconds for everything (default 270, under 5 minutes with start-up). Each part
runs only if enough budget is left (else `status: skipped` with the reason), is stopped when its
share runs out (`status: timeout`, with what it measured so far), and a watchdog writes the JSON
and exits if the whole run overruns by 30 s. The JSON is rewritten after every part.

`--smoke`: tiny configs on whatever device is there (CPU here), batch sizes 1-2, 2 s clips and
a few steps: the same code paths in seconds (tests/test_gpu_check_smoke.py). DDP is skipped
without GPUs unless `--ddp-cpu N` (N CPU processes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Lightning, Hydra, muq and the project's models are imported by the parts that use them: an
# over-budget or skipped run (and --help) starts in a second instead of ten.

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONF = str(ROOT / "conf" / "train")
PARTS = ("muq_scorer", "cmi_rm", "train_plan_a", "train_plan_b", "ddp")
# the share of the budget each part may use at most (GPU run); the rest waits for later parts
CAPS = {"muq_scorer": 50, "cmi_rm": 110, "train_plan_a": 40, "train_plan_b": 45, "ddp": 75}
MIN_START = {"muq_scorer": 15, "cmi_rm": 40, "train_plan_a": 20, "train_plan_b": 20, "ddp": 30}
FULL_CAMPP = "{embedding_size:192,growth_rate:32,bn_size:4,init_channels:128}"  # cn_common
PROMPT = "An upbeat pop song with bright synthesizers, a female vocal and a driving beat"
LYRICS = "la la la we sing along tonight under the city lights " * 4


class PartTimeout(Exception):
    """A part ran past its share of the budget."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in the main thread after `seconds` (SIGALRM; checked between ops)."""

    def fire(signum: int, frame: Any) -> None:
        raise PartTimeout(f"over its {seconds:.0f} s share of the budget")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Ctx:
    """What every part needs: device, sizes, the scratch folder, the partial result."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.smoke = bool(args.smoke)
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.batch_sizes = [1, 2] if self.smoke else [1, 2, 4, 8, 16, 32, 64]
        self.clip_s = 2.0 if self.smoke else 30.0
        self.reps = 1 if self.smoke else 2
        self.warm_steps, self.steps = (1, 2) if self.smoke else (2, 5)
        self.scratch = scratch
        self.ddp_cpu = int(args.ddp_cpu or 0)
        if self.smoke and not self.cuda:
            torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is fastest

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def autocast(self) -> Any:
        if self.cuda:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


# ---------------------------------------------------------------------------------- configs
def train_cfg(ctx: Ctx, experiment: str, extra: list[str] | None = None) -> Any:
    """conf/train composed for `experiment` at full size (random MuQ-large, random full CAM++),
    or with debug=tiny under --smoke."""
    over = [f"experiment={experiment}", "logger=csv", "export=false"]
    if ctx.smoke:
        over += ["debug=tiny", "data.preprocess.max_dur=2.0", "data.groups_per_batch=2"]
        over += ["data.max_group_size=2"]
    else:
        over += ["model.net.encoder.pretrained=null", "model.net.encoder.muq_config=large"]
        if experiment.startswith("hybrid_campp"):
            over += ["campp_tiny=true", f"model.net.timbre.tiny_arch={FULL_CAMPP}"]
    from hydra import compose, initialize_config_dir  # heavy: see the note at the imports

    with initialize_config_dir(config_dir=TRAIN_CONF, version_base="1.3"):
        return compose("train", overrides=over + list(extra or []))


def n_params(m: torch.nn.Module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in m.parameters()),
        "trainable": sum(p.numel() for p in m.parameters() if p.requires_grad),
    }


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def sweep(ctx: Ctx, rows: list[dict], run_batch: Callable[[int], None]) -> None:
    """Time run_batch(bs) per batch size (one warm-up call, then ctx.reps); appends to rows."""
    for bs in ctx.batch_sizes:
        row: dict[str, Any] = {"batch_size": bs}
        rows.append(row)
        ctx.reset_peak()
        try:
            run_batch(bs)  # warm-up: kernels, allocator
            ctx.sync()
            t0 = time.perf_counter()
            for _ in range(ctx.reps):
                run_batch(bs)
            ctx.sync()
        except PartTimeout:
            row["status"] = "timeout"
            raise
        except Exception as e:  # noqa: BLE001 - out of memory ends the sweep, recorded
            if not is_oom(e):
                raise
            row["status"] = "oom"
            break
        dt = (time.perf_counter() - t0) / ctx.reps
        row.update(
            status="ok",
            s_per_batch=dt,
            audio_s_per_s=bs * ctx.clip_s / dt,
            peak_gib=ctx.peak_gib(),
        )


# ---------------------------------------------------------------------------------- parts
def part_muq_scorer(ctx: Ctx, res: dict) -> None:
    from hydra.utils import instantiate  # heavy: see the note at the imports

    cfg = train_cfg(ctx, "muq_lora")
    t0 = time.perf_counter()
    net = instantiate(cfg.model.net).to(ctx.device).eval()
    res.update(build_s=time.perf_counter() - t0, params=n_params(net), clip_s=ctx.clip_s)
    res["bf16"] = ctx.cuda
    n = int(ctx.clip_s * 24000)
    rows: list[dict] = []
    res["batches"] = rows

    @torch.no_grad()
    def run_batch(bs: int) -> None:
        wav = 0.1 * torch.randn(bs, n, device=ctx.device)
        lengths = torch.full((bs,), n, dtype=torch.long, device=ctx.device)
        with ctx.autocast():
            net(wav, lengths)["score"].float().cpu()

    sweep(ctx, rows, run_batch)


def full_mulan_config(muq_dir: str, xlmr_dir: str) -> dict:
    """MuQ-MuLan-large's config.json (audio 1024-d MuQ, depth-0 audio transformer, XLM-R base
    text tower, 8-layer 768-d text transformer)."""
    tf = {"dim": 768, "heads": 8, "dim_head": 64, "attn_dropout": 0.0, "ff_dropout": 0.0}
    return {
        "mulan": {"sr": 24000, "clip_secs": 10, "dim_latent": 512, "rank_contrast": True},
        "audio_model": {"name": muq_dir, "model_dim": 1024, "use_layer_idx": -1},
        "text_model": {"name": xlmr_dir, "model_dim": 768},
        "audio_transformer": {**tf, "ff_mult": 4, "tf_depth": 0},
        "text_transformer": {**tf, "ff_mult": 4, "tf_depth": 8, "max_seq_len": 1024},
    }


def build_cmi_rm(ctx: Ctx, out: Path) -> Path:
    """A random CMI-RM saved in the released layout (config.yaml + model.safetensors, towers as
    MuQ-MuLan directories): full size, or the project's tiny one under --smoke."""
    import yaml
    from muq import MuQ, MuQMuLan  # heavy (pulls torchvision): only for this part
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from audiobase.muq import large_muq_config
    from rewards.cmi_rm.config import CONFIG_NAME, WEIGHTS_NAME, CMIRMConfig
    from rewards.cmi_rm.model import CMIRewardNet
    from rewards.cmi_rm.tiny import build_tiny_cmi_rm, save_tiny_tokenizer

    if ctx.smoke:
        return build_tiny_cmi_rm(out)
    enc = out / "encoders"
    muq_dir, xlmr_dir, mulan_dir = enc / "muq-large", enc / "xlm-roberta-base", enc / "muq-mulan"
    for build, path in (
        (lambda: MuQ(large_muq_config()), muq_dir),
        (lambda: XLMRobertaModel(XLMRobertaConfig()), xlmr_dir),  # xlm-roberta-base's shape
    ):
        try:
            with torch.device(ctx.device):  # random init on the GPU: seconds, not a minute
                module = build()
        except Exception:  # noqa: BLE001 - a module that cannot be built there: on the CPU
            module = build()
        module.to("cpu").save_pretrained(path)
        del module
    save_tiny_tokenizer(xlmr_dir)
    mulan = MuQMuLan(full_mulan_config(str(muq_dir), str(xlmr_dir)))
    mulan.save_pretrained(mulan_dir)
    head = {"model": {"name": "reward", "model_name": str(mulan_dir)}}  # released defaults
    mu = mulan.mulan_module
    net = CMIRewardNet(CMIRMConfig.from_dict(head), towers=(mu.audio, mu.text))
    save_file({k: v.contiguous() for k, v in net.head_state_dict().items()}, out / WEIGHTS_NAME)
    (out / CONFIG_NAME).write_text(yaml.safe_dump(head, sort_keys=False))
    del mulan, net
    return out


def part_cmi_rm(ctx: Ctx, res: dict) -> None:
    from rewards.base import BatchInput  # heavy: see the note at the imports
    from rewards.cmi_rm import CMIRewardModel

    t0 = time.perf_counter()
    ckpt = build_cmi_rm(ctx, ctx.scratch / "cmi_rm")
    res["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = CMIRewardModel(checkpoint=ckpt, device=str(ctx.device), bf16=True)
    res.update(load_s=time.perf_counter() - t0, params=n_params(model.net), clip_s=ctx.clip_s)
    res["bf16"] = model.bf16
    n = int(ctx.clip_s * model.sr)
    rng = np.random.default_rng(0)
    clips = [torch.from_numpy(0.1 * rng.standard_normal(n, dtype=np.float32)) for _ in range(4)]
    rows: list[dict] = []
    res["batches"] = rows

    def run_batch(bs: int) -> None:
        items = [BatchInput(clips[i % 4], PROMPT, LYRICS if i % 2 else "") for i in range(bs)]
        model.score_batch(items, batch_size=bs, max_dur=ctx.clip_s)

    sweep(ctx, rows, run_batch)


class SameBatch(torch.utils.data.Dataset):
    """`n` copies of one ready batch (the datamodule's format): no decoding in the timing."""

    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


def make_train_batch(groups: int, group_size: int, seconds: float) -> dict[str, Any]:
    b, n = groups * group_size, int(seconds * 24000)
    g = torch.Generator().manual_seed(0)
    return {
        "wav": 0.1 * torch.randn(b, n, generator=g),
        "lengths": torch.full((b,), n, dtype=torch.long),
        "scores": torch.linspace(90, 50, group_size).repeat(groups),  # each group high to low
        "singer": torch.arange(b) % 4,
        "slots": torch.arange(b).view(groups, group_size),
    }


def train_steps(ctx: Ctx, experiment: str, res: dict, devices: int = 1) -> None:
    """Time optimizer steps of `experiment` with Lightning on `devices` (DDP when > 1)."""
    import lightning as L  # heavy: see the note at the imports
    from hydra.utils import instantiate

    class StepTimer(L.Callback):
        """Wall time of each training batch (forward, backward, optimizer step), device synced."""

        def __init__(self, ctx: Ctx) -> None:
            self.ctx, self.times, self._t0 = ctx, [], 0.0

        def on_train_batch_start(
            self, trainer: Any, module: Any, batch: Any, batch_idx: int
        ) -> None:
            self.ctx.sync()
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            self.ctx.sync()
            self.times.append(time.perf_counter() - self._t0)

    cfg = train_cfg(ctx, experiment)
    t0 = time.perf_counter()
    module = instantiate(cfg.model)
    res.update(build_s=time.perf_counter() - t0, params=n_params(module.net))
    groups, size = int(cfg.data.groups_per_batch), int(cfg.data.max_group_size)
    per_rank = max(1, groups // devices)  # batch sizes in the config are global
    secs = float(cfg.data.preprocess.max_dur)
    batch = make_train_batch(per_rank, size, secs)
    n_steps = ctx.warm_steps + ctx.steps
    res.update(
        devices=devices,
        clips_per_step=per_rank * size * devices,
        clip_s=secs,
        precision=str(cfg.trainer.precision),
        warmup_steps=ctx.warm_steps,
    )
    timer = StepTimer(ctx)
    accelerator = "gpu" if ctx.cuda else "cpu"
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=cfg.trainer.precision if ctx.cuda else "32-true",
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        max_steps=n_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=str(ctx.scratch / f"lightning_{experiment}"),
    )
    loader = torch.utils.data.DataLoader(SameBatch(batch, n_steps * devices), batch_size=None)
    ctx.reset_peak()
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    res["fit_s"] = time.perf_counter() - t0
    steps = timer.times[ctx.warm_steps :] or timer.times
    res["step_times_s"] = timer.times
    if steps:
        med = statistics.median(steps)
        res.update(step_s=med, clips_per_s=res["clips_per_step"] / med)
        res["train_audio_s_per_s"] = res["clips_per_step"] * secs / med
    res["peak_gib"] = ctx.peak_gib()
    res["is_global_zero"] = trainer.is_global_zero


def part_train_a(ctx: Ctx, res: dict) -> None:
    train_steps(ctx, "muq_lora", res)


def part_train_b(ctx: Ctx, res: dict) -> None:
    train_steps(ctx, "hybrid_campp", res)


def part_ddp(ctx: Ctx, res: dict, deadline_s: float) -> None:
    n = torch.cuda.device_count() if ctx.cuda else ctx.ddp_cpu
    res["devices"] = n
    if n < 2:
        res.update(status="skipped", reason=f"{n} GPU(s) visible: DDP needs 2 or more")
        return
    out = ctx.scratch / "ddp.json"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "ddp", "--result", str(out)]
    cmd += ["--devices", str(n), "--scratch", str(ctx.scratch), "--device", ctx.device.type]
    cmd += ["--smoke"] if ctx.smoke else []
    t0 = time.perf_counter()
    # its own process group: on timeout the ranks Lightning started go too
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = p.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        res.update(status="timeout", reason=f"over its {deadline_s:.0f} s share of the budget")
        return
    res["wall_s"] = time.perf_counter() - t0
    if p.returncode != 0 or not out.is_file():
        res.update(status="error", error=(stderr or stdout)[-3000:], rc=p.returncode)
        return
    res.update(json.loads(out.read_text()))


def ddp_worker(args: argparse.Namespace) -> int:
    """One DDP run (Lightning starts ranks 1.. by rerunning this command); rank 0 writes."""
    ctx = Ctx(args, Path(args.scratch))
    res: dict[str, Any] = {}
    train_steps(ctx, "muq_lora", res, devices=int(args.devices))
    if res.pop("is_global_zero", True):
        Path(args.result).write_text(json.dumps(res))
    return 0


# ---------------------------------------------------------------------------------- driver
def environment(ctx: Ctx) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(ctx.device),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_count": os.cpu_count(),
        "smoke": ctx.smoke,
    }
    if ctx.cuda:
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
        env["gpu_memory_gib"] = torch.cuda.get_device_properties(ctx.device).total_memory / 2**30
    return env


def summarize(parts: dict[str, dict]) -> dict[str, Any]:
    """Headline numbers: best audio-s/s per scorer, step times, DDP scaling."""
    out: dict[str, Any] = {}
    for name in ("muq_scorer", "cmi_rm"):
        ok = [r for r in parts.get(name, {}).get("batches", []) if r.get("status") == "ok"]
        if ok:
            best = max(ok, key=lambda r: r["audio_s_per_s"])
            out[f"{name}_best_audio_s_per_s"] = best["audio_s_per_s"]
            out[f"{name}_best_batch_size"] = best["batch_size"]
    for name in ("train_plan_a", "train_plan_b"):
        if "step_s" in parts.get(name, {}):
            out[f"{name}_step_s"] = parts[name]["step_s"]
    a, d = parts.get("train_plan_a", {}), parts.get("ddp", {})
    if "clips_per_s" in a and "clips_per_s" in d and d.get("devices"):
        out["ddp_scaling_efficiency"] = d["clips_per_s"] / (a["clips_per_s"] * d["devices"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds for all parts")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    ap.add_argument("--smoke", action="store_true", help="tiny configs, seconds, any device")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--ddp-cpu", type=int, default=0, help="without GPUs: DDP on N CPU procs")
    ap.add_argument("--worker", choices=["ddp"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "ddp":
        return ddp_worker(args)
    parts = [p for p in args.parts.split(",") if p]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        ap.error(f"unknown parts {bad}; choose from {PARTS}")
    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Ctx(args, Path(tmp))
        report: dict[str, Any] = {
            "budget_s": args.budget,
            "env": environment(ctx),
            "parts": {p: {"status": "pending"} for p in parts},
        }

        def write(final: bool = False) -> None:
            report["elapsed_s"] = time.perf_counter() - start
            report["summary"] = summarize(report["parts"])
            report["complete"] = final
            tmp_out = out.with_name(f".{out.name}.tmp")
            tmp_out.write_text(json.dumps(report, indent=2, default=str))
            os.replace(tmp_out, out)

        def watchdog() -> None:  # a part stuck in native code: write what there is and leave
            time.sleep(args.budget + 30)
            for p in report["parts"].values():
                if p.get("status") in ("pending", "running"):
                    p.update(status="timeout", reason="watchdog: the whole run overran")
            write()
            print(f"gpu_check: over budget, wrote {out}", file=sys.stderr, flush=True)
            os._exit(3)

        threading.Thread(target=watchdog, daemon=True).start()
        write()
        runners: dict[str, Callable[[Ctx, dict], None]] = {
            "muq_scorer": part_muq_scorer,
            "cmi_rm": part_cmi_rm,
            "train_plan_a": part_train_a,
            "train_plan_b": part_train_b,
        }
        for name in parts:
            res = report["parts"][name]
            left = args.budget - (time.perf_counter() - start)
            need = 2 if ctx.smoke else MIN_START[name]
            if left < need:
                res.update(status="skipped", reason=f"over budget: {left:.0f} s left < {need} s")
                write()
                continue
            share = left if ctx.smoke else min(CAPS[name], left)
            res["status"] = "running"
            t0 = time.perf_counter()
            print(f"gpu_check: {name} (up to {share:.0f} s)", flush=True)
            try:
                if name == "ddp":
                    part_ddp(ctx, res, share)
                else:
                    with time_limit(share):
                        runners[name](ctx, res)
                if res["status"] == "running":
                    res["status"] = "ok"
            except PartTimeout as e:
                res.update(status="timeout", reason=str(e))
            except Exception as e:  # noqa: BLE001 - one part's failure is recorded, not fatal
                res.update(status="error", error=f"{type(e).__name__}: {e}")
            res["part_s"] = time.perf_counter() - t0
            if ctx.cuda:
                torch.cuda.empty_cache()
            write()
        write(final=True)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {out} in {report['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
