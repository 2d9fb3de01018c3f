"""Each defense's own piece on hand-made inputs: SafeCLIP's split and schedule,
OTCCLIP's OT losses."""
from __future__ import annotations

from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from benchbench_otcclip import ot_infonce
from benchbench_safeclip import SAFE_SETS_FILE, SafeSet, clean_probability, safe_ratio, safe_set_composition, split_safe


def test_gmm_separates_low_similarity_pairs():
    rng = np.random.default_rng(0)
    sims = np.concatenate([rng.normal(0.5, 0.08, 190), rng.normal(0.0, 0.05, 10)])
    p = clean_probability(sims)
    assert p[:190].min() > 0.9 and p[190:].max() < 0.1


def test_first_split_uses_the_threshold_then_the_ratio():
    sims = np.array([0.9, 0.1, 0.5, 0.8])
    probs = np.array([0.99, 0.01, 0.5, 0.95])
    safe, risky = split_safe(sims, probs, ratio=None, threshold=0.9)
    assert safe.tolist() == [0, 3] and risky.tolist() == [1, 2]
    safe, risky = split_safe(sims, probs, ratio=0.75, threshold=0.9)
    assert safe.tolist() == [0, 2, 3] and risky.tolist() == [1]


def test_split_breaks_probability_ties_by_similarity():
    safe, _ = split_safe(np.array([0.2, 0.7, 0.5]), np.array([1.0, 1.0, 1.0]), ratio=0.34, threshold=0.9)
    assert safe.tolist() == [1]


def test_safe_ratio_grows_by_step_up_to_the_cap():
    assert safe_ratio(0.6, 0, 0.01, 0.85) == 0.6
    assert safe_ratio(0.6, 3, 0.01, 0.85) == pytest.approx(0.63)
    assert safe_ratio(0.6, 100, 0.01, 0.85) == 0.85
    assert safe_ratio(0.9, 1, 0.01, 0.85) == 0.85  # as the reference code: capped after the first epoch


def test_ot_infonce_prefers_matching_token_sets_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8, requires_grad=True)
    y_match = (x.detach() + 0.05 * torch.randn(4, 6, 8)).requires_grad_()
    y_shuffled = y_match.detach()[[1, 2, 3, 0]].requires_grad_()
    scale = torch.tensor(10.0)
    good = ot_infonce(x, y_match, scale, reg=0.05)
    bad = ot_infonce(x, y_shuffled, scale, reg=0.05)
    assert good < bad
    good.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y_match.grad is not None and y_match.grad.abs().sum() > 0


def test_ot_infonce_ignores_masked_tokens():
    torch.manual_seed(0)
    x, y = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    y_noisy = y.clone()
    y_noisy[:, 3:] = torch.randn(3, 2, 8) * 100
    scale = torch.tensor(5.0)
    a = ot_infonce(x, y, scale, reg=0.05, y_mask=mask)
    b = ot_infonce(x, y_noisy, scale, reg=0.05, y_mask=mask)
    assert torch.allclose(a, b)


SAFE = torch.tensor([True, True, False, False, True, False, True])
POISONED = torch.tensor([False, False, False, True, True, False, False])
TEMPLATES = [0, 0, 1, 1, 1, None, -1]  # None and -1: no template (an attack's caption)


def test_safe_set_composition_by_poison_flag_and_template():
    c = safe_set_composition(SAFE, POISONED, TEMPLATES)
    assert c["safe_fraction"] == pytest.approx(4 / 7)
    assert c["safe_share_clean"] == pytest.approx(3 / 5)  # clean rows 0, 1, 2, 5, 6
    assert c["safe_share_poison"] == pytest.approx(1 / 2)
    assert c["safe_share_group_gap"] == pytest.approx(1.0)  # template 0 (clean rows 0, 1) all safe, 1 (row 2) none


def test_safe_set_composition_skips_what_it_cannot_measure():
    c = safe_set_composition(SAFE, torch.zeros(7, dtype=torch.bool))
    assert set(c) == {"safe_fraction", "safe_share_clean"}  # no poison, no template column
    assert "safe_share_group_gap" not in safe_set_composition(SAFE, POISONED, TEMPLATES, min_group=2)
    with pytest.raises(ValueError, match="7 rows cannot describe 3"):
        safe_set_composition(SAFE, POISONED[:3])


@pytest.mark.parametrize("with_template", [True, False])
def test_safe_set_evaluator_reads_the_last_safe_set(tmp_path, with_template):
    save_file({"epoch": torch.tensor([3, 4]), "safe": torch.stack([~SAFE, SAFE])}, str(tmp_path / SAFE_SETS_FILE))
    columns = {"is_poison": POISONED.tolist(), **({"template": TEMPLATES} if with_template else {})}
    inputs = SimpleNamespace(model_dir=tmp_path, train=datasets.Dataset.from_dict(columns))
    metrics = SafeSet({"min_group": 1}).evaluate(inputs)
    assert metrics == safe_set_composition(SAFE, POISONED, TEMPLATES if with_template else None)
    assert ("safe_share_group_gap" in metrics) == with_template
    assert SafeSet().evaluate(SimpleNamespace(model_dir=tmp_path / "none", train=inputs.train)) == {}
