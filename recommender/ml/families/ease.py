"""EASE (Steck 2019): a closed-form item-item regression, exact while it fits a memory budget.

``B = I − P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal; a user's scores are her
history row times B. Column i of B is the ridge regression of item i on every other item, which
is what lets the scalable variant below stay on the same scale as the exact one.

Budgets (see docs/ml.md, "EASE family"), not item counts:

* **Fit** (``memory_budget_bytes``, default 3.5 GiB = 4 GiB minus 512 MiB for the interpreter,
  the input matrices and allocator slack). The exact fit holds one dense n×n matrix, inverted in
  place: ``n²·s`` bytes (s = 8 for float64, 4 for float32) plus a workspace of
  ``min(n, 256)·n·32`` bytes (a block of rows and its top-N selection) plus the serving copy; the
  dual solver (fewer users u than items) adds ``u·n·s + u²·8``. float64 is used when it fits,
  else float32, else the scalable variant.
* **Serving** (``serving_budget_bytes``, default 256 MiB). B is kept dense (float32, ``n²·4``
  bytes) when that fits, else as a csr of each row's N largest-magnitude entries with
  ``N = budget // (n·8)`` (a float32 value and an int32 column per entry), clipped to [1, n−1].

Scalable variant ("head exact, tail ridge"): exact EASE on the m most-interacted items, m the
largest that fits the fit budget; each remaining (tail) item's column is the ridge regression of
that item on its ``tail_neighbours`` most co-occurring items (head or tail), solved on their own
small Gram matrix with the same λ. Head columns ignore tail regressors; tail items still score,
on the same scale, so nothing steps when a catalogue grows past the budget by a few items.

No Django here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from recommender.ml import dense_linalg
from recommender.ml.dataset import IdMap, TrainingData
from recommender.ml.similarity import top_k

from .base import FamilyFitError, Progress

try:
    # Installed with scikit-learn and implicit; without it the tail solves merely run slower.
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None

LAMBDA_GRID = (50, 100, 200, 500, 1000)
"""λ values for a caller's search; 200 is the default (best P@10 on ml-100k, see docs/ml.md)."""

MIB = 2**20
DEFAULT_L2 = 200.0
DEFAULT_MEMORY_BUDGET_BYTES = 4 * 1024 * MIB - 512 * MIB
DEFAULT_SERVING_BUDGET_BYTES = 256 * MIB
DEFAULT_TAIL_NEIGHBOURS = 128
# "rated": every training interaction, vetoed pairs (low ratings) included, as binary: on explicit
# feedback "she rated it at all" is evidence the positives alone lack.
INPUTS = ("binary", "weights", "rated")
SERVING_LAYOUTS = ("auto", "dense", "sparse")
SOLVERS = ("auto", "primal", "dual")
BLOCK_ROWS = 256
WORKSPACE_BYTES_PER_CELL = 32  # a block row's gram product, |values|, argpartition indices (int64)
SPARSE_ENTRY_BYTES = 8  # float32 value + int32 column
TAIL_ENTRY_BYTES = 24  # a tail coefficient as COO (float32 + 2 × int64) before the merge
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EaseParams:
    """Validated hyperparameters; ``from_dict`` raises :class:`FamilyFitError` with a hint."""

    l2: float = DEFAULT_L2
    input: str = "binary"
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    serving_budget_bytes: int = DEFAULT_SERVING_BUDGET_BYTES
    serving: str = "auto"
    solver: str = "auto"
    tail_neighbours: int = DEFAULT_TAIL_NEIGHBOURS
    # Caps the exact head below what the budget allows, to measure the scalable variant (bench,
    # tests); None in production, where the budget alone decides.
    exact_items_cap: int | None = None
    # Time budget of one fit in seconds (None: no limit, the memory budget alone decides). The head
    # gets the largest m whose inversion the measured flop rate of this machine finishes in half
    # of it; the tail is solved in popularity order until the rest runs out, and the least
    # popular tail items left get no column (other families still score them). See docs/ml.md.
    fit_seconds: float | None = None

    @classmethod
    def from_dict(cls, params: dict) -> EaseParams:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise FamilyFitError(f"unknown EASE parameter(s) {unknown}; known: {sorted(known)}.")
        values = cls(**params)
        checks = (
            (
                math.isfinite(float(values.l2)) and values.l2 > 0,
                f"l2 must be a finite number > 0, e.g. one of {LAMBDA_GRID}",
            ),
            (values.input in INPUTS, f"input must be one of {INPUTS}"),
            (values.serving in SERVING_LAYOUTS, f"serving must be one of {SERVING_LAYOUTS}"),
            (values.solver in SOLVERS, f"solver must be one of {SOLVERS}"),
            (int(values.memory_budget_bytes) > 0, "memory_budget_bytes must be > 0 (default 3.5 GiB)"),
            (int(values.serving_budget_bytes) > 0, "serving_budget_bytes must be > 0 (default 256 MiB)"),
            (int(values.tail_neighbours) >= 1, "tail_neighbours must be >= 1 (default 128)"),
            (
                values.exact_items_cap is None or int(values.exact_items_cap) >= 0,
                "exact_items_cap must be >= 0 or None",
            ),
            (
                values.fit_seconds is None or (math.isfinite(float(values.fit_seconds)) and values.fit_seconds > 0),
                "fit_seconds must be a number of seconds > 0 or None",
            ),
        )
        for ok, hint in checks:
            if not ok:
                raise FamilyFitError(f"bad EASE parameters {params}: {hint}.")
        return values


@dataclass(frozen=True)
class FitPlan:
    """What a fit will do and the bytes it predicts, derived from the shape and the budgets."""

    variant: str  # "exact" or "scalable"
    dtype: str  # "float64" or "float32", of the dense head matrix
    solver: str  # "primal" (n×n Cholesky) or "dual" (Woodbury through the u×u user Gram)
    exact_items: int  # m: items in the exact head (all of them when exact)
    serving_layout: str  # "dense" or "sparse"
    serving_neighbours: int  # entries kept per row of B (n − 1 when dense)
    predicted_peak_bytes: int
    tail_regressors: int = 0  # regressors of each tail column (`tail_regressors`), 0 when exact


def tail_regressors(n: int, params: EaseParams) -> int:
    """Regressors of each tail column: ``tail_neighbours``, or fewer once the tail would pass half the serving budget.

    ``min(tail_neighbours, serving_budget // (2·n·8))``, at least 1: the tail columns and the head
    rows share the serving copy, so with many items each tail column gets fewer entries rather than
    the head rows none (and the fit's COO workspace, 32 bytes an entry, shrinks with it). It moves
    smoothly with n; with the default 256 MiB it is the full 128 up to ~131k items.
    """
    by_budget = params.serving_budget_bytes // max(2 * n * SPARSE_ENTRY_BYTES, 1)
    return int(max(1, min(params.tail_neighbours, by_budget, n - 1)))


def tail_block_rows(n: int, params: EaseParams) -> int:
    """Tail items whose co-occurrence rows are computed at once: ``BLOCK_ROWS``, or fewer so that the
    block's bound (``rows·n·12`` bytes, as if every row were dense) stays within an eighth of the fit budget."""
    return int(np.clip(params.memory_budget_bytes // 8 // max(n * 12, 1), 1, BLOCK_ROWS))


def serving_plan(n: int, m: int, params: EaseParams) -> tuple[str, int, int]:
    """(layout, neighbours per head row, bytes) of the serving copy of B for ``n`` items, ``m`` exact.

    Dense: ``n²·4`` bytes. Sparse: the tail columns (``(n − m)·c`` entries) plus each of the m
    head rows' N largest-magnitude entries, 8 bytes an entry, N from what the tail leaves of the
    budget, clipped to [1, m − 1].
    """
    dense_bytes = n * n * 4
    if params.serving == "dense" or (params.serving == "auto" and dense_bytes <= params.serving_budget_bytes):
        return "dense", max(n - 1, 0), dense_bytes
    tail_bytes = (n - m) * tail_regressors(n, params) * SPARSE_ENTRY_BYTES
    if m < 2:
        return "sparse", 0, tail_bytes
    left = params.serving_budget_bytes - tail_bytes
    neighbours = int(np.clip(left // (m * SPARSE_ENTRY_BYTES), 1, m - 1))
    return "sparse", neighbours, m * neighbours * SPARSE_ENTRY_BYTES + tail_bytes


def _workspace_bytes(n: int) -> int:
    return min(n, BLOCK_ROWS) * n * WORKSPACE_BYTES_PER_CELL


def _solver_for(n: int, n_users: int, params: EaseParams) -> str:
    if params.solver != "auto":
        return params.solver
    # Flops: primal ≈ n³ (Cholesky + inverse); dual ≈ u³/3 + u²·n (triangular solve) + u·n² (YᵀY).
    return "dual" if n_users**3 / 3 + n_users**2 * n + n_users * n * n < n**3 else "primal"


def _head_bytes(m: int, itemsize: int, n_users: int, solver: str) -> int:
    """The dense m×m matrix, its block workspace and, for the dual solver, Y (u×m) and the u×u Gram."""
    dual = n_users * m * itemsize + n_users * n_users * 8 if solver == "dual" else 0
    return m * m * itemsize + _workspace_bytes(m) + dual


def exact_peak_bytes(n: int, itemsize: int, n_users: int, params: EaseParams) -> int:
    """Predicted fit peak of exact EASE on ``n`` items, beyond the input matrices.

    ``n²·s + min(n, 256)·n·32 (+ u·n·s + u²·8 dual) + serving``, where a dense float32 serving
    copy is the inverted matrix itself (B is computed in place) and costs nothing extra.
    """
    layout, _, serving_bytes = serving_plan(n, n, params)
    if layout == "dense" and itemsize == 4:
        serving_bytes = 0
    return _head_bytes(n, itemsize, n_users, _solver_for(n, n_users, params)) + serving_bytes


def scalable_peak_bytes(n: int, m: int, n_users: int, params: EaseParams) -> int:
    """Predicted fit peak of the scalable variant: a float32 head of ``m`` items, then the tail columns.

    The tail is solved first (a block of sparse Gram rows, ``min(t, 256)·n·12`` bytes, and its
    coefficients, ``t·c·28`` as COO then csr), then the head while the tail csr (``t·c·8``) is
    kept; the serving copy is built during the head phase.
    """
    t, c = n - m, tail_regressors(n, params)
    tail_phase = min(t, tail_block_rows(n, params)) * n * 12 + t * c * (TAIL_ENTRY_BYTES + SPARSE_ENTRY_BYTES)
    return max(tail_phase + serving_plan(n, m, params)[2], _scalable_head_phase_bytes(n, m, n_users, params))


def _scalable_head_phase_bytes(n: int, m: int, n_users: int, params: EaseParams) -> int:
    head = _head_bytes(m, 4, n_users, _solver_for(m, n_users, params)) if m else 0
    return head + (n - m) * tail_regressors(n, params) * 8 + serving_plan(n, m, params)[2]


def fit_plan(n_items: int, n_users: int, params: EaseParams) -> FitPlan:
    """Exact float64 if it fits the budget, else exact float32, else the scalable variant's largest head.

    Raises
    ------
    FamilyFitError
        When even a head of zero items (tail regressions only) exceeds ``memory_budget_bytes``,
        or ``serving="dense"`` exceeds ``serving_budget_bytes``.
    """
    layout, neighbours, serving_bytes = serving_plan(n_items, n_items, params)
    if layout == "dense" and serving_bytes > params.serving_budget_bytes:
        raise FamilyFitError(
            f"serving='dense' needs {serving_bytes:,} bytes for {n_items} items but serving_budget_bytes is "
            f"{params.serving_budget_bytes:,}; raise the budget or use serving='auto'."
        )
    solver = _solver_for(n_items, n_users, params)
    capped = params.exact_items_cap is not None and params.exact_items_cap < n_items
    for dtype, itemsize in (("float64", 8), ("float32", 4)):
        peak = exact_peak_bytes(n_items, itemsize, n_users, params)
        if peak <= params.memory_budget_bytes and not capped:
            return FitPlan("exact", dtype, solver, n_items, layout, neighbours, peak)
    # The head phase grows with m and the tail phase shrinks, so the largest m whose head phase
    # fits is the answer when its tail phase fits too, and nothing fits otherwise.
    low, high = 0, n_items - 1
    while low < high:
        middle = (low + high + 1) // 2
        if _scalable_head_phase_bytes(n_items, middle, n_users, params) <= params.memory_budget_bytes:
            low = middle
        else:
            high = middle - 1
    if params.exact_items_cap is not None:
        low = min(low, params.exact_items_cap)
    if scalable_peak_bytes(n_items, low, n_users, params) > params.memory_budget_bytes:
        raise FamilyFitError(
            f"memory_budget_bytes={params.memory_budget_bytes:,} cannot hold the scalable variant of {n_items} "
            f"items (at least {scalable_peak_bytes(n_items, low, n_users, params):,} bytes); raise the budget "
            "or lower serving_budget_bytes / tail_neighbours."
        )
    _, neighbours, _ = serving_plan(n_items, low, params)
    peak = scalable_peak_bytes(n_items, low, n_users, params)
    solver = _solver_for(low, n_users, params)
    return FitPlan("scalable", "float32", solver, low, layout, neighbours, peak, tail_regressors(n_items, params))


def head_flops(m: int, n_users: int) -> float:
    """Floating-point operations of inverting an m-item head with the solver `_solver_for` picks."""
    return float(min(m**3, n_users**3 / 3 + n_users**2 * m + n_users * m * m))


def measured_flop_rate(size: int = 1024) -> float:
    """This machine's rate for the head's inversion (flops/s), from one inverse of ``size`` now.

    Measured at fit time, on the same BLAS and under the same load the fit will see (about a
    second on 2 busy cores, where it read 1.2-3 GFlop/s; larger heads run somewhat faster per flop,
    so the head it allows errs on the small side).
    """
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((size, size)).astype(np.float32)
    matrix = sample @ sample.T + size * np.eye(size, dtype=np.float32)
    started = time.perf_counter()
    dense_linalg.spd_inverse_lower_in_place(matrix)
    return size**3 / max(time.perf_counter() - started, 1e-6)


def head_items_within(seconds: float, n_users: int, flop_rate: float, n_items: int) -> int:
    """The largest head (at most ``n_items``) whose inversion takes ``seconds`` at ``flop_rate``."""
    low, high = 0, n_items
    while low < high:
        middle = (low + high + 1) // 2
        if head_flops(middle, n_users) <= seconds * flop_rate:
            low = middle
        else:
            high = middle - 1
    return low


def budget_for_exact_items(n_items: int, n_users: int, exact_items: int, params: EaseParams) -> int:
    """The smallest ``memory_budget_bytes`` whose plan has (at least) ``exact_items`` exact items."""
    if exact_items >= n_items:
        return exact_peak_bytes(n_items, 4, n_users, params)
    return scalable_peak_bytes(n_items, exact_items, n_users, params)


class _Steps:
    """Counts fit steps for ``progress(done, total, message)``."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, max(total, 1), 0

    def step(self, message: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total, message)


def _symmetrize_lower_in_place(matrix: np.ndarray) -> None:
    """Copy the valid lower triangle of a C-ordered square matrix onto its upper one, a block at a time."""
    n = len(matrix)
    for start in range(0, n, BLOCK_ROWS):
        end = min(start + BLOCK_ROWS, n)
        block = matrix[start:end, start:end]
        block[...] = np.tril(block) + np.tril(block, -1).T
        matrix[start:end, end:] = matrix[end:, start:end].T


def _factorised(routine, matrix: np.ndarray, name: str, l2: float) -> None:
    """Run a ``dense_linalg`` routine on ``matrix`` in place; a failed Cholesky is a fit error."""
    try:
        routine(matrix)
    except dense_linalg.NotPositiveDefinite as error:
        raise FamilyFitError(f"Cholesky of {name} failed ({error}); raise l2 (λ={l2}).") from error


def _precision_in_place(x: sp.csr_matrix, l2: float, dtype: str, solver: str, steps: _Steps) -> np.ndarray:
    """P = (XᵀX + λI)⁻¹, dense C-ordered (n, n) of ``dtype``, as the only n×n allocation.

    Primal: the Gram is filled a block of rows at a time, then inverted in place by a blocked
    Cholesky. Dual (Woodbury): P = (I − Yᵀ Y) / λ with Y = L⁻¹X and L Lᵀ = XXᵀ + λI, a u×u
    Cholesky and YᵀY written straight into P; far fewer flops when users are fewer than items.
    The factorisations are ``dense_linalg``'s, not LAPACK's on the whole matrix: see there why.
    """
    n = x.shape[1]
    matrix = np.empty((n, n), dtype=dtype)
    if solver == "dual":
        kernel = (x @ x.T).toarray().astype(np.float64)
        kernel[np.diag_indices_from(kernel)] += l2
        _factorised(dense_linalg.cholesky_lower_in_place, kernel, "XXᵀ + λI", l2)
        steps.step("user Gram factorised")
        factor = kernel.astype(dtype, copy=False)
        del kernel
        solved = np.asfortranarray(x.toarray(), dtype=dtype)
        dense_linalg.lower_solve_in_place(factor, solved)
        del factor
        steps.step("triangular solve done")
        dense_linalg.lower_gram_in_place(solved, -1.0 / l2, matrix)
        del solved
        matrix[np.diag_indices(n)] += 1.0 / l2
        steps.step("inverse assembled")
    else:
        transposed = sp.csr_matrix(x.T)
        for start in range(0, n, BLOCK_ROWS):
            end = min(start + BLOCK_ROWS, n)
            matrix[start:end] = (transposed[start:end] @ x).toarray()
        matrix[np.diag_indices(n)] += l2
        steps.step("Gram built")
        _factorised(dense_linalg.cholesky_lower_in_place, matrix, "XᵀX + λI", l2)
        steps.step("Cholesky factorised")
        dense_linalg.inverse_from_cholesky_in_place(matrix)
        steps.step("inverse computed")
    _symmetrize_lower_in_place(matrix)
    if not np.isfinite(matrix.diagonal()).all() or (matrix.diagonal() <= 0).any():
        raise FamilyFitError(f"EASE inverse is not positive definite in {dtype}; raise l2 (λ={l2}).")
    return matrix


def _weights_from_precision(precision: np.ndarray, dense: bool, per_row: int, steps: _Steps):
    """B = −P / diag(P) with a zero diagonal.

    Dense: in place, returned as float32 (the same memory when P is float32). Sparse: each row's
    ``per_row`` largest-magnitude entries, written block by block into preallocated csr arrays
    (8 bytes an entry), so the only other allocation is one block of rows.
    """
    n = len(precision)
    diagonal = precision.diagonal().copy()
    if dense:
        for start in range(0, n, BLOCK_ROWS):
            precision[start : start + BLOCK_ROWS] /= -diagonal
        precision[np.diag_indices(n)] = 0.0
        steps.step("weights computed")
        return precision.astype(np.float32, copy=False)
    keep = max(min(per_row, n - 1), 0)
    indices = np.empty(n * keep, dtype=np.int32)
    data = np.empty(n * keep, dtype=np.float32)
    for start in range(0, n, BLOCK_ROWS):
        block = precision[start : start + BLOCK_ROWS] / -diagonal
        block[np.arange(len(block)), np.arange(start, start + len(block))] = 0.0
        if keep:
            chosen = np.argpartition(-np.abs(block), keep - 1, axis=1)[:, :keep]
            indices[start * keep : (start + len(block)) * keep] = chosen.ravel()
            data[start * keep : (start + len(block)) * keep] = np.take_along_axis(block, chosen, axis=1).ravel()
    steps.step("weights computed")
    weights = sp.csr_matrix((data, indices, np.arange(n + 1, dtype=np.int64) * keep), shape=(n, n))
    weights.eliminate_zeros()
    weights.sort_indices()
    return weights


def _single_threaded_blas():
    """Small LAPACK calls on a busy machine are 10x faster on one BLAS thread (measured: 128×128 posv)."""
    return threadpool_limits(limits=1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


def _tail_columns(
    x: sp.csr_matrix,
    tail: np.ndarray,
    neighbours: int,
    l2: float,
    steps: _Steps,
    deadline: float | None = None,
    block_rows: int = BLOCK_ROWS,
) -> tuple[sp.csr_matrix, int]:
    with _single_threaded_blas():
        return _tail_columns_solved(x, tail, neighbours, l2, steps, deadline, block_rows)


def _tail_columns_solved(
    x: sp.csr_matrix,
    tail: np.ndarray,
    neighbours: int,
    l2: float,
    steps: _Steps,
    deadline: float | None = None,
    block_rows: int = BLOCK_ROWS,
) -> tuple[sp.csr_matrix, int]:
    """Ridge regression of each tail item on its most co-occurring items: B's tail columns, float32 csr (n, n).

    Column i of exact EASE is ``argmin ‖x_i − X_{−i} β‖² + λ‖β‖²``; here the regressors are the
    ``neighbours`` items with the largest ``XᵀX[i, ·]`` (co-occurrence, or weighted co-occurrence).
    ``tail`` is solved in its order (most popular first) until ``deadline`` (``time.perf_counter``);
    returns the columns and how many tail items were solved.
    """
    solved = len(tail)
    columns_major = sp.csc_matrix(x)
    transposed = sp.csr_matrix(x.T)
    rows_out, columns_out, values_out = [], [], []
    (posv,) = lapack.get_lapack_funcs(("posv",), (np.zeros(1),))
    for start in range(0, len(tail), block_rows):
        if deadline is not None and time.perf_counter() > deadline:
            solved = start
            break
        batch = tail[start : start + block_rows]
        gram_rows = sp.csr_matrix(transposed[batch] @ x)
        for position, item in enumerate(batch):
            lo, hi = gram_rows.indptr[position], gram_rows.indptr[position + 1]
            others, counts = gram_rows.indices[lo:hi], gram_rows.data[lo:hi]
            mask = (others != item) & (counts > 0)
            others, counts = others[mask], counts[mask]
            if len(others) == 0:
                continue
            if len(others) > neighbours:
                chosen = np.lexsort((others, -counts))[:neighbours]
                others, counts = others[chosen], counts[chosen]
            regressors = columns_major[:, others]
            gram = (regressors.T @ regressors).toarray().astype(np.float64)
            gram[np.diag_indices_from(gram)] += l2
            # LAPACK posv directly: scipy.linalg.solve costs ~100x more on 128×128 systems (its checks).
            _, beta, info = posv(gram, counts.astype(np.float64), lower=1, overwrite_a=1, overwrite_b=1)
            if info != 0:
                raise FamilyFitError(f"tail regression of item {item} is not positive definite; raise l2 (λ={l2}).")
            rows_out.append(others.astype(np.int64))
            columns_out.append(np.full(len(others), item, dtype=np.int64))
            values_out.append(beta.astype(np.float32))
        steps.step(f"EASE tail columns {min(start + block_rows, len(tail))}/{len(tail)}")
    n = x.shape[1]
    if not rows_out:
        return sp.csr_matrix((n, n), dtype=np.float32), solved
    coefficients = sp.csr_matrix(
        (np.concatenate(values_out), (np.concatenate(rows_out), np.concatenate(columns_out))), shape=(n, n)
    )
    coefficients.sort_indices()
    return coefficients, solved


def _input_matrix(data: TrainingData, input_kind: str) -> sp.csr_matrix:
    interactions = data.interactions
    if input_kind == "rated":
        source = (interactions.positives != 0) + (interactions.negatives != 0)
    else:
        source = interactions.positives if input_kind == "binary" else interactions.weights
    matrix = sp.csr_matrix(source, dtype=np.float32)
    matrix.sort_indices()
    if input_kind in ("binary", "rated"):
        matrix.data[:] = 1.0
    if matrix.nnz and (not np.isfinite(matrix.data).all() or (matrix.data < 0).any()):
        raise FamilyFitError("training weights must be finite and non-negative; rebuild them with build_interactions.")
    return matrix


def _fit_weights(
    x: sp.csr_matrix, params: EaseParams, plan: FitPlan, progress: Progress | None, deadline: float | None = None
):
    """B for input X (users × items) as (main part, tail columns).

    The main part is a dense float32 ndarray or a float32 csr; the tail columns (scalable variant
    only, else empty) are a float32 csr on other columns, so B = main + tail without a merge.
    """
    n = x.shape[1]
    dense = plan.serving_layout == "dense"
    if plan.variant == "exact":
        steps = _Steps(progress, 4)
        precision = _precision_in_place(x, params.l2, plan.dtype, plan.solver, steps)
        weights = _weights_from_precision(precision, dense, plan.serving_neighbours, steps)
        return weights, sp.csr_matrix((n, n), dtype=np.float32), 0
    counts = np.asarray((x != 0).sum(axis=0)).ravel()
    by_popularity = np.lexsort((np.arange(n), -counts))
    # The tail in popularity order: a time budget that runs out leaves the least popular unsolved.
    head, tail = np.sort(by_popularity[: plan.exact_items]), by_popularity[plan.exact_items :]
    block_rows = tail_block_rows(n, params)
    steps = _Steps(progress, 4 + math.ceil(len(tail) / block_rows))
    # Tail first: its workspace is freed before the head's m×m matrix, the peak, is allocated.
    tail_weights, solved = _tail_columns(x, tail, plan.tail_regressors, params.l2, steps, deadline, block_rows)
    empty = sp.csr_matrix((n, n), dtype=np.float32)
    if len(head) < 2:
        return (tail_weights.toarray() if dense else empty), (empty if dense else tail_weights), solved
    precision = _precision_in_place(sp.csr_matrix(x[:, head]), params.l2, plan.dtype, plan.solver, steps)
    head_weights = _weights_from_precision(precision, dense, plan.serving_neighbours, steps)
    if dense:
        # The only n×n allocation; the head's m×m block is scattered into it, then the tail added.
        weights = np.zeros((n, n), dtype=np.float32)
        weights[np.ix_(head, head)] = head_weights
        del precision, head_weights
        tail = tail_weights.tocoo()
        weights[tail.row, tail.col] += tail.data
        return weights, empty, solved
    del precision
    return _spread_rows_and_columns(head_weights, head, n), tail_weights, solved


def _spread_rows_and_columns(head_weights: sp.csr_matrix, head: np.ndarray, n: int) -> sp.csr_matrix:
    """The m×m head csr as rows and columns ``head`` of an n×n csr, reusing its data and indices arrays.

    ``head`` is sorted, so each row's column order survives the relabelling and tail rows are empty.
    """
    counts = np.zeros(n, dtype=np.int64)
    counts[head] = np.diff(head_weights.indptr)
    indices = head_weights.indices
    indices[:] = head[indices]  # in place: int32 holds every index below n
    return sp.csr_matrix((head_weights.data, indices, np.concatenate([[0], np.cumsum(counts)])), shape=(n, n))


def _csr_bytes(matrix: sp.csr_matrix) -> int:
    return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)


def _csr_arrays(matrix: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}_data": matrix.data, f"{prefix}_indices": matrix.indices, f"{prefix}_indptr": matrix.indptr}


def _csr_from(archive, prefix: str, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix(
        (archive[f"{prefix}_data"], archive[f"{prefix}_indices"], archive[f"{prefix}_indptr"]), shape=shape
    )


class EaseFamily:
    """A fitted EASE model (name ``"ease"``); see the module docstring for the budgets.

    Attributes
    ----------
    item_ids, user_ids : IdMap
    params : dict
        The validated :class:`EaseParams` plus the :class:`FitPlan` it ran (``variant``,
        ``dtype``, ``solver``, ``exact_items``, ``serving_layout``, ``serving_neighbours``,
        ``predicted_peak_bytes``), JSON-serialisable.
    weights : ndarray of float32, shape (n_items, n_items), or csr_matrix of float32
        B (its head part for the scalable variant): row j says how much a history item j speaks
        for every item; zero diagonal.
    tail_weights : csr_matrix of float32, shape (n_items, n_items)
        The scalable variant's tail columns (empty otherwise); B = weights + tail_weights.
    histories : csr_matrix of float32, shape (n_users, n_items)
        The fitted users' input rows X (binary, or training weights with ``input="weights"``).
    """

    name: ClassVar[str] = "ease"
    # Ordered by what won on validation (bench.quality_matrix, 2026-12-02): ml-100k 500, lastfm-2k 100,
    # the synthetic catalogue 1000; 50 never did. A time-cut search tries the likeliest first.
    param_grid: ClassVar[list[dict]] = [{"l2": l2} for l2 in (DEFAULT_L2, 500, 100, 1000, 50)]

    def __init__(
        self,
        *,
        item_ids: IdMap,
        user_ids: IdMap,
        params: dict,
        weights: np.ndarray | sp.csr_matrix,
        tail_weights: sp.csr_matrix,
        histories: sp.csr_matrix,
    ) -> None:
        self.item_ids, self.user_ids, self.params = item_ids, user_ids, params
        self.weights = weights
        self.tail_weights = sp.csr_matrix(tail_weights, dtype=np.float32)
        self.histories = sp.csr_matrix(histories, dtype=np.float32)

    @classmethod
    def fit(cls, data: TrainingData, params: dict, *, progress: Progress | None = None) -> EaseFamily:
        """Fit on ``data.interactions.positives`` (or its weights); vetoed pairs are simply absent.

        Parameters
        ----------
        data : TrainingData, shape (n_users, n_items)
        params : dict
            Keys of :class:`EaseParams`; missing keys take the defaults.
        progress : callable(done, total, message), optional

        Raises
        ------
        FamilyFitError
            Bad parameters, no positives, or a budget too small even for the scalable variant.
        """
        values = EaseParams.from_dict(params)
        x = _input_matrix(data, values.input)
        n_users, n_items = x.shape
        if x.nnz == 0 or n_items < 2:
            raise FamilyFitError(
                f"EASE needs at least one positive and two items (got {x.nnz} positives, {n_items} items); "
                "import feedback before training."
            )
        started = time.perf_counter()
        plan = fit_plan(n_items, n_users, values)
        deadline, timing = None, {}
        if values.fit_seconds is not None:
            # Half the time budget bounds the head's inversion at this machine's measured rate (a
            # smaller head through exact_items_cap); the tail gets what the head leaves.
            rate = measured_flop_rate()
            within = head_items_within(values.fit_seconds / 2, n_users, rate, n_items)
            if within < plan.exact_items:
                cap = within if values.exact_items_cap is None else min(within, values.exact_items_cap)
                plan = fit_plan(n_items, n_users, dataclasses.replace(values, exact_items_cap=cap))
            head_seconds = head_flops(plan.exact_items, n_users) / rate
            deadline = started + max(values.fit_seconds - head_seconds, 0.0)
            timing = {"flop_rate": round(rate), "head_seconds_predicted": round(head_seconds, 2)}
        weights, tail_weights, solved = _fit_weights(x, values, plan, progress, deadline)
        return cls(
            item_ids=data.item_ids,
            user_ids=data.user_ids,
            params={
                **asdict(values),
                **asdict(plan),
                **timing,
                "tail_items": n_items - plan.exact_items if plan.variant == "scalable" else 0,
                "tail_items_solved": solved,
            },
            weights=weights,
            tail_weights=tail_weights,
            histories=x,
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _times_weights(self, rows: sp.csr_matrix) -> np.ndarray:
        if isinstance(self.weights, np.ndarray):
            scores = np.asarray(rows @ self.weights, dtype=np.float32)
        else:
            scores = np.asarray((rows @ self.weights).toarray(), dtype=np.float32)
        if self.tail_weights.nnz:
            scores += (rows @ self.tail_weights).toarray().astype(np.float32)
        return scores

    def score_items(self, user_indices: np.ndarray) -> np.ndarray:
        """X[users] · B, float32 shape (len(user_indices), n_items)."""
        return self._times_weights(self.histories[np.asarray(user_indices, dtype=np.int64)])

    def score_history(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        preferences: np.ndarray | None = None,
    ) -> np.ndarray:
        """One history row times B, float32 shape (n_items,).

        The row is built the way the fit built X: with ``input="binary"`` every item with a
        positive confidence counts 1 (so a fitted user's own history reproduces
        :meth:`score_items`); with ``input="weights"`` repeated items sum their confidences.
        Indices < 0 are ignored; an empty history scores zeros.
        """
        items = np.asarray(item_indices, dtype=np.int64)
        confidence = np.ones(len(items), np.float32) if confidences is None else np.asarray(confidences, np.float32)
        if confidence.shape != items.shape:
            raise ValueError(f"confidences {confidence.shape} must match item_indices {items.shape}.")
        known = (items >= 0) & (items < self.n_items)
        if preferences is not None and self.params["input"] != "rated":
            known &= np.asarray(preferences, dtype=np.float64) > 0  # vetoed pairs were not in X
        row = sp.csr_matrix(
            (confidence[known], (np.zeros(int(known.sum()), np.int64), items[known])), shape=(1, self.n_items)
        )
        row.sum_duplicates()
        if self.params["input"] in ("binary", "rated"):
            row.data = (row.data > 0).astype(np.float32)
        return self._times_weights(row)[0]

    def similar_items(self, item_index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``item_index`` of B, its ``k`` largest weights (fewer when the sparse row holds fewer)."""
        if isinstance(self.weights, np.ndarray):
            row = self.weights[item_index]
            chosen = top_k(row, k, exclude=[item_index])
            return chosen, row[chosen].astype(np.float32)
        stored = (self.weights[item_index] + self.tail_weights[item_index]).tocsr()
        stored.sort_indices()
        if stored.nnz == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        chosen = top_k(stored.data, k)
        return stored.indices[chosen].astype(np.int64), stored.data[chosen].astype(np.float32)

    def save(self, path: Path) -> Path:
        """Write an ``np.savez`` archive (no pickles) at exactly ``path`` and return it."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "params_json": np.array(json.dumps(self.params, sort_keys=True)),
            **_csr_arrays(self.histories, "histories"),
            **_csr_arrays(self.tail_weights, "tail"),
            **self.item_ids.to_arrays("item"),
            **self.user_ids.to_arrays("user"),
        }
        if isinstance(self.weights, np.ndarray):
            arrays["weights_dense"] = self.weights
        else:
            arrays.update(_csr_arrays(self.weights, "weights"))
        with path.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> EaseFamily:
        """Read what :meth:`save` wrote, with ``allow_pickle=False``."""
        with np.load(Path(path), allow_pickle=False) as archive:
            version = int(archive["format_version"])
            if version != FORMAT_VERSION:
                raise FamilyFitError(f"{path} is EASE format {version}, this code reads {FORMAT_VERSION}; refit.")
            item_ids, user_ids = IdMap.from_arrays(archive, "item"), IdMap.from_arrays(archive, "user")
            square = (len(item_ids), len(item_ids))
            weights: np.ndarray | sp.csr_matrix = (
                archive["weights_dense"] if "weights_dense" in archive else _csr_from(archive, "weights", square)
            )
            return cls(
                item_ids=item_ids,
                user_ids=user_ids,
                params=json.loads(str(archive["params_json"])),
                weights=weights,
                tail_weights=_csr_from(archive, "tail", square),
                histories=_csr_from(archive, "histories", (len(user_ids), len(item_ids))),
            )

    def memory_bytes(self) -> int:
        """Bytes of B's serving copy, the fitted histories and the id maps."""
        weights = self.weights.nbytes if isinstance(self.weights, np.ndarray) else _csr_bytes(self.weights)
        return int(
            weights
            + _csr_bytes(self.tail_weights)
            + _csr_bytes(self.histories)
            + self.item_ids.ids.nbytes
            + self.user_ids.ids.nbytes
        )
