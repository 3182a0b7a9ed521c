"""The blocked Cholesky, SPD inverse and triangular solve against NumPy's reference routines."""

import numpy as np
import pytest

from recommender.ml.dense_linalg import (
    NotPositiveDefinite,
    cholesky_lower_in_place,
    lower_solve_in_place,
    spd_inverse_lower_in_place,
)


def _spd(n: int, dtype: str, seed: int = 0) -> np.ndarray:
    sample = np.random.default_rng(seed).standard_normal((n + 20, n))
    return (sample.T @ sample + 5.0 * np.eye(n)).astype(dtype)


# 300 rows in blocks of 128: two full blocks and a partial one; 64 rows: a single partial block.
@pytest.mark.parametrize("n", [64, 300])
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-10), ("float32", 1e-4)])
def test_inverse_matches_numpy_in_the_lower_triangle(n, dtype, tolerance):
    matrix = _spd(n, dtype)
    expected = np.linalg.inv(matrix.astype(np.float64))
    spd_inverse_lower_in_place(matrix, block=128)
    assert matrix.dtype == dtype
    np.testing.assert_allclose(np.tril(matrix), np.tril(expected), atol=tolerance * np.abs(expected).max())


def test_cholesky_matches_numpy_and_leaves_the_factor_in_the_lower_triangle():
    matrix = _spd(300, "float64", seed=1)
    expected = np.linalg.cholesky(matrix)
    cholesky_lower_in_place(matrix, block=128)
    np.testing.assert_allclose(np.tril(matrix), expected, atol=1e-10 * np.abs(expected).max())


def test_lower_solve_matches_a_dense_solve():
    rng = np.random.default_rng(2)
    factor = np.linalg.cholesky(_spd(300, "float64", seed=3))
    scratch_upper = factor + np.triu(rng.standard_normal((300, 300)), 1)  # the upper triangle is ignored
    rhs = np.asfortranarray(rng.standard_normal((300, 50)))
    expected = np.linalg.solve(factor, rhs)
    lower_solve_in_place(scratch_upper, rhs, block=128)
    np.testing.assert_allclose(rhs, expected, atol=1e-9 * np.abs(expected).max())


def test_an_indefinite_matrix_names_the_failing_block():
    matrix = _spd(300, "float64")
    matrix[200, 200] = -1e6  # row 200 sits in the second block of 128
    with pytest.raises(NotPositiveDefinite) as raised:
        spd_inverse_lower_in_place(matrix, block=128)
    assert raised.value.row == 128
