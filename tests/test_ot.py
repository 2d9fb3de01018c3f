"""benchbench.ot against POT (the reference implementation of entropic OT), plus
gradients, chunking, the iteration cap and argument errors."""
from __future__ import annotations

from unittest import mock

import numpy as np
import ot
import ot.batch
import pytest
import torch

import benchbench.ot as bot
from benchbench.ot import (candidate_ot_distances, cosine_cost, pairwise_ot_distances,
                           sinkhorn)

TIGHT = {"tol": 1e-10, "max_iter": 100_000}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tokens(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=generator(seed), dtype=dtype)


def pot_distance(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, reg: float,
                 **kwargs) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    return float(ot.sinkhorn2(a / a.sum(), b / b.sum(), cost.double().numpy(), reg, **kwargs))


def assert_rel_close(ours, reference, rtol: float = 1e-4) -> None:
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(reference), rtol=rtol)


@pytest.mark.parametrize("reg", [0.1, 0.05])
def test_uniform_marginals_match_pot_sinkhorn2(reg):
    cost = cosine_cost(tokens(6, 9, 16, seed=1), tokens(6, 5, 16, seed=2))
    ours = sinkhorn(cost, reg, **TIGHT)
    assert ours.converged
    expected = [pot_distance(c, torch.ones(9), torch.ones(5), reg) for c in cost]
    assert_rel_close(ours.distance, expected)


def test_objective_matches_pot_batch_value_with_entropy():
    cost = cosine_cost(tokens(4, 7, 8, seed=3), tokens(4, 6, 8, seed=4))
    ours = sinkhorn(cost, 0.1, **TIGHT)
    pot = ot.batch.solve_batch(cost, 0.1, max_iter=100_000, tol=1e-12, method="log_sinkhorn")
    assert_rel_close(ours.objective, pot.value)
    assert_rel_close(ours.distance, pot.value_linear)
    assert not np.allclose(ours.objective, ours.distance)  # the entropy term is really there


def test_non_uniform_marginals_match_pot():
    cost = cosine_cost(tokens(5, 8, 16, seed=5), tokens(5, 6, 16, seed=6))
    row_w = torch.rand(5, 8, generator=generator(7), dtype=torch.float64) + 0.05
    col_w = torch.rand(5, 6, generator=generator(8), dtype=torch.float64) + 0.05
    ours = sinkhorn(cost, 0.05, row_weights=row_w, col_weights=col_w, return_plan=True, **TIGHT)
    expected = [pot_distance(c, a, b, 0.05) for c, a, b in zip(cost, row_w, col_w)]
    assert_rel_close(ours.distance, expected)
    torch.testing.assert_close(ours.plan.sum(2), row_w / row_w.sum(1, keepdim=True))
    torch.testing.assert_close(ours.plan.sum(1), col_w / col_w.sum(1, keepdim=True))


def test_mixed_sizes_via_masks_match_each_unpadded_problem():
    sizes = [(3, 2), (8, 6), (5, 1), (1, 6)]
    cost = cosine_cost(tokens(4, 8, 16, seed=9), tokens(4, 6, 16, seed=10))
    row_mask = torch.tensor([[i < p for i in range(8)] for p, _ in sizes])
    col_mask = torch.tensor([[j < t for j in range(6)] for _, t in sizes])
    padded = torch.where(row_mask[:, :, None] & col_mask[:, None, :], cost, float("inf"))
    ours = sinkhorn(padded, 0.05, row_mask=row_mask, col_mask=col_mask, return_plan=True, **TIGHT)
    expected = [pot_distance(c[:p, :t], torch.ones(p), torch.ones(t), 0.05)
                for c, (p, t) in zip(cost, sizes)]
    assert_rel_close(ours.distance, expected)
    assert torch.isfinite(ours.objective).all()
    assert (ours.plan[~(row_mask[:, :, None] & col_mask[:, None, :])] == 0).all()


def test_float32_small_reg_stays_exact_where_the_plain_kernel_underflows():
    cost = 1.1 + 0.9 * torch.rand(8, 10, 6, generator=generator(11), dtype=torch.float64)
    reg = 0.01  # exp(-cost / reg) < 1e-47: zero in float32
    assert (torch.exp(-cost.float() / reg) == 0).all()
    ours = sinkhorn(cost.float(), reg, tol=1e-6, max_iter=100_000)
    assert ours.converged and torch.isfinite(ours.objective).all()
    # POT's plain kernel is still representable in float64 (> 1e-88).
    expected = [pot_distance(c, torch.ones(10), torch.ones(6), reg, stopThr=1e-10,
                             numItermax=1_000_000) for c in cost]
    assert_rel_close(ours.distance, expected)


def test_recovers_when_kernel_underflow_zeroes_a_column():
    """Simulate the failure the log-domain restart exists for: a kernel column that
    underflowed to 0 makes its scaling inf; the solver must drop back to an exact
    log-domain iteration and still reach POT's answer."""
    cost = cosine_cost(tokens(3, 7, 8, seed=12), tokens(3, 5, 8, seed=13))
    rebuild = bot._Live.rebuild_kernel
    calls = []

    def underflowing_rebuild(live, log_k, n_iters):
        rebuild(live, log_k, n_iters)
        if not calls:
            live.kernel[:, :, 0] = 0
            live.kernel_t[:, 0, :] = 0
        calls.append(n_iters)

    with mock.patch.object(bot._Live, "rebuild_kernel", underflowing_rebuild), \
            mock.patch.object(bot, "_log_iteration", wraps=bot._log_iteration) as log_iteration:
        ours = sinkhorn(cost, 0.05, **TIGHT)
    assert log_iteration.call_count >= 1
    expected = [pot_distance(c, torch.ones(7), torch.ones(5), 0.05) for c in cost]
    assert_rel_close(ours.distance, expected)


def test_batch_and_single_solves_agree():
    cost = cosine_cost(tokens(12, 9, 16, seed=14), tokens(12, 7, 16, seed=15))
    together = sinkhorn(cost, 0.05, tol=1e-9).distance
    alone = torch.cat([sinkhorn(cost[i:i + 1], 0.05, tol=1e-9).distance for i in range(12)])
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=0)


def test_newton_phase_reaches_pots_answer_in_far_fewer_iterations(monkeypatch):
    cost = cosine_cost(tokens(16, 12, 16, seed=30), tokens(16, 8, 16, seed=31)).float()
    with_newton = sinkhorn(cost, 0.02, tol=1e-5, max_iter=100_000)
    monkeypatch.setattr(bot, "_NEWTON_BELOW", 0.0)
    plain = sinkhorn(cost, 0.02, tol=1e-5, max_iter=100_000)
    assert with_newton.converged and plain.converged
    assert with_newton.n_iters * 5 < plain.n_iters  # measured: 74 vs 1060
    expected = [pot_distance(c, torch.ones(12), torch.ones(8), 0.02, stopThr=1e-10,
                             numItermax=100_000) for c in cost]
    assert_rel_close(with_newton.distance, expected)
    assert_rel_close(plain.distance, expected)


def test_newton_falls_back_to_sinkhorn_where_its_system_is_not_positive_definite():
    """Every Cholesky factorisation 'fails' (info > 0, garbage factor): each problem must
    take plain Sinkhorn iterations instead and still reach POT's answer."""
    cost = cosine_cost(tokens(5, 9, 16, seed=32), tokens(5, 6, 16, seed=33))

    def failing(matrix):
        return torch.full_like(matrix, float("nan")), torch.ones(len(matrix), dtype=torch.int32)

    with mock.patch.object(torch.linalg, "cholesky_ex", side_effect=failing) as calls:
        ours = sinkhorn(cost, 0.05, **TIGHT)
    assert calls.call_count >= 1 and ours.converged
    expected = [pot_distance(c, torch.ones(9), torch.ones(6), 0.05) for c in cost]
    assert_rel_close(ours.distance, expected)


def test_cache_sized_chunks_give_the_one_batch_answer(monkeypatch):
    cost = cosine_cost(tokens(10, 9, 16, seed=34), tokens(10, 7, 16, seed=35))
    row_mask = torch.arange(9) < torch.randint(1, 10, (10, 1), generator=generator(36))
    whole = sinkhorn(cost, 0.05, row_mask=row_mask, tol=1e-9, return_plan=True)
    monkeypatch.setattr(bot, "_CACHE_BYTES", 3 * 9 * 7 * cost.element_size())  # 3 per chunk
    chunked = sinkhorn(cost, 0.05, row_mask=row_mask, tol=1e-9, return_plan=True)
    torch.testing.assert_close(chunked.distance, whole.distance, rtol=1e-6, atol=0)
    torch.testing.assert_close(chunked.plan, whole.plan, rtol=1e-5, atol=1e-9)
    assert chunked.converged and chunked.plan.shape == (10, 9, 7)


def test_iteration_cap_reports_unconverged_and_honest_error():
    cost = cosine_cost(tokens(4, 12, 16, seed=16), tokens(4, 9, 16, seed=17))
    capped = sinkhorn(cost, 0.02, tol=1e-9, max_iter=7, return_plan=True)
    assert capped.n_iters == 7 and not capped.converged
    # The reported error is the true L1 row-marginal violation of the returned plan,
    # and columns are exact.
    torch.testing.assert_close(capped.marginal_error, (capped.plan.sum(2) - 1 / 12).abs().sum(1))
    torch.testing.assert_close(capped.plan.sum(1), torch.full((4, 9), 1 / 9, dtype=torch.float64))
    assert (capped.marginal_error > 1e-9).any()
    full = sinkhorn(cost, 0.02, tol=1e-9, max_iter=100_000)
    assert full.converged and 7 < full.n_iters < 100_000
    assert (full.marginal_error <= 1e-9).all()


def test_chunked_all_pairs_equal_direct_computation():
    x, y = tokens(5, 6, 8, seed=18), tokens(7, 4, 8, seed=19)
    x_mask = torch.rand(5, 6, generator=generator(20)) > 0.3
    y_mask = torch.rand(7, 4, generator=generator(21)) > 0.3
    x_mask[:, 0] = y_mask[:, 0] = True
    kwargs = {"x_mask": x_mask, "y_mask": y_mask, "tol": 1e-11}
    direct = torch.tensor([[sinkhorn(cosine_cost(x[i:i + 1], y[j:j + 1]), 0.05,
                                     row_mask=x_mask[i:i + 1], col_mask=y_mask[j:j + 1],
                                     tol=1e-11).distance.item() for j in range(7)]
                           for i in range(5)], dtype=torch.float64)
    one_block = pairwise_ot_distances(x, y, 0.05, **kwargs)
    assert one_block.shape == (5, 7)
    torch.testing.assert_close(one_block, direct, rtol=1e-8, atol=0)
    for chunk in (1, 3, 10):  # blocks of single pairs, part rows, several rows
        torch.testing.assert_close(pairwise_ot_distances(x, y, 0.05, chunk_pairs=chunk, **kwargs),
                                   direct, rtol=1e-8, atol=0)
    tiny_budget = pairwise_ot_distances(x, y, 0.05, memory_budget=1, **kwargs)
    torch.testing.assert_close(tiny_budget, direct, rtol=1e-8, atol=0)


def test_candidate_distances_are_the_matching_all_pairs_entries():
    x, y = tokens(6, 5, 8, seed=22), tokens(9, 4, 8, seed=23)
    y_weights = torch.rand(9, 4, generator=generator(24), dtype=torch.float64) + 0.1
    candidates = torch.randint(0, 9, (6, 3), generator=generator(25))
    all_pairs = pairwise_ot_distances(x, y, 0.05, y_weights=y_weights, tol=1e-11)
    shortlist = candidate_ot_distances(x, y, candidates, 0.05, y_weights=y_weights,
                                       tol=1e-11, chunk_pairs=4)
    torch.testing.assert_close(shortlist, all_pairs.gather(1, candidates), rtol=1e-8, atol=0)


def test_autodiff_gradient_of_distance_wrt_features():
    x = tokens(2, 4, 3, seed=26).requires_grad_()
    y = tokens(2, 3, 3, seed=27).requires_grad_()

    def distance(x, y):
        return sinkhorn(cosine_cost(x, y), 0.1, grad="autodiff", **TIGHT).distance

    assert torch.autograd.gradcheck(distance, (x, y))


def test_envelope_gradient_of_objective_wrt_features():
    x = tokens(2, 4, 3, seed=28).requires_grad_()
    y = tokens(2, 3, 3, seed=29).requires_grad_()

    def objective(x, y):
        return sinkhorn(cosine_cost(x, y), 0.1, **TIGHT).objective

    assert torch.autograd.gradcheck(objective, (x, y))


@pytest.mark.parametrize(("grad", "output"), [("autodiff", "distance"), ("envelope", "objective")])
def test_gradients_with_padding_are_exact_and_zero_on_padding(grad, output):
    x = tokens(2, 5, 3, seed=37).requires_grad_()
    y = tokens(2, 4, 3, seed=38).requires_grad_()
    row_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    col_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)

    def value(x, y):
        result = sinkhorn(cosine_cost(x, y), 0.1, row_mask=row_mask, col_mask=col_mask,
                          grad=grad, **TIGHT)
        return getattr(result, output)

    assert torch.autograd.gradcheck(value, (x, y))
    grad_x, grad_y = torch.autograd.grad(value(x, y).sum(), (x, y))
    assert (grad_x[~row_mask] == 0).all() and (grad_y[~col_mask] == 0).all()


def test_envelope_gradient_wrt_cost_is_the_plan():
    cost = cosine_cost(tokens(3, 5, 4, seed=30), tokens(3, 4, 4, seed=31)).requires_grad_()
    result = sinkhorn(cost, 0.05, return_plan=True, **TIGHT)
    result.distance.sum().backward()
    torch.testing.assert_close(cost.grad, result.plan)


def test_autodiff_gradient_wrt_weights_and_envelope_refuses_them():
    cost = cosine_cost(tokens(2, 4, 3, seed=32), tokens(2, 3, 3, seed=33))
    weights = torch.rand(2, 4, generator=generator(34), dtype=torch.float64) + 0.1
    weights.requires_grad_()

    def distance(w):
        return sinkhorn(cost, 0.1, row_weights=w, grad="autodiff", **TIGHT).distance

    assert torch.autograd.gradcheck(distance, (weights,))
    with pytest.raises(ValueError, match="grad='autodiff'"):
        sinkhorn(cost, 0.1, row_weights=weights)


def test_pairwise_distances_are_differentiable():
    x = tokens(3, 4, 5, seed=35).requires_grad_()
    y = tokens(2, 3, 5, seed=36)
    pairwise_ot_distances(x, y, 0.1, chunk_pairs=2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: sinkhorn(torch.rand(4, 3), 0.1), r"cost must be \(B, P, T\)"),
    (lambda: sinkhorn(torch.rand(2, 4, 3), 0.1, row_mask=torch.ones(2, 3, dtype=torch.bool)),
     r"row_mask must have shape \(2, 4\)"),
    (lambda: sinkhorn(torch.rand(2, 4, 3), 0.1, col_weights=-torch.ones(2, 3)),
     "col_weights must be >= 0"),
    (lambda: sinkhorn(torch.rand(2, 4, 3), 0.1, col_mask=torch.zeros(2, 3, dtype=torch.bool)),
     "needs a real col token"),
    (lambda: sinkhorn(torch.rand(2, 4, 3), 0.0), "reg > 0"),
    (lambda: sinkhorn(torch.rand(2, 4, 3), 0.1, grad="implicit"), "grad must be"),
    (lambda: cosine_cost(torch.rand(2, 4, 3), torch.rand(2, 5, 6)), "feature sizes differ"),
    (lambda: pairwise_ot_distances(torch.rand(2, 4, 3), torch.rand(5, 6), 0.1), "token sets"),
    (lambda: pairwise_ot_distances(torch.rand(2, 4, 3), torch.rand(5, 6, 3), 0.1,
                                   y_mask=torch.ones(5, 4, dtype=torch.bool)),
     r"y_mask must have shape \(5, 6\)"),
    (lambda: candidate_ot_distances(torch.rand(2, 4, 3), torch.rand(5, 6, 3),
                                    torch.zeros(3, 2, dtype=torch.long), 0.1), r"\(N=2, k\)"),
    (lambda: candidate_ot_distances(torch.rand(2, 4, 3), torch.rand(5, 6, 3),
                                    torch.full((2, 2), 5), 0.1), "must index y's 5 sets"),
])
def test_clear_errors_on_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
