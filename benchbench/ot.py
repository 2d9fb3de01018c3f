"""Batched entropic optimal transport between sets of token features.

OTCCLIP scores an (image, caption) pair by how cheaply the image's patch tokens can be
transported onto the caption's word tokens (ALGORITHMS.md, "our reading"). Matching
re-ranks thousands of candidate pairs per epoch and the alignment losses need one OT
problem per pair in a batch, so this module solves many small problems at once:
a batch of B cost matrices (P row tokens x T column tokens) padded to common sizes, with
boolean masks for the padding and optional token weights as marginals.

Why the log domain: with cosine costs in [0, 2] and the small regularisations that
make OT sharp (reg ~ 0.01-0.05), the Gibbs kernel exp(-C / reg) underflows (float32
below 1e-38 at C / reg > 87) and classic Sinkhorn divides by zero. We keep the dual
potentials in the log domain and only ever exponentiate cost minus potentials, i.e. a
current estimate of the plan, whose entries are small only where the plan is ("log-
stabilised" Sinkhorn with absorption, Schmitzer 2019); see `_iterate` for why this and
not logsumexp at every step (ten times faster; in exact arithmetic the same iterates).
It is exact for any reg > 0, and float32 is enough.

Throughput, in the order it matters (`benchmarks/ot_bench.py` compares with POT):
- Newton: Sinkhorn converges linearly, and slowly at small reg (thousands of iterations
  at reg = 0.05 on cosine costs). Once every problem's marginal error is below
  _NEWTON_BELOW, each iteration adds a damped Newton step on the dual (`_newton_step`),
  which converges quadratically: tens of iterations in all.
- Cache: the iterations are memory-bound, so a batch is solved in chunks whose kernels
  fit in a few MB of cache (_CACHE_BYTES), and the solver reuses buffers rather than
  allocate kernel-sized tensors per step (fresh pages cost as much as the arithmetic).
- Retirement: converged problems leave the batch, so a batch costs the sum of its
  problems' iterations, not its slowest problem's times B.
`pairwise_ot_distances` and `candidate_ot_distances` solve all N x M pairs, or each
row's top-k candidates, in blocks that fit a memory budget.

Conventions match POT: the plan P* solves min_P <P, C> + reg * sum P log P subject to
P 1 = a and P^T 1 = b; `distance` is <P*, C> without the entropy term (what
`ot.sinkhorn2(a, b, C, reg)` returns) and `objective` adds it back (POT's
`ot.batch.solve_batch(...).value`).

Gradients (`grad=`):
- "envelope" (default): the iterations run without autograd and the plan is a constant.
  d objective / d C = P* is then exact at convergence (envelope theorem: the plan is
  optimal, so its own change does not move the objective to first order). For
  `distance` = objective - reg * sum P* log P*, the same P* drops the change of the
  plan's entropy term (small when reg is; differentiate `objective`, or use "autodiff",
  when it matters). Memory and time do not depend on the number of iterations. Token
  weights get no gradient.
- "autodiff": backpropagate through every iteration: the exact gradient of the numbers
  returned (including with respect to token weights). The iterations share one kernel,
  so the graph holds O(iterations x B x (P + T)) numbers plus a few B x P x T tensors
  per kernel rebuild.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Grad = Literal["envelope", "autodiff"]

#: B x P x T tensors of an all-pairs block alive at once (similarities, costs, plans kept
#: for backward); sizes the blocks. The solver's other copies are per cache-sized chunk
#: (_CACHE_BYTES), a few MB ("autodiff" keeps more: see the module docstring).
_WORKING_COPIES = 3
#: Scalings beyond [_MIN_SCALING, 1 / _MIN_SCALING] are absorbed into the log-potentials.
_MIN_SCALING = math.exp(-20.0)
#: Iterations between convergence and health checks (each check synchronises, as in POT).
_CHECK_EVERY = 10
#: Converged problems leave the batch once they are 1 / _RETIRE_FRACTION of it: repacking
#: copies the kernels, so it is not worth it for a few.
_RETIRE_FRACTION = 8
#: Bytes of one kernel copy per solver chunk, so that a chunk's kernel and its transpose
#: stay in cache (`ot_bench.py --cache-mb`: 4 MB was best on a 32 MB-L3 CPU).
_CACHE_BYTES = 4 * 2**20
#: Once every live problem's marginal error is below this, each iteration adds a Newton
#: step (see `_newton_step`); 0 turns Newton off (`ot_bench.py --sinkhorn-only`).
_NEWTON_BELOW = 3e-2
#: Newton step lengths tried, longest first, until the marginal error goes down.
_NEWTON_STEPS = (1.0, 0.5, 0.25)


@dataclass(frozen=True)
class SinkhornResult:
    """Solutions of a batch of B entropic OT problems."""

    distance: Tensor  # (B,) <P*, C>, the transport cost without the entropy term
    objective: Tensor  # (B,) <P*, C> + reg * sum P* log P*, the entropic OT value
    marginal_error: Tensor  # (B,) L1 violation of the row marginal (columns are exact)
    n_iters: int  # iterations of the slowest problem (one with a Newton step counts as one)
    converged: bool  # every problem reached marginal_error <= tol within max_iter
    plan: Tensor | None = None  # (B, P, T) when return_plan=True; zero on padding


def cosine_cost(x: Tensor, y: Tensor) -> Tensor:
    """Cost 1 - cos(x_i, y_j) between token sets x (..., P, D) and y (..., T, D) -> (..., P, T)."""
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"token feature sizes differ: {x.shape[-1]} vs {y.shape[-1]}")
    return 1 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(-1, -2)


def sinkhorn(
    cost: Tensor,
    reg: float,
    *,
    row_mask: Tensor | None = None,
    col_mask: Tensor | None = None,
    row_weights: Tensor | None = None,
    col_weights: Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    grad: Grad = "envelope",
    return_plan: bool = False,
) -> SinkhornResult:
    """Solve B entropic OT problems given their (B, P, T) costs.

    Masks (B, P) / (B, T) are True on real tokens; padded tokens carry no mass. Weights
    (same shapes, >= 0) are the marginals, renormalised over each problem's real tokens;
    None means uniform. Iteration stops once the L1 error of the row marginal of every
    problem is <= tol (after a column update the column marginals are exact), or after
    max_iter iterations; `converged` says which happened.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be (B, P, T), got shape {tuple(cost.shape)}")
    if reg <= 0 or tol <= 0 or max_iter < 1:
        raise ValueError(f"need reg > 0, tol > 0, max_iter >= 1; got {reg}, {tol}, {max_iter}")
    if grad not in ("envelope", "autodiff"):
        raise ValueError(f"grad must be 'envelope' or 'autodiff', got {grad!r}")
    batch, rows, cols = cost.shape
    log_a = _log_marginal(row_weights, row_mask, (batch, rows), cost, "row")
    log_b = _log_marginal(col_weights, col_mask, (batch, cols), cost, "col")
    if grad == "envelope":
        if any(w is not None and w.requires_grad for w in (row_weights, col_weights)):
            raise ValueError("grad='envelope' treats token weights as constants; "
                             "use grad='autodiff' to differentiate through them")
        log_a, log_b = log_a.detach(), log_b.detach()
    # Solve in chunks whose kernels stay in cache: the iterations are memory-bound, and
    # one pass over a kernel in cache is several times faster than one from memory.
    chunk = max(1, _CACHE_BYTES // (rows * cols * cost.element_size()))
    parts = [_solve(cost[i:i + chunk], log_a[i:i + chunk], log_b[i:i + chunk], reg,
                    tol, max_iter, grad, return_plan) for i in range(0, batch, chunk)]
    if len(parts) == 1:
        return parts[0]
    error = torch.cat([part.marginal_error for part in parts])
    return SinkhornResult(torch.cat([part.distance for part in parts]),
                          torch.cat([part.objective for part in parts]), error,
                          max(part.n_iters for part in parts), bool((error <= tol).all()),
                          torch.cat([part.plan for part in parts]) if return_plan else None)


def _solve(cost: Tensor, log_a: Tensor, log_b: Tensor, reg: float, tol: float,
           max_iter: int, grad: Grad, return_plan: bool) -> SinkhornResult:
    """`sinkhorn` on one chunk, given the log-marginals (-inf on padding)."""
    padded = not (bool(torch.isfinite(log_a).all()) and bool(torch.isfinite(log_b).all()))
    if padded:  # costs on padding never matter, even inf or NaN ones
        real = torch.isfinite(log_a)[:, :, None] & torch.isfinite(log_b)[:, None, :]
        cost = torch.where(real, cost, 0.0)

    log_k = cost * (-1 / reg) if grad == "autodiff" else cost.detach() * (-1 / reg)
    with torch.set_grad_enabled(grad == "autodiff" and torch.is_grad_enabled()):
        u, v, n_iters, error = _iterate(log_k, log_a, log_b, tol, max_iter)
        plan = (log_k + u[:, :, None]).add_(v[:, None, :]).exp_()
        # sum P log P = sum P (log_k + u + v) = -<P, C> / reg + <u, P 1> + <v, P^T 1>,
        # without another pass over the plans; u, v are -inf on padding, where P is 0.
        potentials = (torch.where(torch.isfinite(u), u, 0.0) * plan.sum(2)).sum(1) + (
            torch.where(torch.isfinite(v), v, 0.0) * plan.sum(1)).sum(1)
    # <P, C> as a batched dot product, without a (B, P, T) temporary.
    distance = torch.bmm(plan.flatten(1)[:, None], cost.flatten(1)[:, :, None])[:, 0, 0]
    objective = reg * potentials + (distance - distance.detach() if grad == "envelope" else 0)
    return SinkhornResult(distance, objective, error, n_iters, bool((error <= tol).all()),
                          plan if return_plan else None)


def pairwise_ot_distances(
    x: Tensor,
    y: Tensor,
    reg: float,
    *,
    x_mask: Tensor | None = None,
    y_mask: Tensor | None = None,
    x_weights: Tensor | None = None,
    y_weights: Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    grad: Grad = "envelope",
    chunk_pairs: int | None = None,
    memory_budget: int = 256 * 2**20,
) -> Tensor:
    """OT distances under the cosine cost between every set of x (N, P, D) and every set
    of y (M, T, D) -> (N, M).

    Masks (N, P) / (M, T) mark real tokens, weights give the marginals (see `sinkhorn`).
    The N x M x P x T costs are never built at once: blocks of at most `chunk_pairs`
    pairs (default: as many as fit in `memory_budget` bytes of solver working memory)
    are solved one after the other. Each block iterates until all its problems meet
    `tol`, so results agree with a single batch to within the tolerance. Gradients flow
    to x and y as set by `grad` (see the module docstring).
    """
    return _blockwise(x, y, None, reg, x_mask, y_mask, x_weights, y_weights,
                      tol, max_iter, grad, chunk_pairs, memory_budget)


def candidate_ot_distances(
    x: Tensor,
    y: Tensor,
    candidates: Tensor,
    reg: float,
    *,
    x_mask: Tensor | None = None,
    y_mask: Tensor | None = None,
    x_weights: Tensor | None = None,
    y_weights: Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    grad: Grad = "envelope",
    chunk_pairs: int | None = None,
    memory_budget: int = 256 * 2**20,
) -> Tensor:
    """OT distances between each set x[n] and its own candidates y[candidates[n, j]]
    -> (N, k), for re-ranking a top-k shortlist without solving all N x M pairs.

    `candidates` is an (N, k) integer tensor of row indices into y; everything else is
    as in `pairwise_ot_distances`.
    """
    return _blockwise(x, y, candidates, reg, x_mask, y_mask, x_weights, y_weights,
                      tol, max_iter, grad, chunk_pairs, memory_budget)


def _blockwise(x: Tensor, y: Tensor, candidates: Tensor | None, reg: float,
               x_mask: Tensor | None, y_mask: Tensor | None,
               x_weights: Tensor | None, y_weights: Tensor | None,
               tol: float, max_iter: int, grad: Grad,
               chunk_pairs: int | None, memory_budget: int) -> Tensor:
    """Solve an N x K grid of pairs in blocks; column j of row n is y[j] when candidates
    is None (all pairs, K = M), else y[candidates[n, j]]."""
    _check_sets(x, y, x_mask, y_mask, x_weights, y_weights, candidates)
    (n_x, p, _), (n_y, t, d) = x.shape, y.shape
    width = n_y if candidates is None else candidates.shape[1]
    if chunk_pairs is None:
        gathered = 0 if candidates is None else 2 * t * d  # candidate tokens, normalised copy
        chunk_pairs = memory_budget // (x.element_size() * (_WORKING_COPIES * p * t + gathered))
    block_cols = max(1, min(width, chunk_pairs))
    block_rows = max(1, chunk_pairs // block_cols)
    x = F.normalize(x, dim=-1)
    if candidates is None:  # else only the gathered candidates are (a pool can be large)
        y = F.normalize(y, dim=-1)

    def rows_of(values: Tensor | None, i: slice, m: int) -> Tensor | None:
        return None if values is None else values[i, None].expand(-1, m, -1).flatten(0, 1)

    def cols_of(values: Tensor | None, index: Tensor) -> Tensor | None:
        return None if values is None else values[index].flatten(0, 1)

    rows_out = []
    for i0 in range(0, n_x, block_rows):
        i = slice(i0, i0 + block_rows)
        n = x[i].shape[0]
        blocks = []
        for j0 in range(0, width, block_cols):
            j1 = min(j0 + block_cols, width)
            if candidates is None:
                index = torch.arange(j0, j1, device=y.device).expand(n, -1)
                similarity = torch.einsum("npd,mtd->nmpt", x[i], y[j0:j1])
            else:
                index = candidates[i, j0:j1]
                similarity = torch.einsum("npd,nmtd->nmpt", x[i], F.normalize(y[index], dim=-1))
            m = j1 - j0
            result = sinkhorn((1 - similarity).flatten(0, 1), reg,
                              row_mask=rows_of(x_mask, i, m), col_mask=cols_of(y_mask, index),
                              row_weights=rows_of(x_weights, i, m),
                              col_weights=cols_of(y_weights, index),
                              tol=tol, max_iter=max_iter, grad=grad)
            blocks.append(result.distance.view(n, m))
        rows_out.append(torch.cat(blocks, 1))
    return torch.cat(rows_out, 0)


def _check_sets(x: Tensor, y: Tensor, x_mask: Tensor | None, y_mask: Tensor | None,
                x_weights: Tensor | None, y_weights: Tensor | None,
                candidates: Tensor | None) -> None:
    """Name the argument whose shape is wrong before any block is solved."""
    if x.dim() != 3 or y.dim() != 3 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must be token sets (N, P, D) and (M, T, D) with one D, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    for name, values, tokens in (("x_mask", x_mask, x), ("x_weights", x_weights, x),
                                 ("y_mask", y_mask, y), ("y_weights", y_weights, y)):
        if values is not None and values.shape != tokens.shape[:2]:
            raise ValueError(f"{name} must have shape {tuple(tokens.shape[:2])}, "
                             f"got {tuple(values.shape)}")
    if candidates is None:
        return
    if candidates.dim() != 2 or len(candidates) != len(x) or candidates.is_floating_point():
        raise ValueError(f"candidates must be an integer tensor (N={len(x)}, k), "
                         f"got {candidates.dtype} {tuple(candidates.shape)}")
    low, high = (int(candidates.min()), int(candidates.max())) if candidates.numel() else (0, 0)
    if low < 0 or high >= len(y):
        raise ValueError(f"candidates must index y's {len(y)} sets, got values in [{low}, {high}]")


@dataclass
class _Live:
    """The problems of a batch still being iterated, and their solver state. Row-side
    vectors are (n, 1, P) and column-side ones (n, 1, T): the shapes bmm takes and gives,
    which keeps the inner loop free of reshapes (they cost as much as the products)."""

    index: Tensor  # (n,) positions in the batch
    a: Tensor  # marginals, 0 on padding
    b: Tensor
    u: Tensor  # log-potentials absorbed into the kernel, -inf on padding
    v: Tensor
    kernel: Tensor | None = None  # exp(log_k + u + v); 1 on padding, where scalings are 0
    kernel_t: Tensor | None = None  # its transpose, contiguous so row products are fast bmm
    alpha: Tensor | None = None  # row scaling: the plan is diag(alpha) kernel diag(beta)
    checked: Tensor | None = None  # alpha at the last healthy check, to roll back to
    checked_iters: int = 0
    scratch: Tensor | None = None  # Newton's kernel-sized workspace; `select` keeps it whole

    def select(self, keep: Tensor) -> _Live:
        return _Live(**{f.name: value[keep] if isinstance(value, Tensor) and f.name != "scratch"
                        else value
                        for f in fields(self) if (value := getattr(self, f.name)) is not None})

    def workspace(self) -> Tensor:
        """A kernel-sized buffer, reused across Newton steps: a fresh one per step costs
        page faults comparable to the step's arithmetic."""
        if self.scratch is None or len(self.scratch) < len(self.kernel):
            self.scratch = torch.empty_like(self.kernel)
        return self.scratch[:len(self.kernel)]

    def rebuild_kernel(self, log_k: Tensor, n_iters: int) -> None:
        if len(self.index) < len(log_k):  # index is sorted, so equal length means all
            log_k = log_k[self.index]
        log_plan = log_k + self.u.mT
        log_plan += self.v
        self.kernel = log_plan.exp_()
        if not (bool((self.a > 0).all()) and bool((self.b > 0).all())):
            self.kernel = torch.where((self.a > 0).mT & (self.b > 0), self.kernel, 1.0)
        self.kernel_t = self.kernel.mT.contiguous()
        self.alpha = self.checked = (self.a > 0).to(self.a.dtype)
        self.checked_iters = n_iters


def _iterate(log_k: Tensor, log_a: Tensor, log_b: Tensor, tol: float, max_iter: int
             ) -> tuple[Tensor, Tensor, int, Tensor]:
    """Log-stabilised Sinkhorn (Schmitzer 2019, "absorption"): returns log-potentials
    u (B, P) and v (B, T) such that exp(log_k + u + v) is each problem's plan, the number
    of iterations of the slowest problem, and each plan's row-marginal error.

    A logsumexp step costs an exp per matrix entry; a batched matrix-vector product is
    ten times cheaper. So we run the classic multiplicative updates on the kernel
    exp(log_k + u + v), where the log-potentials (u, v) keep it a recent plan (no
    underflow where mass is). Until the Newton phase, the iterates are those of
    log-domain Sinkhorn from u = 0, as in POT; the initial v only shifts each kernel
    column to a maximum of its marginal. Once every live problem's error is below
    _NEWTON_BELOW, every iteration is checked and then followed by `_newton_step`.
    At each check (every _CHECK_EVERY iterations before that): converged problems leave
    the batch; scalings outside [_MIN_SCALING, 1 / _MIN_SCALING] are absorbed into
    (u, v) and the kernel rebuilt; if kernel underflow made a scaling 0, inf or NaN (say,
    a row of costs far above the others at a small reg), the iterations since the last
    check are dropped and an exact log-domain iteration restarts from there.
    """
    log_a, log_b = log_a[:, None, :], log_b[:, None, :]
    u_out, v_out = torch.empty_like(log_a), torch.empty_like(log_b)
    error_out = torch.empty(len(log_k), dtype=log_k.dtype, device=log_k.device)
    u = torch.where(torch.isfinite(log_a), 0.0, log_a)
    v = log_b - (log_k if bool(torch.isfinite(u).all()) else log_k + u.mT).amax(1, keepdim=True)
    live = _Live(torch.arange(len(log_k), device=log_k.device), log_a.exp(), log_b.exp(), u, v)

    def retire(done: Tensor, u: Tensor, v: Tensor, error: Tensor) -> bool:
        index = live.index[done]
        u_out[index], v_out[index], error_out[index] = u[done], v[done], error[done]
        return bool(done.all())

    def result() -> tuple[Tensor, Tensor, int, Tensor]:
        return u_out[:, 0], v_out[:, 0], n_iters, error_out

    n_iters, newton = 0, False
    while True:
        live.rebuild_kernel(log_k, n_iters)
        while True:
            beta = live.b / torch.bmm(live.alpha, live.kernel)
            row_sums = torch.bmm(beta, live.kernel_t)
            alpha_next = live.a / row_sums
            n_iters += 1
            if not newton and n_iters % _CHECK_EVERY and n_iters < max_iter:
                live.alpha = alpha_next
                continue
            with torch.no_grad():
                low, high = _scaling_range((beta, live.b), (alpha_next, live.a))
                error = (live.alpha * row_sums - live.a).abs().sum((1, 2))
            if not 0 < low <= high < math.inf:  # kernel underflow, or NaN
                live.u = _absorb(live.u, live.checked, live.a)
                n_iters = live.checked_iters
                break
            done = (error <= tol) | (n_iters >= max_iter)
            in_range = _MIN_SCALING < low and high < 1 / _MIN_SCALING
            newton = newton or float(error.max()) < _NEWTON_BELOW
            if in_range and int(done.sum()) * _RETIRE_FRACTION < len(done):
                live.alpha = live.checked = alpha_next  # too few done to repack the batch
                live.checked_iters = n_iters
                if newton:
                    live.alpha = _newton_step(live, beta, alpha_next)
                continue
            v = _absorb(live.v, beta, live.b)
            if retire(done, _absorb(live.u, live.alpha, live.a), v, error):
                return result()
            if in_range:
                live = replace(live, alpha=alpha_next, checked=alpha_next,
                               checked_iters=n_iters).select(~done)
                if newton:
                    live.alpha = _newton_step(live, beta[~done], live.alpha)
            else:
                live = replace(live, u=_absorb(live.u, alpha_next, live.a), v=v).select(~done)
                live.rebuild_kernel(log_k, n_iters)
        # Recovery: an exact log-domain iteration from the last healthy state.
        v, u_next, error = _log_iteration(log_k[live.index], log_a[live.index],
                                          log_b[live.index], live.u)
        n_iters += 1
        done = (error <= tol) | (n_iters >= max_iter)
        if retire(done, live.u, v, error):
            return result()
        live = replace(live, u=u_next, v=v).select(~done)


def _newton_step(live: _Live, beta: Tensor, alpha: Tensor) -> Tensor:
    """A damped Newton step on the column potentials from the plan diag(alpha) K diag(beta),
    whose rows are exact; returns the row scaling that makes the moved plan's rows exact.

    Sinkhorn is coordinate ascent on the dual and converges linearly, slowly when reg is
    small (thousands of iterations at reg = 0.05 on cosine costs). Newton's method on the
    semi-dual in the column potentials (Brauer et al. 2017, "A Sinkhorn-Newton method for
    entropic optimal transport") converges quadratically near the optimum: with rows
    exact, the gradient is b - c (c the column sums) and the Hessian is
    H = diag(c) - Pi^T diag(1 / a) Pi, a T x T system per problem, solved batched by
    Cholesky. H is singular along the constant vector (shifting all column potentials
    changes nothing once rows are re-fitted), which the gradient is orthogonal to, so we
    solve with H + 1 1^T / T^2 instead: same solution, positive definite (padded columns
    get a unit diagonal and a zero gradient, so they never move). The step is
    the longest of _NEWTON_STEPS that lowers the column marginal error, or none (the
    problem then just takes the plain Sinkhorn iteration); a problem whose H is not
    numerically positive definite (float32 on a plan with near-empty columns) also falls
    back to Sinkhorn for this iteration.
    """
    a, b = live.a, live.b  # (n, 1, P), (n, 1, T)
    real_cols = (b > 0).to(b.dtype)
    cols = beta * torch.bmm(alpha, live.kernel)
    error = (cols - b).abs().sum((1, 2))
    # Pi^T diag(1 / a) Pi = diag(beta) (K^T diag(alpha^2 / a) K) diag(beta): one pass
    # over the kernels, then (n, T, T) work only.
    root = (alpha / torch.where(a > 0, a, 1.0).sqrt()).mT  # (n, P, 1), 0 on padding
    scaled = (live.kernel * root if live.kernel.requires_grad or root.requires_grad
              else torch.mul(live.kernel, root, out=live.workspace()))  # out= has no autograd
    # In place: fresh (n, T, T) tensors cost page faults comparable to the arithmetic.
    hessian = torch.bmm(scaled.mT, scaled).mul_(beta.mT).mul_(-beta)
    hessian.diagonal(dim1=1, dim2=2).add_((cols + 1 - real_cols)[:, 0])
    hessian.addcmul_(real_cols.mT, real_cols / real_cols.sum((1, 2), keepdim=True)**2)
    factor, info = torch.linalg.cholesky_ex(hessian)
    step = torch.where((info == 0)[:, None, None],
                       torch.cholesky_solve((b - cols).mT, factor).mT, 0.0)
    accepted = torch.zeros_like(error, dtype=torch.bool)
    new_alpha = alpha
    for length in _NEWTON_STEPS:
        trial_beta = beta * (length * step).exp()
        trial_alpha = a / torch.bmm(trial_beta, live.kernel_t)
        trial_error = (trial_beta * torch.bmm(trial_alpha, live.kernel) - b).abs().sum((1, 2))
        take = ~accepted & (trial_error < error)
        new_alpha = torch.where(take[:, None, None], trial_alpha, new_alpha)
        accepted |= take
        if bool(accepted.all()):
            break
    return new_alpha


def _log_iteration(log_k: Tensor, log_a: Tensor, log_b: Tensor, u: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """One exact iteration from row potentials u: new column potentials v, the next row
    potentials, and the row-marginal error of the plan (u, v)."""
    v = log_b - torch.logsumexp(log_k + u.mT, dim=1, keepdim=True)
    log_row_sums = torch.logsumexp(log_k + v, dim=2)[:, None, :]  # of exp(log_k + v)
    with torch.no_grad():
        row_sums = torch.where(torch.isfinite(log_a), (u + log_row_sums).exp(), 0.0)
        error = (row_sums - log_a.exp()).abs().sum((1, 2))
    return v, log_a - log_row_sums, error


def _scaling_range(*scalings: tuple[Tensor, Tensor]) -> tuple[float, float]:
    """Smallest and largest of the (scaling, marginal) scalings on real tokens
    (marginal > 0); NaN if any is NaN."""
    values = torch.cat([torch.where(target > 0, s, 1.0).flatten() for s, target in scalings])
    low, high = values.aminmax()
    return low.item(), high.item()


def _absorb(potential: Tensor, scaling: Tensor, target: Tensor) -> Tensor:
    """Fold a scaling into a log-potential; padding (target 0) stays -inf."""
    return potential + torch.where(target > 0, scaling, 1.0).log()


def _log_marginal(weights: Tensor | None, mask: Tensor | None, shape: tuple[int, int],
                  like: Tensor, side: str) -> Tensor:
    """log of the weights renormalised over real tokens; -inf on padding."""
    for name, t in ((f"{side}_mask", mask), (f"{side}_weights", weights)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match the cost, "
                             f"got {tuple(t.shape)}")
    real = torch.ones(shape, dtype=torch.bool, device=like.device) if mask is None else mask.bool()
    if weights is None:
        weights = real.to(like.dtype)
    elif bool((weights < 0).any()):
        raise ValueError(f"{side}_weights must be >= 0")
    mass = torch.where(real, weights.to(like.dtype), torch.zeros((), dtype=like.dtype))
    total = mass.sum(1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError(f"every problem needs a real {side} token with positive weight "
                         f"(check {side}_mask / {side}_weights)")
    # The where() keeps log(0) = -inf off the autograd path of real tokens.
    positive = mass > 0
    safe = torch.where(positive, mass / total, torch.ones((), dtype=like.dtype))
    return torch.where(positive, safe.log(), torch.full((), float("-inf"), dtype=like.dtype))
