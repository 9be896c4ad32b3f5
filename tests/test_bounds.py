import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.integrate
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.bounds import (
    check_gaussian_tail_integral,
    check_rational_dictionary,
    check_stationarity,
    check_welch_equality_general,
    check_welch_equality_simplex,
    coherence_sparsity,
    four_code_lp,
    gaussian_tail_integral,
    rip_guarantees_recovery,
    simplex_frame,
    spark_lower_bound,
    statistical_dimension,
    statistical_dimension_threshold,
    t2_bound,
    t2_proof_lp,
    welch,
)
from gaptheory.instances import mutual_coherence, random_dictionary, spark, welch_bound

from conftest import sum_atol

#: welch and welch_bound evaluate sqrt((N - M) / (M (N - 1))) <= 1 in a few operations each.
WELCH_ATOL = sum_atol(8, 1.0)


def _statistical_dimension_atol(N):
    """Two float64 evaluations of N F(tau), F = rho (1 + tau^2) + (1 - rho) c T(tau) (erfc,
    exp and a dozen operations): 16 roundings of terms at most N (1 + 6^2) for tau in [0, 6].
    brentq's xtol = 1e-14 on the stationarity moves F by F'' xtol^2, far below that."""
    return sum_atol(16, N * 37.0)


def test_gaussian_tail_closed_form_is_the_integral_symbolically():
    assert check_gaussian_tail_integral() == 0


@pytest.mark.parametrize("nonnegative", [False, True])
def test_statistical_dimension_stationarity_is_the_derivative(nonnegative):
    assert check_stationarity(nonnegative) == 0


@pytest.mark.parametrize("n_latents", [3, 4, 5, 7])
def test_simplex_frame_attains_the_welch_bound_exactly(n_latents):
    assert check_welch_equality_simplex(n_latents)
    assert simplex_frame(n_latents).shape == (n_latents, n_latents)


def test_welch_equality_holds_symbolically_for_every_simplex():
    assert check_welch_equality_general() == 0


@settings(max_examples=30, deadline=None)
@given(tau=st.floats(0.0, 6.0))
def test_gaussian_tail_integral_matches_quadrature(tau):
    integrand = lambda u: (u - tau) ** 2 * math.exp(-u * u / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    reference, quad_error = scipy.integrate.quad(integrand, tau, np.inf)
    # quad's own error estimate, plus the closed form's round-off (erfc, exp, a few products)
    assert abs(float(gaussian_tail_integral(tau)) - reference) <= quad_error + sum_atol(16, 1 + tau**2)


@settings(max_examples=30, deadline=None)
@given(N=st.integers(3, 60), data=st.data(), seed=st.integers(0, 2**31))
def test_welch_matches_instances_and_lies_below_coherence(N, data, seed):
    M = data.draw(st.integers(1, N - 1))
    assert abs(welch(N, M) - welch_bound(N, M)) <= WELCH_ATOL
    D = random_dictionary(N, M, seed=seed)
    # coherence: M-term dot products of unit atoms
    assert mutual_coherence(D) >= welch(N, M) - WELCH_ATOL - sum_atol(M, 1.0)


def test_welch_is_zero_without_overcompleteness():
    assert welch(4, 4) == 0.0 and welch(3, 8) == 0.0


@settings(max_examples=15, deadline=None)
@given(N=st.integers(4, 9), seed=st.integers(0, 2**31))
def test_spark_is_at_least_one_plus_inverse_coherence(N, seed):
    D = random_dictionary(N, N // 2, seed=seed)
    mu = mutual_coherence(D)
    # mu carries M-term round-off, which 1 + 1/mu amplifies by 1/mu^2
    assert spark(D) >= spark_lower_bound(mu) - sum_atol(N // 2 + 2, 1.0) / mu**2


def test_coherence_and_spark_formulas_and_zero_coherence():
    # (1 + 1/mu) / 2 and 1 + 1/mu: two or three roundings
    assert coherence_sparsity(0.2) == pytest.approx(3.0, rel=sum_atol(3, 1.0), abs=0)
    assert spark_lower_bound(0.25) == pytest.approx(5.0, rel=sum_atol(2, 1.0), abs=0)
    assert coherence_sparsity(0.0) == math.inf and spark_lower_bound(0.0) == math.inf


def test_rip_threshold_is_sqrt2_minus_1():
    assert rip_guarantees_recovery(math.sqrt(2) - 1 - 1e-9)
    assert not rip_guarantees_recovery(math.sqrt(2) - 1)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(2, 300), data=st.data(), nonnegative=st.booleans())
def test_statistical_dimension_threshold_minimises_the_objective(N, data, nonnegative):
    K = data.draw(st.integers(1, N))
    value = statistical_dimension(N, K, nonnegative=nonnegative)
    rho, factor = K / N, (1 if nonnegative else 2)
    grid = np.linspace(0, 6, 4001)
    objective = rho * (1 + grid**2) + (1 - rho) * factor * gaussian_tail_integral(grid)
    atol = _statistical_dimension_atol(N)
    assert value <= N * objective.min() + atol
    # the grid point nearest the minimiser is within h/2 of it and F'' = 2 rho + 2 c (1 - rho) Q(tau)
    # <= 2c, so the grid minimum exceeds the true one by at most c (h/2)^2
    h = grid[1] - grid[0]
    assert value >= N * objective.min() - N * factor * (h / 2) ** 2 - atol
    assert K <= value + atol and value <= N + atol  # delta lies between K and N


def test_statistical_dimension_is_monotone_and_nonnegative_is_smaller():
    signed = [statistical_dimension(200, k) for k in (1, 5, 20, 80, 200)]
    assert all(a < b for a, b in zip(signed, signed[1:]))
    assert statistical_dimension(200, 20, nonnegative=True) < statistical_dimension(200, 20)
    assert statistical_dimension_threshold(1.0) == 0.0


@pytest.mark.parametrize("rho", [0.0, -0.1, 1.5])
def test_statistical_dimension_threshold_rejects_rho_outside_0_1(rho):
    with pytest.raises(ValueError, match="rho"):
        statistical_dimension_threshold(rho)


def test_t2_bound_values_and_rejects_negative_beta():
    assert t2_bound([0.0, 1.0, np.inf]).tolist() == [0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="beta"):
        t2_bound([-1.0])


@settings(max_examples=8, deadline=None)
@given(coefficients=st.lists(st.fractions(min_value=-3, max_value=3, max_denominator=7), min_size=1, max_size=3))
def test_t2_is_the_exact_optimum_of_the_proof_lp(coefficients):
    beta = sum(abs(c) for c in coefficients)
    assert t2_proof_lp(coefficients) == Fraction(1, 1) / (2 * (1 + beta))


def test_four_code_lp_respects_t2_on_a_rational_dictionary():
    D = [[1, 0], [0, 1], ["3/5", "4/5"]]
    # beta_2 = 3/5 + 4/5 (the unique representation), T2 = 5/24.
    assert four_code_lp(D, 2) >= Fraction(5, 24)
    assert check_rational_dictionary(D).shape == (3, 2)


def test_rational_dictionary_must_have_unit_rows():
    with pytest.raises(ValueError, match="norm exactly 1"):
        check_rational_dictionary([[1, 1]])


@pytest.mark.parametrize("nonnegative", [False, True])
def test_statistical_dimension_is_n_times_the_objective_at_the_threshold(nonnegative):
    import sympy as sp

    from gaptheory.bounds import rho_, statistical_dimension_objective, tau_

    objective = sp.lambdify((rho_, tau_), statistical_dimension_objective(nonnegative), ["scipy", "numpy"])
    tau = statistical_dimension_threshold(0.1, nonnegative=nonnegative)
    value = statistical_dimension(50, 5, nonnegative=nonnegative)
    assert abs(50 * float(objective(0.1, tau)) - value) <= _statistical_dimension_atol(50)
