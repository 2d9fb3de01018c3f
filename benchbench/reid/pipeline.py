"""One ReID cell, stage by stage: data -> model (per defense and seed) -> gallery
embeddings (per model and gallery, and per purifier under a test-time defense) ->
attacked queries (or, for a gallery attack, attacked gallery) and ranking (per cell).

In the cross-data-set protocol (task param ``eval_data``) the model trains on the task's
data set and the queries and gallery come from the other one; the model stage's key
leaves ``eval_data`` out, so it is the model of the training data set's own grid."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from benchbench.cells import ResolvedCell, stable_hash
from benchbench.checkpoint import Checkpointer
from benchbench.context import RunContext
from benchbench.errors import ConfigError
from benchbench.purify import Purified
from benchbench.reid.api import AttackContext, Embeddings, ReidDefense
from benchbench.reid.data import ReidData, find_layout_root, load_reid_data
from benchbench.reid.layouts import MSMT_LISTS
from benchbench.reid.models import build_model, extract_features, load_model, save_model
from benchbench.reid.synthetic import GENERATOR_VERSION, SyntheticSpec, generate
from benchbench.precision import Precision
from benchbench.reid.trainer import TrainConfig, train
from benchbench.reid.task import EVALUATION_ONLY
from benchbench.stages import Stage


def data_source(task, ctx: RunContext) -> tuple[str, Path]:
    """``(data key, layout root)`` of the training data set (see ``source``)."""
    return source(task.params, ctx)


def source(p, ctx: RunContext) -> tuple[str, Path]:
    """``(data key, layout root)`` of the data set task params ``p`` describe: the synthetic
    set as a cached stage, or the user's folder fingerprinted by its file names, sizes and
    times (edits in place invalidate models)."""
    if p.data_root:
        base = find_layout_root(p.data_root, p.layout)
        found = base.rglob("*") if p.layout == "msmt17" else base.glob("*/*.jpg")
        files = sorted((f.relative_to(base).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in found
                       if f.suffix == ".jpg" or f.name in MSMT_LISTS)
        return stable_hash({"layout": p.layout, "files": files}), base
    spec = SyntheticSpec(train_ids=p.syn_train_ids, test_ids=p.syn_test_ids, cameras=p.syn_cameras,
                         height=p.height, width=p.width, mean_images_per_id=p.syn_mean_images, seed=p.syn_seed)
    parts = {"spec": asdict(spec), "generator": GENERATOR_VERSION}
    if p.layout != "market1501":  # the default world's key predates other layouts
        parts["layout"] = p.layout
    stage = ctx.cache.get_or_build("reid-synthetic", parts, lambda d: generate(d, spec, p.layout))
    return stage.key, stage.path


def train_config(task) -> TrainConfig:
    p = task.params
    return TrainConfig(arch=p.arch, weights=p.weights, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                       ids_per_batch=p.batch_ids, images_per_id=p.batch_images_per_id, margin=p.margin)


def model_stage(task, defense: ReidDefense, data: ReidData, data_key: str, ctx: RunContext,
                root: Path | None = None) -> Stage:
    """The defense's model for this seed, trained once and shared by every attack column;
    a killed build resumes from its checkpoints (``ctx.checkpoint_every``)."""
    parts = {"data": data_key, "task": task.identity(drop=EVALUATION_ONLY), "defense": defense.identity(),
             "seed": ctx.seed}
    checkpoints = Checkpointer(ctx.cache.checkpoint_folder("reid-model", parts), ctx.checkpoint_every,
                               what=f"reid-model: {defense.name} seed {ctx.seed}")

    def build(out: Path) -> None:
        model = train(defense, data.train, data.num_train_ids, train_config(task), ctx.seed, cache=ctx.cache,
                      data_key=data_key, show_progress=ctx.progress, log_path=out / "train_log.json",
                      device=ctx.device, data_root=root, layout=task.params.layout,
                      reference=lambda: reference_stage(task, data, data_key, ctx, root),
                      precision=ctx.precision, checkpoints=checkpoints)
        save_model(model, out)

    return ctx.cache.get_or_build("reid-model", parts, build)


def reference_stage(task, data: ReidData, data_key: str, ctx: RunContext, root: Path | None = None) -> Stage:
    """The ``none`` defense's model for this data and seed, under the key its own cell uses
    (so a defense that asks for it inside a grid reuses the grid's model)."""
    from benchbench.registry import load_registry

    plain = load_registry().get("defense", "reid", "none")(preset=ctx.preset)
    return model_stage(task, plain, data, data_key, ctx, root)


def surrogate_model(task, arch: str, data: ReidData, data_key: str, ctx: RunContext, root: Path | None = None):
    """The ``none`` model of architecture ``arch`` trained by ``task``'s protocol (same data,
    seed and budget; from scratch, as a target's checkpoint does not fit another
    architecture): a black-box attacker's surrogate, cached as that task's own model."""
    if arch == task.params.arch:
        raise ConfigError(f"surrogate architecture '{arch}' is the target model's own: a black-box "
                          f"transfer needs another one (e.g. {'resnet18' if arch != 'resnet18' else 'osnet_x0_25'})")
    build_model(arch, num_classes=1)  # an unknown name fails here, with close matches
    other = type(task)({**task.params.model_dump(), "arch": arch, "weights": None})
    return load_model(reference_stage(other, data, data_key, ctx, root).path).to(ctx.device)


def gallery_embeddings(model_key: str, model, data: ReidData, ctx: RunContext, eval_key: str | None = None,
                       purifier: dict | None = None) -> Embeddings:
    """The clean gallery's features, a stage of the model; ``eval_key``: the gallery's data
    set when it is not the model's training data set (cross-data-set). Under a purifying
    defense, ``purifier`` is the defense's identity (added to the key with the seed) and
    ``model`` a function building the purified network: the gallery gets a purifier of its
    own, so whether this stage was cached leaves the queries' random draws as they were."""
    parts = {"model": model_key}
    if eval_key is not None:
        parts["gallery_data"] = eval_key
    if purifier is not None:
        parts.update(purifier=purifier, seed=ctx.seed)
    stage = ctx.cache.get_or_build(
        "reid-gallery", parts,
        lambda out: save_file({"features": extract_features(model if purifier is None else model(),
                                                            data.gallery.images)},
                              str(out / "features.safetensors")))
    features = load_file(str(stage.path / "features.safetensors"))["features"]
    return Embeddings(features, data.gallery.pids, data.gallery.camids)


def load_data(task, ctx: RunContext) -> tuple[ReidData, str, Path, str | None]:
    """``(data, training data key, training layout root, evaluation data key)``: the
    evaluation key is None unless query and gallery come from another data set."""
    p = task.params
    data_key, root = data_source(task, ctx)
    if p.eval_data is None:
        return load_reid_data(root, (p.height, p.width), p.layout), data_key, root, None
    other = p.evaluation()
    eval_key, eval_root = source(other, ctx)
    data = load_reid_data(root, (p.height, p.width), p.layout, eval_root=eval_root, eval_layout=other.layout)
    return data, data_key, root, eval_key


def run_cell(task, cell: ResolvedCell, ctx: RunContext) -> dict[str, dict[str, float]]:
    data, data_key, root, eval_key = load_data(task, ctx)
    defense = cell.defense
    # a test-time defense evaluates the none defense's model (the none cells' stage)
    trained = (reference_stage(task, data, data_key, ctx, root) if defense.test_time
               else model_stage(task, defense, data, data_key, ctx, root))
    net = load_model(trained.path).to(ctx.device)
    purifier = defense.purifier(data.train, data_key, ctx)
    model = net if purifier is None else Purified(net, purifier).to(ctx.device)
    attacked = net if purifier is not None and defense.attacker_gradient() == "oblivious" else model
    with Precision(ctx.precision, ctx.device).autocast():  # embeddings and the attack's forward passes
        if purifier is None:
            gallery = gallery_embeddings(trained.key, model, data, ctx, eval_key)
        else:
            gallery = gallery_embeddings(
                trained.key, lambda: Purified(net, defense.purifier(data.train, data_key, ctx)).to(ctx.device),
                data, ctx, eval_key, purifier=defense.identity())
        cell.attack.prepare(AttackContext(data.train, lambda arch: surrogate_model(task, arch, data, data_key, ctx,
                                                                                   root)))
        attack = cell.attack.build(attacked, seed=ctx.seed)
        if cell.attack.perturbs() == "gallery":
            images = attack(data.gallery.floats(), data.gallery.pids,
                            guide_images=data.query.floats(), guide_pids=data.query.pids)
            gallery = Embeddings(extract_features(model, images), data.gallery.pids, data.gallery.camids)
            queries = data.query.floats()
        else:
            queries = attack(data.query.floats(), data.query.pids)
        query = Embeddings(extract_features(model, queries), data.query.pids, data.query.camids)
    ctx.notes["model_stage"] = {"key": trained.key, "hit": trained.hit}
    return {e.name: e.evaluate_model(query, gallery, trained.path) for e in cell.evaluators}
