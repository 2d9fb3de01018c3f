"""The method-fidelity params of the re-matching defenses: which images are re-matched,
whether the last epoch may match, RoCLIP's zero-weighted own captions, OTCCLIP's text
marginals and its refusal of identical intra-loss views."""
from __future__ import annotations

import contextlib
import json
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from benchbench.clip.augment import STOP_WORDS
from benchbench.clip.model import ClipModel, Features, ModelSpec, contrastive_loss
from benchbench.clip.rematch import FeatureQueue, MatchLog, load_matches
from benchbench.clip.synthetic import PAIR_TEMPLATES, SINGLE_TEMPLATES
from benchbench.errors import ConfigError
from benchbench.ot import cosine_cost, sinkhorn
from benchbench.runner import Environment, run_cell
from benchbench_otcclip import OTCCLIP, TEMPLATE_WORDS, content_mask, word_token_ids
from benchbench_roclip import RoCLIP


def _state(epoch: int, epochs: int = 10) -> SimpleNamespace:
    return SimpleNamespace(global_epoch=epoch, epoch=epoch, phase=SimpleNamespace(epochs=epochs),
                           timed=lambda what: contextlib.nullcontext())


def _roclip_with_pool(**params) -> RoCLIP:
    defense = RoCLIP({"pool_size": 16, "match_every": 1, "first_match_epoch": 1, **params})
    defense.pool, defense.matches = FeatureQueue(16), MatchLog()  # what train() sets up
    defense.pool.push(torch.eye(8), torch.arange(100, 108))
    return defense


def _batch_features(text_grad: bool = False) -> tuple[SimpleNamespace, Features]:
    """Eight pairs whose images sit near pool entries; pairs 2 and 5 have the lowest
    image-to-own-caption cosine."""
    image = F.normalize(torch.eye(8)[[3, 1, 4, 1, 5, 0, 2, 6]] + 0.05, dim=1)
    text = image.clone()
    text[2], text[5] = -image[2], torch.eye(8)[7]
    text = text.requires_grad_(text_grad)
    batch = SimpleNamespace(index=torch.arange(8), caption_index=torch.arange(8))
    return batch, Features(image, text, torch.tensor(5.0))


def test_suspect_rematches_only_the_lowest_similarity_fraction():
    defense = _roclip_with_pool(rematch="suspect", suspect_fraction=0.25)
    batch, features = _batch_features()
    terms = defense.loss(batch, features, _state(0))
    rows = defense.matches.tensors()["caption_row"]
    assert rows.tolist() == [0, 1, 104, 3, 4, 100, 6, 7]  # only pairs 2 and 5, each to its nearest pooled caption
    expected_text = features.text.clone()
    expected_text[2], expected_text[5] = torch.eye(8)[4], torch.eye(8)[0]
    assert torch.allclose(terms["clip"], contrastive_loss(features.image, expected_text, features.logit_scale))


def test_all_rematches_every_image():
    defense = _roclip_with_pool()
    batch, features = _batch_features()
    defense.loss(batch, features, _state(0))
    assert defense.matches.tensors()["caption_row"].tolist() == [103, 101, 104, 101, 105, 100, 102, 106]


def test_roclip_gives_own_captions_no_gradient_in_a_matching_epoch():
    """RoCLIP's get_loss adds the own-caption logits with weight 0."""
    defense = _roclip_with_pool()
    batch, features = _batch_features(text_grad=True)
    defense.loss(batch, features, _state(0))["clip"].backward()
    assert features.text.grad is None or not features.text.grad.any()


@pytest.mark.parametrize("match_last_epoch, last_matches", [(True, True), (False, False)])
def test_match_last_epoch(match_last_epoch, last_matches):
    defense = RoCLIP({"match_every": 1, "first_match_epoch": 1, "match_last_epoch": match_last_epoch})
    assert [defense.matching(_state(e, epochs=3)) for e in range(3)] == [True, True, last_matches]


def test_a_plain_last_epoch_trains_on_own_captions():
    defense = _roclip_with_pool(match_last_epoch=False)
    batch, features = _batch_features()
    terms = defense.loss(batch, features, _state(9, epochs=10))
    assert len(defense.matches) == 0
    assert torch.allclose(terms["clip"], contrastive_loss(features.image, features.text, features.logit_scale))


# -- OTCCLIP ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> ClipModel:
    return ClipModel.create(ModelSpec(), seed=0)


def _content(model: ClipModel, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = model.tokenize(captions)
    masked = word_token_ids(model, STOP_WORDS | set(TEMPLATE_WORDS))
    return tokens, content_mask(tokens, model.word_mask(tokens), masked)


def test_content_marginals_put_zero_mass_on_stop_and_template_words(model):
    caption = "a photo of a red circle on a dark background"
    tokens, mask = _content(model, [caption])
    kept = model.tokenizer.decode(tokens[0][mask[0]].tolist()).split()
    assert kept == ["red", "circle", "dark"]
    cost = cosine_cost(torch.randn(1, 4, 8), torch.randn(1, tokens.shape[1], 8))
    plan = sinkhorn(cost, 0.1, col_mask=mask, return_plan=True).plan
    column_mass = plan.sum(dim=1)[0]
    assert torch.all(column_mass[~mask[0]] == 0)
    assert torch.allclose(column_mass[mask[0]], torch.full((3,), 1 / 3), atol=1e-4)


def test_a_caption_without_content_words_keeps_all_its_words(model):
    tokens, mask = _content(model, ["a photo of it"])
    assert torch.equal(mask, model.word_mask(tokens))


def test_synthetic_caption_templates_have_no_unmasked_boilerplate():
    """Every fixed word of the synthetic world's caption templates is a stop or template
    word, so 'content' marginals leave only the words the placeholders fill in."""
    words = {w for t in (*SINGLE_TEMPLATES, *PAIR_TEMPLATES) for w in re.findall(r"[a-z]+", re.sub(r"{\w+}", "", t))}
    assert words <= STOP_WORDS | set(TEMPLATE_WORDS)


@pytest.mark.parametrize("params", [
    {"image_augmentation": "none", "eda": 0.0},
    {"image_augmentation": "none"},  # captions augmented, images not
    {"image_augmentation": "simclr", "eda": 0.0, "intra_image_augmentation": "simclr"},
])
def test_intra_loss_refuses_identical_views(params):
    with pytest.raises(ConfigError, match="intra-modality loss .* needs augmented second views"):
        OTCCLIP(params)


def test_intra_views_may_be_augmented_alone_or_the_loss_switched_off():
    default = OTCCLIP(preset="default").params
    assert (default.image_augmentation, default.eda) == ("none", 0.0)  # the CLIP loss sees un-augmented pairs
    view = default.intra_view()
    assert (view.image_augmentation, view.eda) == ("simclr", 0.1)
    assert OTCCLIP({"image_augmentation": "none", "eda": 0.0, "beta": 0.0}).params.beta == 0


# -- end to end (smoke: one epoch, which is both the first matching and the last) -------
def _run(tmp_path, registry, defense: dict) -> tuple[dict, dict | None]:
    spec = {"track": "clip", "task": {"name": "clip-poisoning", "params": {}},
            "attack": {"name": "badnets", "params": {}}, "defense": defense,
            "evaluators": [{"name": "rematch", "params": {}}], "seed": 0, "preset": "smoke"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_cell(spec, Environment(cache_root=str(tmp_path), progress=False), registry)
    finally:
        torch.set_num_threads(threads)
    assert result["status"] == "ok", result["traceback"]
    # the defense's own model (the rematch evaluator also trains the plain `none` model)
    stages = [m.parent for m in (tmp_path / "clip-model").glob("*/stage.json")
              if json.loads(m.read_text())["parts"]["defense"]["name"] == defense["name"]]
    return result, load_matches(stages[0])


def test_otcclip_suspect_rematching_with_content_marginals_runs(tmp_path, registry):
    params = {"rematch": "suspect", "suspect_fraction": 0.25, "text_marginals": "content"}
    result, matches = _run(tmp_path, registry, {"name": "otcclip", "params": params})
    assert {"recall", "recall_global"} <= set(result["metrics"]["rematch"])
    changed = matches["caption_row"] != matches["image_row"]
    assert 0 < changed.float().mean() <= 0.25  # a quarter of each batch at most (smoke batches: 64)


def test_a_plain_last_epoch_leaves_no_matches(tmp_path, registry):
    result, matches = _run(tmp_path, registry, {"name": "roclip", "params": {"match_last_epoch": False}})
    assert matches is None and result["metrics"]["rematch"] == {}
