"""Exact integer matrices in int64 limbs, checked against Python's integers and python-flint."""

from fractions import Fraction
from unittest import mock

import flint
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory import _integer_matrix, certificates
from gaptheory._integer_matrix import LIMB_BITS, IntegerMatrix, hstack, sparse_product


@st.composite
def integer_matrices(draw, rows=None, cols=None):
    """Nested lists of Python ints of any size and sign (zeros, 1-bit to 300-bit entries)."""
    rows = draw(st.integers(1, 5)) if rows is None else rows
    cols = draw(st.integers(1, 5)) if cols is None else cols
    entry = st.one_of(st.just(0), st.integers(-2**64, 2**64), st.integers(-2**300, 2**300),
                      st.integers(-(2**LIMB_BITS), 2**LIMB_BITS))
    return [[draw(entry) for _ in range(cols)] for _ in range(rows)]


def _canonical(matrix: IntegerMatrix) -> bool:
    """Digits in [0, 2^b), a signed top below 2^b, and no limb more than the entries need (the
    top cannot fold into the digit below it)."""
    limbs = matrix.limbs
    low_ok = ((limbs[:-1] >= 0) & (limbs[:-1] < 2**LIMB_BITS)).all()
    foldable = len(limbs) > 1 and ((limbs[-1] == 0) | ((limbs[-1] == -1) & (limbs[-2] > 0))).all()
    return bool(low_ok and (np.abs(limbs[-1]) < 2**LIMB_BITS).all() and not foldable)


@settings(max_examples=150, deadline=None)
@given(integer_matrices())
def test_from_integers_is_exact_and_canonical(values):
    matrix = IntegerMatrix.from_integers(values)
    assert _canonical(matrix)
    assert matrix.to_objects().tolist() == values
    assert matrix.abs().to_objects().tolist() == [[abs(v) for v in row] for row in values]
    assert matrix.row_sums() == [sum(row) for row in values]
    assert matrix.T.to_objects().tolist() == [list(column) for column in zip(*values)]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_product_equals_flints(data):
    p, n, q = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    left, right = data.draw(integer_matrices(p, n)), data.draw(integer_matrices(n, q))
    product = IntegerMatrix.from_integers(left) @ IntegerMatrix.from_integers(right)
    expected = flint.fmpz_mat(left) * flint.fmpz_mat(right)
    assert _canonical(product)
    assert product.to_objects().tolist() == [[int(expected[r, c]) for c in range(q)] for r in range(p)]


def test_the_product_splits_long_inner_dimensions_and_carries_between_sums():
    # An inner dimension of several chunks, all limbs at their largest, carried after every sum:
    # each float64 GEMM of limbs still runs at its exactness limit.
    rng = np.random.default_rng(0)
    left = [[int(v) for v in row] for row in rng.integers(-2**62, 2**62, size=(3, 40))]
    right = [[int(v) * 2**70 - 1 for v in row] for row in rng.integers(-2**62, 2**62, size=(40, 2))]
    flint_product = flint.fmpz_mat(left) * flint.fmpz_mat(right)
    expected = [[int(flint_product[r, c]) for c in range(2)] for r in range(3)]
    with mock.patch.object(_integer_matrix, "CHUNK", 7), mock.patch.object(_integer_matrix, "_SUMS_BEFORE_CARRY", 1):
        product = IntegerMatrix.from_integers(left) @ IntegerMatrix.from_integers(right)
    assert product.to_objects().tolist() == expected
    # Limbs near 2^b - 1 over an inner dimension of CHUNK: the largest GEMM the bound admits, with
    # partial sums of full 53-bit width (one more doubling of CHUNK makes them round).
    limbs = rng.integers(2**LIMB_BITS - 2**12, 2**LIMB_BITS, size=(2, 2, 2, _integer_matrix.CHUNK))
    row, column = IntegerMatrix(limbs[0]), IntegerMatrix(limbs[1].swapaxes(1, 2).copy())
    expected = flint.fmpz_mat(row.to_objects().tolist()) * flint.fmpz_mat(column.to_objects().tolist())
    assert (row @ column).to_objects().tolist() == [[int(expected[r, c]) for c in range(2)] for r in range(2)]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(-1074, 1000), st.integers(0, 1100), st.integers(0, 2**31))
def test_from_floats_and_exact_matrix_are_the_float_array_exactly(rows, cols, low, spread, seed):
    rng = np.random.default_rng(seed)
    exponents = np.minimum(low + rng.integers(0, spread + 1, size=(rows, cols)), 1023)
    A = np.ldexp(rng.uniform(0.5, 1.0, size=(rows, cols)) * rng.choice([-1.0, 0.0, 1.0], size=(rows, cols)), exponents)
    A_int, exponent = IntegerMatrix.from_floats(A)
    flint_int, flint_exponent = certificates.exact_matrix(A)
    assert _canonical(A_int)
    exact = [[Fraction(float(v)) for v in row] for row in A]
    scale = Fraction(2) ** exponent
    assert [[Fraction(int(v)) * scale for v in row] for row in A_int.to_objects()] == exact
    assert [[Fraction(int(flint_int[r, c])) * Fraction(2) ** flint_exponent for c in range(cols)]
            for r in range(rows)] == exact
    # the largest such exponent: some entry is odd (all-zero A: exponent 0)
    assert exponent == flint_exponent and (not A.any() or any(v % 2 for v in A_int.to_objects().flat))
    assert exponent == 0 or A.any()


def test_from_floats_needs_no_more_bits_than_the_entries():
    ones, exponent = IntegerMatrix.from_floats(np.array([[1.0, -1.0], [0.0, 1.0]]))
    assert exponent == 0 and ones.limbs.shape == (1, 2, 2) and ones.to_objects().tolist() == [[1, -1], [0, 1]]
    quarters, exponent = IntegerMatrix.from_floats(np.array([0.75, -0.25]))
    assert exponent == -2 and quarters.to_objects().tolist() == [3, -1]
    # -1 in a matrix of 60-bit entries: the sign sits in the top limb, no limb of -1 above it
    mixed = IntegerMatrix.from_integers([[-1, 2**59], [-(2**59), 5]])
    assert mixed.limbs.shape[0] == 3 and _canonical(mixed)


def test_from_floats_takes_subnormals_signed_zeros_and_the_largest_float():
    A = np.array([[5e-324, -0.0, np.finfo(float).max], [-np.finfo(float).tiny, 1.0, -5e-324]])
    A_int, exponent = IntegerMatrix.from_floats(A)
    assert [[Fraction(int(v)) * Fraction(2) ** exponent for v in row] for row in A_int.to_objects()] == \
        [[Fraction(float(v)) for v in row] for row in A]
    with pytest.raises(ValueError, match="finite"):
        IntegerMatrix.from_floats([[np.nan]])
    with pytest.raises(TypeError, match="integers"):
        IntegerMatrix.from_integers([[1.5]])


@settings(max_examples=100, deadline=None)
@given(integer_matrices(), integer_matrices(), st.integers(0, 130))
def test_shift_and_hstack_are_exact(left, right, bits):
    rows = min(len(left), len(right))
    left, right = left[:rows], right[:rows]
    shifted = IntegerMatrix.from_integers(left).shifted(bits)
    assert _canonical(shifted) and shifted.to_objects().tolist() == [[v << bits for v in row] for row in left]
    joined = hstack([IntegerMatrix.from_integers(left), IntegerMatrix.from_integers(right)])
    assert _canonical(joined) and joined.to_objects().tolist() == [a + b for a, b in zip(left, right)]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(1, 4), st.integers(-300, 300), st.integers(0, 2**31),
       st.booleans())
def test_sparse_product_equals_the_exact_dense_product(rows, inner, cols, scale, seed, past_the_chunk):
    rng = np.random.default_rng(seed)
    Z = np.ldexp(rng.uniform(0.5, 1.5, size=(rows, inner)), scale) * (rng.random((rows, inner)) < 0.5)
    Z[0, 0] = -0.75  # a sign and at least one entry
    B = [[int(v) << int(s) for v, s in zip(row, shifts)] for row, shifts in
         zip(rng.integers(-2**62, 2**62, size=(inner, cols)), rng.integers(0, 90, size=(inner, cols)))]
    chunk = 2 if past_the_chunk else _integer_matrix.CHUNK  # 2: rows with more nonzeros take the dense path
    with mock.patch.object(_integer_matrix, "CHUNK", chunk):
        product, exponent = sparse_product(scipy.sparse.csr_array(Z), IntegerMatrix.from_integers(B))
    exact = [[sum(Fraction(float(Z[r, j])) * B[j][c] for j in range(inner)) for c in range(cols)] for r in range(rows)]
    assert [[Fraction(int(v)) * Fraction(2) ** exponent for v in row] for row in product.to_objects()] == exact
