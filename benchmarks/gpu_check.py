"""Throughput of each track's `paper` preset model on this machine's GPU.

Runs the real trainers (`benchbench.clip.trainer.train`, `benchbench.reid.trainer.train`)
with the `paper` preset's model, input size, batch and precision on random inputs of the
right shapes for a few hundred optimiser steps, and prints, per track: steps, seconds
(after a warm-up of 3 steps; the ReID figure includes building its model, as its
trainer does), pairs/s (CLIP) or images/s (ReID), and peak GPU memory. Multiply by a
`paper` grid's steps for its cost (docs/scaling.md).

    .venv/bin/python benchmarks/gpu_check.py                      # cuda, 300 steps per track
    .venv/bin/python benchmarks/gpu_check.py --precision bf16 --steps 500
    .venv/bin/python benchmarks/gpu_check.py --device cpu --steps 2 --batch 8   # the script itself, on a CPU

Random inputs measure speed, not accuracy: no number here is a result.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from rich.console import Console
from rich.table import Table

from benchbench.clip.model import ClipModel, input_size
from benchbench.clip.task import ClipPoisoningTask
from benchbench.clip.trainer import PairSet, TrainConfig, train as train_clip
from benchbench.precision import check_device
from benchbench.reid.data import ImageSet
from benchbench.reid.pipeline import train_config as reid_train_config
from benchbench.reid.task import ReidAdversarialTask
from benchbench.reid.trainer import train as train_reid
from benchbench_clip_baseline import StandardClip
from benchbench_reid_baseline import StandardTraining


def _timed(device: str, run) -> tuple[float, float | None]:
    """Seconds of ``run()`` and the peak GPU memory it reached (GiB; None on a CPU)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30 if cuda else None


def clip_check(device: str, steps: int, batch: int | None, precision: str) -> dict:
    task = ClipPoisoningTask(preset="paper")
    spec = task.model_spec()
    model = ClipModel.create(spec, seed=0, device=device)
    b = batch or task.params.batch_size
    side = input_size(spec)
    captions = [f"a photo of shape {i % 100}" for i in range(b * steps)]
    data = PairSet(torch.randint(0, 256, (b * steps, 3, side, side), dtype=torch.uint8), captions,
                   model.tokenize(captions))
    config = TrainConfig(epochs=1, batch_size=b, lr=task.params.lr, progress=False, precision=precision)
    warm = PairSet(data.images[:b * 3], data.captions[:b * 3], data.tokens[:b * 3])
    train_clip(model, StandardClip(), config, warm)  # kernels, allocator and autotuning warmed up
    seconds, peak = _timed(device, lambda: train_clip(model, StandardClip(), config, data))
    return {"track": "clip", "model": f"{spec.name} @ {side} px", "batch": b, "steps": steps,
            "seconds": seconds, "rate": f"{b * steps / seconds:.1f} pairs/s", "peak": peak}


def reid_check(device: str, steps: int, batch: int | None, precision: str) -> dict:
    task = ReidAdversarialTask(preset="paper")
    config = reid_train_config(task)
    if batch:  # images per batch = ids x images_per_id
        config = dataclasses.replace(config, ids_per_batch=max(1, batch // config.images_per_id))
    per_batch = config.ids_per_batch * config.images_per_id
    ids = config.ids_per_batch * steps
    pids = torch.arange(ids).repeat_interleave(config.images_per_id)
    images = torch.randint(0, 256, (len(pids), 3, task.params.height, task.params.width), dtype=torch.uint8)
    data = ImageSet(images, pids, torch.arange(len(pids)) % 6)
    config = dataclasses.replace(config, epochs=1)

    def run(rows: slice) -> None:
        subset = ImageSet(data.images[rows], data.pids[rows], data.camids[rows])
        train_reid(StandardTraining(), subset, ids, config, seed=0, show_progress=False, device=device,
                   precision=precision)

    run(slice(0, per_batch * 3))  # kernels, allocator and autotuning warmed up
    seconds, peak = _timed(device, lambda: run(slice(None)))
    return {"track": "reid", "model": f"{config.arch} @ {task.params.height}x{task.params.width}",
            "batch": per_batch, "steps": steps, "seconds": seconds,
            "rate": f"{per_batch * steps / seconds:.1f} images/s", "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per track")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the paper preset's)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    check_device(args.device)
    table = Table(title=f"paper presets on {args.device} ({args.precision}; random inputs, speed only)")
    for column in ("track", "model", "batch", "steps", "seconds", "throughput", "peak GPU memory"):
        table.add_column(column)
    for check in (clip_check, reid_check):
        r = check(args.device, args.steps, args.batch, args.precision)
        table.add_row(r["track"], r["model"], str(r["batch"]), str(r["steps"]), f"{r['seconds']:.1f}", r["rate"],
                      "–" if r["peak"] is None else f"{r['peak']:.2f} GiB")
    Console().print(table)


if __name__ == "__main__":
    main()
