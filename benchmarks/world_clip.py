"""Measure the CLIP world's principles (docs/worlds.md, C1-C5) on plain (`none`) models only.

No defense is trained or looked at here: every figure comes from the synthetic data
itself or from standard CLIP training on clean pairs, so the world's defaults can be
chosen without seeing any defense's ASR or utility.

- C1  class-token pooling: cosine between an image's global embedding and the mean of
      its projected patch tokens (1.000 when the tower average-pools those very tokens).
- C2  no caption form splits clean-pair similarity into modes: a 2-component Gaussian
      mixture (SafeCLIP's split) fitted to the clean-pair cosines, and for each caption
      property the largest gap between its groups in the share of pairs the mixture puts
      in its upper component; also the largest gap of group means in pooled-sd units.
- C3  zero-shot prompts drawn from the training captions: how many class prompts occur
      verbatim among the training captions.
- C4  many phrasings: templates, word orders and distinct captions per shape.
- C5  a plain model that retrieves: after each epoch, the share of clean training
      images whose global nearest caption (among all training captions, as a RoCLIP pool
      that holds the whole set) names the same shapes as their own caption. The first
      epoch at which it reaches the target is the warm-up the re-matching defenses' CPU
      preset uses; the final figure stands beside `false_rematch_rate` on the board.

This file is also the plugin of its probe defense (plain CLIP with an epoch-end
measurement), loaded like `benchbench grid --plugin benchmarks/world_clip.py`.

    .venv/bin/python benchmarks/world_clip.py [--seeds 3] [--epochs 10 15]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import datasets
import torch
from benchbench_clip_baseline import StandardClip

import benchbench
from benchbench.cells import CellSpec, ComponentRef
from benchbench.clip import synthetic
from benchbench.clip.api import NoPoison
from benchbench.clip.data import CAPTION, TEMPLATE, quiet
from benchbench.clip.rematch import mentioned_classes
from benchbench.clip.synthetic import SHAPES
from benchbench.context import RunContext
from benchbench.registry import load_registry
from benchbench.stages import StageCache

RETRIEVAL_TARGET = 0.6  # docs/worlds.md, C5
CURVE_FILE = "retrieval_curve.json"


def retrieval_rate(image: torch.Tensor, text: torch.Tensor, captions: list[str]) -> float:
    """Share of images whose nearest caption (cosine, all captions) names the same shapes
    as their own; images whose caption names no shape are left out."""
    own = [mentioned_classes(c, SHAPES) for c in captions]
    nearest = torch.cat([(image[i:i + 1024] @ text.T).argmax(1) for i in range(0, len(image), 1024)])
    judged = [(o, mentioned_classes(captions[j], SHAPES)) for o, j in zip(own, nearest.tolist()) if o]
    return sum(a == b for a, b in judged) / len(judged)


class RetrievalProbe(StandardClip):
    """Standard CLIP training that measures C5 (and C1) after every epoch."""

    name = "none-retrieval-probe"
    description = "plain CLIP that logs global nearest-caption retrieval after each epoch (world_clip.py)"

    def train(self, model, config, data, clean=None, poison=None):
        self.curve: list[dict] = []
        return super().train(model, config, data, clean=clean, poison=poison)

    def on_epoch_end(self, state) -> None:
        f = state.embed_all(with_tokens=True)
        mean_patch = torch.nn.functional.normalize(f.image_tokens.mean(1), dim=-1)
        self.curve.append({"epoch": state.global_epoch + 1,
                           "retrieval": retrieval_rate(f.image, f.text, state.data.captions),
                           "cls_vs_mean_patch_cosine": (f.image * mean_patch).sum(-1).mean().item()})

    def save_artifacts(self, directory: Path) -> None:
        (directory / CURVE_FILE).write_text(json.dumps(self.curve, indent=1))


@benchbench.hookimpl
def benchbench_defenses() -> list[type]:
    return [RetrievalProbe]


def caption_properties(caption: str, template: int) -> dict[str, str]:
    """The groups a caption belongs to, for C2."""
    words = set(re.findall(r"[a-z-]+", caption.lower()))
    synonyms = {w for table in (synthetic.COLOUR_WORDS, synthetic.SIZE_WORDS, synthetic.TEXTURE_WORDS)
                for names in table.values() for w in names[1:]}
    return {
        "template": str(template),
        "objects": str(len(mentioned_classes(caption, SHAPES))),
        "size named": str(bool(words & {w for v in synthetic.SIZE_WORDS.values() for w in v})),
        "texture named": str(bool(words & {w for v in synthetic.TEXTURE_WORDS.values() for w in v})),
        "colour after shape": str(bool(re.search(r"\b(" + "|".join(SHAPES) + r") in \w+", caption))),
        "synonym used": str(bool(words & synonyms)),
    }


def largest_gap(values: list[float], groups: list[str], min_size: int = 30) -> tuple[float, str]:
    """Largest difference of group means (groups of at least ``min_size``), and the two groups."""
    by: dict[str, list[float]] = defaultdict(list)
    for v, g in zip(values, groups):
        by[g].append(v)
    means = {g: statistics.fmean(v) for g, v in by.items() if len(v) >= min_size}
    hi, lo = max(means, key=means.get), min(means, key=means.get)
    return means[hi] - means[lo], f"{hi} vs {lo}"


def upper_component_share(sims: list[float]) -> list[float]:
    """Each pair's posterior of the upper component of a 2-component GMM, as SafeCLIP fits."""
    from sklearn.mixture import GaussianMixture

    x = torch.tensor(sims, dtype=torch.float64).view(-1, 1).numpy()
    gmm = GaussianMixture(2, random_state=0).fit(x)
    return gmm.predict_proba(x)[:, int(gmm.means_.argmax())].tolist()


def data_figures(train: datasets.Dataset, templates: list[str]) -> None:
    captions = list(train[CAPTION])
    forms = Counter(train[TEMPLATE])
    print(f"C3  zero-shot prompts that are training captions: "
          f"{sum(t.format(s) in set(captions) for t in templates for s in SHAPES)}/{len(templates) * len(SHAPES)}"
          f" ({len(templates)} templates x {len(SHAPES)} classes)")
    per_shape = {s: len({c for c in captions if mentioned_classes(c, SHAPES) == {s}}) for s in SHAPES}
    print(f"C4  {len(forms)} caption templates in use, {len(synthetic.PHRASE_ORDERS)} word orders; "
          f"distinct one-shape captions per shape: min {min(per_shape.values())}, "
          f"max {max(per_shape.values())} (of {len(captions)} captions)")


def model_figures(stage, train: datasets.Dataset) -> dict[str, float]:
    from benchbench.clip.model import ClipModel
    from benchbench.clip.trainer import PairSet

    model = ClipModel.load(stage.path, "cpu")
    pairs = PairSet.from_dataset(train, model)
    image, text = model.encode_images(pairs.images), model.encode_texts(pairs.tokens)
    sims = (image * text).sum(-1).tolist()
    props = [caption_properties(c, t) for c, t in zip(train[CAPTION], train[TEMPLATE])]
    upper, sd = upper_component_share(sims), statistics.pstdev(sims)
    worst = 0.0
    for name in props[0]:
        groups = [p[name] for p in props]
        share_gap, which = largest_gap(upper, groups)
        mean_gap, _ = largest_gap(sims, groups)
        worst = max(worst, share_gap)
        print(f"      C2 by {name:18s} upper-GMM-component share gap {share_gap:.3f} ({which}); "
              f"mean cosine gap {mean_gap / sd:.2f} sd")
    return {"c2_worst_gap": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 15])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed-list", type=int, nargs="+", help="these seeds instead of 0..seeds-1")
    ap.add_argument("--set", nargs="*", default=[], metavar="PARAM=VALUE",
                    help="other clip-poisoning task params (JSON values), e.g. batch_size=64")
    ap.add_argument("--cache", default="runs/cache-world")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry((__file__,))
    cache = StageCache(args.cache)
    printed_data = False
    for epochs in args.epochs:
        finals, c1, c2, first = [], [], [], []
        params = {"epochs": epochs, **{k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)}}
        seeds = args.seed_list or list(range(args.seeds))
        for seed in seeds:
            spec = CellSpec("clip", ComponentRef("clip-poisoning", params), ComponentRef("none"),
                            ComponentRef(RetrievalProbe.name), (ComponentRef("zero-shot"),), seed, "default")
            cell = spec.resolve(registry)
            ctx = RunContext(cache=cache, seed=seed, progress=False)
            with quiet():
                base = cell.task.base_data(ctx)
                train = datasets.load_from_disk(str(base.path / "train"))
                if not printed_data:
                    print(f"# CLIP world: task version {cell.task.version}, caption generator "
                          f"{synthetic.CAPTION_VERSION}, {len(train)} training pairs")
                    data_figures(train, json.loads((base.path / "templates.json").read_text()))
                    printed_data = True
                stage = cell.task.trained_model(base, NoPoison(), cell.defense, ctx)
            curve = json.loads((stage.path / CURVE_FILE).read_text())
            finals.append(curve[-1]["retrieval"])
            c1.append(curve[-1]["cls_vs_mean_patch_cosine"])
            first.append(next((p["epoch"] for p in curve if p["retrieval"] >= RETRIEVAL_TARGET), None))
            print(f"epochs {epochs} seed {seed}: retrieval by epoch "
                  + " ".join(f"{p['retrieval']:.3f}" for p in curve))
            c2.append(model_figures(stage, train)["c2_worst_gap"])
        print(f"== task params {params}, seeds {seeds} (plain models only)")
        print(f"C1  cosine(global embedding, mean patch token): {_ms(c1)}")
        print(f"C2  largest gap between caption groups in the GMM's upper-component share: {_ms(c2)}")
        print(f"C5  nearest caption names the right shapes: {_ms(finals)} (per seed "
              + " / ".join(f"{v:.3f}" for v in finals) + f"); target >= {RETRIEVAL_TARGET}: "
              + ("met" if statistics.fmean(finals) >= RETRIEVAL_TARGET else "NOT met"))
        print(f"    first epoch at or above the target, per seed: {first}")


def _ms(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


if __name__ == "__main__":
    main()
