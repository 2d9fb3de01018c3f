"""One ReID cell, stage by stage: data -> model (per defense and seed) -> gallery
embeddings (per model, and per purifier under a test-time defense) -> attacked queries
and ranking (per cell)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from benchbench.cells import ResolvedCell, stable_hash
from benchbench.context import RunContext
from benchbench.purify import Purified
from benchbench.reid.api import Embeddings, ReidDefense
from benchbench.reid.data import ReidData, find_layout_root, load_reid_data
from benchbench.reid.models import extract_features, load_model, save_model
from benchbench.reid.synthetic import GENERATOR_VERSION, SyntheticSpec, generate
from benchbench.reid.trainer import TrainConfig, train
from benchbench.stages import Stage


def data_source(task, ctx: RunContext) -> tuple[str, Path]:
    """``(data key, layout root)``: the synthetic set as a cached stage, or the user's folder
    fingerprinted by its file names, sizes and times (edits in place invalidate models)."""
    p = task.params
    if p.data_root:
        base = find_layout_root(p.data_root)
        files = sorted((f.relative_to(base).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in base.glob("*/*.jpg"))
        return stable_hash({"layout": p.layout, "files": files}), base
    spec = SyntheticSpec(train_ids=p.syn_train_ids, test_ids=p.syn_test_ids, cameras=p.syn_cameras,
                         height=p.height, width=p.width, mean_images_per_id=p.syn_mean_images, seed=p.syn_seed)
    stage = ctx.cache.get_or_build("reid-synthetic", {"spec": asdict(spec), "generator": GENERATOR_VERSION},
                                   lambda d: generate(d, spec))
    return stage.key, stage.path


def train_config(task) -> TrainConfig:
    p = task.params
    return TrainConfig(arch=p.arch, weights=p.weights, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                       ids_per_batch=p.batch_ids, images_per_id=p.batch_images_per_id, margin=p.margin)


def model_stage(task, defense: ReidDefense, data: ReidData, data_key: str, ctx: RunContext,
                root: Path | None = None) -> Stage:
    """The defense's model for this seed, trained once and shared by every attack column."""
    def build(out: Path) -> None:
        model = train(defense, data.train, data.num_train_ids, train_config(task), ctx.seed, cache=ctx.cache,
                      data_key=data_key, show_progress=ctx.progress, log_path=out / "train_log.json",
                      device=ctx.device, data_root=root, layout=task.params.layout,
                      reference=lambda: reference_stage(task, data, data_key, ctx, root))
        save_model(model, out)

    parts = {"data": data_key, "task": task.identity(), "defense": defense.identity(), "seed": ctx.seed}
    return ctx.cache.get_or_build("reid-model", parts, build)


def reference_stage(task, data: ReidData, data_key: str, ctx: RunContext, root: Path | None = None) -> Stage:
    """The ``none`` defense's model for this data and seed, under the key its own cell uses
    (so a defense that asks for it inside a grid reuses the grid's model)."""
    from benchbench.registry import load_registry

    plain = load_registry().get("defense", "reid", "none")(preset=ctx.preset)
    return model_stage(task, plain, data, data_key, ctx, root)


def gallery_embeddings(model_key: str, model, data: ReidData, ctx: RunContext,
                       purifier: dict | None = None) -> Embeddings:
    """The clean gallery's features, a stage of the model. Under a purifying defense,
    ``purifier`` is the defense's identity (added to the key with the seed) and ``model``
    a function building the purified network: the gallery gets a purifier of its own, so
    whether this stage was cached leaves the queries' random draws as they were."""
    parts = {"model": model_key} if purifier is None else {"model": model_key, "purifier": purifier,
                                                             "seed": ctx.seed}
    stage = ctx.cache.get_or_build(
        "reid-gallery", parts,
        lambda out: save_file({"features": extract_features(model if purifier is None else model(),
                                                            data.gallery.images)},
                              str(out / "features.safetensors")))
    features = load_file(str(stage.path / "features.safetensors"))["features"]
    return Embeddings(features, data.gallery.pids, data.gallery.camids)


def run_cell(task, cell: ResolvedCell, ctx: RunContext) -> dict[str, dict[str, float]]:
    data_key, root = data_source(task, ctx)
    data = load_reid_data(root, (task.params.height, task.params.width), task.params.layout)
    defense = cell.defense
    # a test-time defense evaluates the none defense's model (the none cells' stage)
    trained = (reference_stage(task, data, data_key, ctx, root) if defense.test_time
               else model_stage(task, defense, data, data_key, ctx, root))
    model = attacked = load_model(trained.path).to(ctx.device)
    purifier = defense.purifier(data.train, data_key, ctx)
    if purifier is None:
        gallery = gallery_embeddings(trained.key, model, data, ctx)
    else:
        net = model
        gallery = gallery_embeddings(
            trained.key, lambda: Purified(net, defense.purifier(data.train, data_key, ctx)).to(ctx.device),
            data, ctx, purifier=defense.identity())
        model = Purified(net, purifier).to(ctx.device)
        attacked = net if defense.attacker_gradient() == "oblivious" else model
    attack = cell.attack.build(attacked, seed=ctx.seed)
    queries = attack(data.query.floats(), data.query.pids)
    query = Embeddings(extract_features(model, queries), data.query.pids, data.query.camids)
    ctx.notes["model_stage"] = {"key": trained.key, "hit": trained.hit}
    return {e.name: e.evaluate_model(query, gallery, trained.path) for e in cell.evaluators}
