import math

import numpy as np

from gaptheory.verify import available_checks, empirical_transition, run_checks

THEORY_CHECKS = [
    "t2_below_t3", "t3_compact_equals_enumeration", "t3_encoder_attains_eps", "t3_certificates_verify",
    "t3_positive_when_overcomplete", "t3_zero_for_independent_atoms", "rip_condition_bp_recovers",
    "gap_certified_where_inference_exact", "symbolic_identities", "phase_transition_matches_statistical_dimension",
    "sae_never_beats_eps",
]


def test_theory_checks_are_registered_in_the_default_run():
    assert set(THEORY_CHECKS) <= set(available_checks(full=False))


def test_cheap_theory_checks_pass():
    rows = run_checks(only=["t3_certificates_verify", "t3_zero_for_independent_atoms",
                            "best_subset_recovers_below_half_spark"])
    assert len(rows) == 3
    assert all(row.passed for row in rows), [(row.name, row.detail) for row in rows]


def test_empirical_transition_rises_from_failure_to_success_around_delta():
    delta, tolerance, m_half, Ms, rates = empirical_transition(20, 2, nonnegative=False, trials=6, step=3, seed=0)
    assert 0 < delta < 20 and tolerance > 1 and math.isfinite(m_half)
    # The intrinsic-volume variable V behind BP's success (success iff V <= M) has mean delta
    # and variance at most 2 min(delta, N - delta) = spread^2 (McCoy & Tropp 2014); at the
    # largest M, over 1.7 spreads above delta, Cantelli's inequality gives P(success) >= 0.75,
    # so a seeded rate below 1/2 of 6 trials would be a 2% event if the solver were right.
    spread = (tolerance - 1) / 2
    assert Ms[-1] >= delta + 1.7 * spread
    assert rates[0] <= rates[-1] and rates[-1] >= 0.5 and len(Ms) == len(rates)
    assert np.all((rates >= 0) & (rates <= 1))
