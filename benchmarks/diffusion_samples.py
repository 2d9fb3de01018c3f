"""dddefense's generator: train (or reuse) it at a preset and draw its samples next to real images.

Builds the stages exactly as a grid cell does (same keys, same cache), so running this
before or after ``benchbench grid configs/reid-default.yaml`` shares the generator with
the grid. Writes ``docs/img/dddefense_samples.png``: one row per training identity
(those the balancing plan adds most images to), the identity's real images on the left,
then one generated image per camera (camera 1, 2, ... left to right) on the right.
Prints the generator's build time (from its stage record), the sampling time and the
balancing plan.

Also writes ``docs/img/dddefense_gate.png``, the identity-preservation gate of seed
``--seed`` (its stages, and the plain model it needs, are the grid's: taken from the
cache or built): per identity its real images, then the images generated for it in
the balancing plan, framed green (kept), red (rejected by the gate: the plain model
sees another identity) or yellow (passed the gate, dropped by the synthetic-share cap).

    .venv/bin/python benchmarks/diffusion_samples.py [--preset default] [--cache runs/cache]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from benchbench.context import RunContext
from benchbench.reid.data import load_reid_data
from benchbench.reid.pipeline import data_source, reference_stage
from benchbench.reid.task import ReidAdversarialTask
from benchbench.stages import StageCache
from benchbench_dddefense import DDDefense
from benchbench_dddefense.balancing import bias_stats, camera_counts, layout_files, plan, read_layout
from benchbench.reid.diffusion import load, sample
from benchbench_dddefense.phases import extension_stage, gate_stage, generator, train_pid_names

FRAMES = {"kept": (0, 160, 0), "rejected": (220, 0, 0), "capped": (230, 190, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--rows", type=int, default=8, help="identities shown")
    parser.add_argument("--real", type=int, default=4, help="real images shown per identity")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/img/dddefense_samples.png"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the plain model the gate uses")
    parser.add_argument("--candidates", type=int, default=8, help="generated images shown per identity (gate)")
    parser.add_argument("--gate-out", type=Path, default=Path("docs/img/dddefense_gate.png"))
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=JSON",
                        help="override a dddefense param over the preset, e.g. diffusion_steps=300")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task, defense = ReidAdversarialTask(preset=args.preset), DDDefense(
        {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}, preset=args.preset)
    cache = StageCache(args.cache)
    data_key, root = data_source(task, RunContext(cache=cache, seed=0, preset=args.preset))
    size = (task.params.height, task.params.width)
    train = load_reid_data(root, size, task.params.layout).train
    num_ids, num_cams = int(train.pids.max()) + 1, int(train.camids.max()) + 1

    key, path = generator(defense, train, num_ids, num_cams, cache, data_key)
    record = json.loads((path / "stage.json").read_text())
    print(f"generator stage {key}: built in {record['build_seconds']} s "
          f"({defense.params.diffusion_steps} steps) -> {path}")

    counts = camera_counts(train.pids, train.camids, num_ids, num_cams)
    rows = plan(counts, defense.params.delta1, defense.params.delta2)
    print(f"plan: {len(rows)} images for {len(rows[:, 0].unique())} of {num_ids} identities; before "
          f"{json.dumps({k: round(v, 3) for k, v in bias_stats(counts).items()})}")

    shown = torch.bincount(rows[:, 0], minlength=num_ids).argsort(descending=True, stable=True)[:args.rows]
    model = load(path)
    start = time.perf_counter()
    fakes = sample(model, shown.repeat_interleave(num_cams), torch.arange(num_cams).repeat(len(shown)),
                   train.images, train.pids, defense.params.sampling_steps, defense.params.diffusion_seed,
                   guidance=defense.params.guidance)
    per_image = (time.perf_counter() - start) / len(fakes)
    print(f"sampling: {per_image * 1000:.0f} ms per image ({defense.params.sampling_steps} DDIM steps, "
          f"guidance {defense.params.guidance}) -> {per_image * len(rows):.0f} s for the plan")

    blank = torch.full((3, *size), 255, dtype=torch.uint8)
    tiles = []
    for k, pid in enumerate(shown.tolist()):
        real = list(train.images[train.pids == pid][:args.real])
        tiles += real + [blank] * (args.real - len(real) + 1) + list(fakes[k * num_cams:(k + 1) * num_cams])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(torch.stack(tiles).float() / 255, nrow=args.real + 1 + num_cams, padding=2, pad_value=1.0)
    save_image(grid, args.out)
    print(f"wrote {args.out}: rows = identities {shown.tolist()} (training labels); left: real, right: "
          f"generated for cameras 1..{num_cams}")
    draw_gate(args, task, defense, cache, data_key, root)


def framed(image: torch.Tensor, colour: tuple[int, int, int]) -> torch.Tensor:
    """``image`` with its outer 2 pixels painted ``colour``."""
    out, frame = image.clone(), torch.tensor(colour, dtype=torch.uint8)[:, None, None]
    out[:, :2], out[:, -2:], out[:, :, :2], out[:, :, -2:] = frame, frame, frame, frame
    return out


def draw_gate(args, task, defense, cache: StageCache, data_key: str, root: Path) -> None:
    """The gate figure (see the module docstring) and its acceptance numbers."""
    ctx = RunContext(cache=cache, seed=args.seed, preset=args.preset)
    size = (task.params.height, task.params.width)
    data = load_reid_data(root, size, task.params.layout)
    train = data.train
    num_ids, num_cams = int(train.pids.max()) + 1, int(train.camids.max()) + 1
    names = train_pid_names(root, task.params.layout)
    extension = extension_stage(defense, train, num_ids, num_cams, cache, data_key, names)
    gated = gate_stage(defense, train, num_ids, num_cams, extension, reference_stage(task, data, data_key, ctx, root),
                       cache, names)
    record = json.loads((gated.path / "gate.json").read_text())
    print(f"gate (seed {args.seed}, stage {gated.key}): {record['passed_gate']}/{record['generated']} pass "
          f"({record['gate_acceptance_rate']:.1%}), {record['kept']} kept after the "
          f"{record['max_synthetic_share']} share cap ({record['acceptance_rate']:.1%}); real images passing "
          f"the same test: {record['real_pass_rate']:.1%}; after: "
          f"{json.dumps({k: round(v, 3) for k, v in record['after'].items()})}")
    files = [f.name for f in layout_files(extension.path)]
    candidates = read_layout(extension.path, size, {pid: label for label, pid in names.items()})
    kept, rejected = set(record["kept_files"]), set(record["rejected_by_gate"])
    status = ["kept" if f in kept else "rejected" if f in rejected else "capped" for f in files]
    shown = torch.bincount(candidates.pids, minlength=num_ids).argsort(descending=True, stable=True)[:args.rows]
    blank = torch.full((3, *size), 255, dtype=torch.uint8)
    tiles = []
    for pid in shown.tolist():
        real = list(train.images[train.pids == pid][:args.real])
        mine = [k for k in range(len(files)) if candidates.pids[k] == pid][:args.candidates]
        fakes = [framed(candidates.images[k], FRAMES[status[k]]) for k in mine]
        tiles += (real + [blank] * (args.real - len(real) + 1) + fakes
                  + [blank] * (args.candidates - len(fakes)))
    grid = make_grid(torch.stack(tiles).float() / 255, nrow=args.real + 1 + args.candidates, padding=2,
                     pad_value=1.0)
    args.gate_out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, args.gate_out)
    print(f"wrote {args.gate_out}: rows = identities {shown.tolist()}; left: real, right: generated "
          f"(green kept, red rejected by the gate, yellow dropped by the cap)")


if __name__ == "__main__":
    main()
