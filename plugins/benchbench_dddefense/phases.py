"""The two phases of DDDefense wired to the ReID trainer's hooks and the stage cache.

- ``balanced_training_set``: generator stage (trained once per data set and image size,
  or loaded from ``diffusion_path``) -> extension stage (the planned images sampled and
  written in Market-1501 layout, once per generator and balancing params) -> gate stage
  (``gate``: the images the plain model of the cell's seed still recognises as their
  identity, capped per identity) -> the training set plus the kept images. The first
  two stages do not depend on the cell's seed or on the phase-2 params, so every seed
  and the ``self_meta`` ablation share them; the gate is per seed and shared by the
  ablations.
- ``AdversarialPhase``: one training step, FNES adversarial training alone or inside the
  self-meta update.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from benchbench.cells import stable_hash
from benchbench.errors import ConfigError, DataError
from benchbench.numerics import isolated_rng
from benchbench.reid import diffusion
from benchbench.reid.data import ImageSet, LayoutDataset
from benchbench.reid.meta import first_order_meta_step
from benchbench.reid.models import extract_features, load_model
from benchbench.reid.trainer import Batch, TrainState
from benchbench.stages import Stage, StageCache
from benchbench_dddefense import balancing, gate
from benchbench_dddefense.fnes import farthest_targets, fnes_loss
from benchbench_dddefense.meta import self_consistency, split_identities, split_pool


def train_pid_names(root: Path, layout: str) -> dict[int, int]:
    """Training label -> the data set's identity number, from torchreid's parse of the
    layout (the same relabelling the data layer used)."""
    return LayoutDataset(root, layout).train_names


def generator(defense, train: ImageSet, num_ids: int, num_cams: int, cache: StageCache,
              data_key: str) -> tuple[str, Path]:
    """``(key, folder)`` of the generator: ``diffusion_path`` fingerprinted by its files,
    or a stage trained here (``unet/``, ``condition.safetensors``, ``diffusion.json``,
    ``train_log.json``)."""
    p = defense.params
    if p.diffusion_path:
        source = Path(p.diffusion_path).expanduser()
        files = sorted((f.relative_to(source).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in source.rglob("*") if f.is_file())
        return stable_hash({"diffusion_path": str(source), "files": files}), source
    config = diffusion.DiffusionConfig(size=tuple(p.diffusion_size), channels=tuple(p.diffusion_channels),
                                       train_steps=p.diffusion_steps, batch_size=p.diffusion_batch,
                                       lr=p.diffusion_lr)
    diffusion.check_size(config.size, config.channels, "dddefense")

    def build(out: Path) -> None:  # its build time is in the stage's stage.json
        model, losses = diffusion.train_diffusion(train.images, train.pids, train.camids, num_ids, num_cams,
                                                  config, p.diffusion_seed)
        diffusion.save(model, out)
        (out / "train_log.json").write_text(json.dumps(diffusion.train_log(config, losses), indent=1))

    parts = {"data": data_key, "size": list(train.images.shape[-2:]), "ids": num_ids, "cams": num_cams,
             "config": diffusion.config_dict(config), "seed": p.diffusion_seed, "version": defense.version}
    stage = cache.get_or_build("dddefense-generator", parts, build)
    return stage.key, stage.path


def extension_stage(defense, train: ImageSet, num_ids: int, num_cams: int, cache: StageCache, data_key: str,
                    names: dict[int, int]) -> Stage:
    """The planned images sampled and written in Market-1501 layout (with ``plan.json``),
    before the gate: shared by every seed."""
    p = defense.params
    counts = balancing.camera_counts(train.pids, train.camids, num_ids, num_cams)
    rows = balancing.plan(counts, p.delta1, p.delta2)
    size = tuple(train.images.shape[-2:])
    gen_key, gen_path = generator(defense, train, num_ids, num_cams, cache, data_key)

    def build(out: Path) -> None:
        model = diffusion.load(gen_path)
        if model.num_ids != num_ids or model.num_cams < num_cams:
            raise DataError(f"{gen_path}: the generator knows {model.num_ids} identities and {model.num_cams} "
                            f"cameras; this training set has {num_ids} and {num_cams}")
        images = diffusion.sample(model, rows[:, 0], rows[:, 1], train.images, train.pids, p.sampling_steps,
                                  p.diffusion_seed, guidance=p.guidance)
        pids = torch.tensor([names[int(label)] for label in rows[:, 0]], dtype=torch.int64)
        balancing.write_layout(out, images, pids, rows[:, 1])
        after = counts + balancing.camera_counts(rows[:, 0], rows[:, 1], num_ids, num_cams)
        (out / "plan.json").write_text(json.dumps(
            {"generated": len(rows), "delta1": p.delta1, "delta2": p.delta2,
             "before": balancing.bias_stats(counts), "after": balancing.bias_stats(after)}, indent=1))

    parts = {"generator": gen_key, "size": list(size), "delta1": p.delta1, "delta2": p.delta2,
             "sampling_steps": p.sampling_steps, "guidance": p.guidance, "seed": p.diffusion_seed,
             "version": defense.version}
    return cache.get_or_build("dddefense-balanced", parts, build)


def gate_stage(defense, train: ImageSet, num_ids: int, num_cams: int, extension: Stage, reference: Stage,
               cache: StageCache, names: dict[int, int], device: str = "cpu") -> Stage:
    """The identity-preservation gate and the synthetic-share cap applied to ``extension``
    with the plain model ``reference``: ``gate.json`` lists the kept files and the
    acceptance per identity (one stage per seed, as the reference model is)."""
    p = defense.params

    def build(out: Path) -> None:
        files = balancing.layout_files(extension.path)
        candidates = balancing.read_layout(extension.path, tuple(train.images.shape[-2:]),
                                           {pid: label for label, pid in names.items()})
        model = load_model(reference.path).to(device)
        passed = gate.identity_gate(lambda x: extract_features(model, x), train.images, train.pids,
                                    candidates.images, candidates.pids, num_ids)
        # the same test on the real images: how far the reference model itself can be trusted
        real_pass = gate.identity_gate(lambda x: extract_features(model, x), train.images, train.pids,
                                       train.images, train.pids, num_ids)
        real = torch.bincount(train.pids, minlength=num_ids)
        kept = gate.cap_share(passed, candidates.pids, real, p.max_synthetic_share)
        counts = balancing.camera_counts(train.pids, train.camids, num_ids, num_cams)
        after = counts + balancing.camera_counts(candidates.pids[kept], candidates.camids[kept], num_ids, num_cams)
        record = {**gate.summary(candidates.pids, passed, kept, names), "max_synthetic_share": p.max_synthetic_share,
                  "reference_model": reference.key, "real_pass_rate": round(float(real_pass.float().mean()), 4),
                  "after": balancing.bias_stats(after),
                  "kept_files": [f.name for f, k in zip(files, kept.tolist()) if k],
                  "rejected_by_gate": [f.name for f, k in zip(files, passed.tolist()) if not k]}
        (out / "gate.json").write_text(json.dumps(record, indent=1))

    parts = {"extension": extension.key, "reference": reference.key, "max_synthetic_share": p.max_synthetic_share,
             "version": defense.version}
    return cache.get_or_build("dddefense-gate", parts, build)


def balanced_training_set(defense, train: ImageSet, run: TrainState) -> ImageSet:
    """``train`` plus the generated extension (read back from its Market-1501 files),
    gated unless ``identity_gate`` is off. Draws nothing from the global RNG (stages
    cached or not), so the trained model does not depend on which cell built them."""
    p = defense.params
    if run.cache is None or run.data_root is None:
        raise ConfigError("dddefense balance: true needs the task's stage cache and a layout folder "
                          "(run it through the reid-adversarial task), or set balance: false")
    num_ids, num_cams = run.num_classes, int(train.camids.max()) + 1
    names = train_pid_names(run.data_root, run.layout)
    with isolated_rng():  # loading the reference model initialises one first
        extension = extension_stage(defense, train, num_ids, num_cams, run.cache, run.data_key, names)
        keep = None
        if p.identity_gate:
            gated = gate_stage(defense, train, num_ids, num_cams, extension, run.reference_stage(), run.cache,
                               names, run.device)
            keep = set(json.loads((gated.path / "gate.json").read_text())["kept_files"])
    images = balancing.read_layout(extension.path, tuple(train.images.shape[-2:]),
                                   {pid: label for label, pid in names.items()}, keep)
    return train.concat(images)


class AdversarialPhase:
    """Per-step training: FNES adversarial training, alone or in the self-meta update.

    Attacks are built once per training (their random starts then differ per batch):
    under self-meta every pool attack at the training budget, otherwise FNA (farthest
    identity prototype, random start) as FNES's inner attack.
    """

    def __init__(self, params, run: TrainState):
        self.p = params
        budget = {"eps": params.eps, "alpha": params.alpha, "steps": params.steps}
        if params.self_meta:
            self.pool = {name: run.build_attack(name, budget) for name in params.attack_pool}
        else:
            self.fnes_attack = run.build_attack("fna", {**budget, "pull": "prototype", "random_start": True})

    def attacks(self) -> dict:
        """The attacks this phase built, by name."""
        return self.pool if self.p.self_meta else {"fna": self.fnes_attack}

    def state_dict(self) -> dict:
        return {"attacks": {name: attack.state_dict() for name, attack in self.attacks().items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, attack in self.attacks().items():
            attack.load_state_dict(state["attacks"][name])

    def step(self, batch: Batch, run: TrainState) -> dict[str, float]:
        clean = extract_features(run.model, batch.images)  # eval mode, as the attacks see it
        if not self.p.self_meta:
            return run.optimize(self.terms(batch, self.fnes_attack, clean, run))
        gen = run.generator
        meta_train, meta_test = split_identities(batch.pids, self.p.meta_train_ratio, gen)
        seen, held_out = split_pool(self.p.attack_pool, self.p.seen_ratio, gen)
        inner, outer = (self.pool[names[int(torch.randint(len(names), (1,), generator=gen))]]
                        for names in (seen, held_out))

        def loss(mask: torch.Tensor, attack) -> torch.Tensor:
            return sum(self.terms(batch.subset(mask), attack, clean[mask], run).values())

        train_loss, test_loss = first_order_meta_step(
            list(run.model.parameters()), run.optimizer, lambda: loss(meta_train, inner),
            lambda: loss(meta_test, outer), self.p.meta_lr, self.p.meta_test_weight)
        return {"meta_train": train_loss, "meta_test": test_loss}

    def terms(self, batch: Batch, attack, clean: torch.Tensor, run: TrainState) -> dict[str, torch.Tensor]:
        """CE + FNES (+ self-consistency under self-meta) on ``batch``'s attacked version."""
        adv = replace(batch, images=attack(batch.images, batch.pids))
        out = run.forward(adv)
        targets = farthest_targets(clean, batch.pids)
        terms = {"ce": self.p.ce_weight * run.config.ce_weight * run.ce(out.logits, batch.pids),
                 "fnes": run.config.triplet_weight * fnes_loss(out.features, batch.pids, targets,
                                                               self.p.fnes_temperature)}
        if self.p.self_meta:
            terms["self"] = self.p.self_weight * self_consistency(out.features, clean)
        return terms
