"""Strategies draw what they promise: ranges, unit-norm rows, K-sparse codes, reproducible instances."""

import numpy as np
import pytest
from hypothesis import given, settings

from gaptheory.instances import make_instance, mutual_coherence
from gaptheory.strategies import dictionaries, instances, satisfies_coherence_condition, sparse_codes

# Row norms of a float64 normalisation are 1 within a few ulps times M (one dot product,
# one sqrt, one division); 8 M eps is a safe bound for M <= 16.
EPS = np.finfo(np.float64).eps


@settings(max_examples=60, database=None, deadline=None)
@given(instances(N=(3, 14), M=(2, 6), K=(1, 4), B=(1, 5), nonnegative=False))
def test_instances_respect_their_ranges_and_conventions(inst):
    assert 3 <= inst.N <= 14 and 2 <= inst.M <= min(6, inst.N - 1)
    assert 1 <= inst.K <= min(4, inst.N) and 1 <= inst.B <= 5
    assert inst.D.shape == (inst.N, inst.M) and inst.Z.shape == (inst.B, inst.N)
    np.testing.assert_allclose(np.linalg.norm(inst.D, axis=1), 1.0, rtol=0, atol=8 * inst.M * EPS)
    assert ((inst.Z != 0).sum(axis=1) == inst.K).all()
    np.testing.assert_array_equal(inst.X, inst.Z @ inst.D)


@settings(max_examples=20, database=None, deadline=None)
@given(instances(N=(3, 10), M=(2, 4), K=(1, 2)))
def test_an_instance_is_rebuilt_exactly_from_its_repr(inst):
    rebuilt = eval(repr(inst), {"make_instance": make_instance})
    np.testing.assert_array_equal(rebuilt.D, inst.D)
    np.testing.assert_array_equal(rebuilt.Z, inst.Z)
    assert (inst.Z >= 0).all()  # nonnegative by default


@settings(max_examples=30, database=None, deadline=None)
@given(instances(N=(3, 12), M=(2, 8), K=(1, 3), coherence_condition=True))
def test_coherence_filter_keeps_only_instances_meeting_the_condition(inst):
    assert satisfies_coherence_condition(inst)
    assert inst.K < 0.5 * (1 + 1 / mutual_coherence(inst.D))


def test_coherence_condition_refuses_antipodal_atoms_computed_just_below_one():
    # Rademacher rows d and -d give mu = 1 exactly, computed as 1 - 3e-16 (seed found by search).
    inst = make_instance(N=8, M=7, K=1, B=6, kind="rademacher", seed=1)
    assert mutual_coherence(inst.D) < 1.0
    assert not satisfies_coherence_condition(inst)


@settings(max_examples=20, database=None, deadline=None)
@given(dictionaries(N=(5, 9), M=3, kinds="dct"))
def test_dictionaries(D):
    assert 5 <= D.shape[0] <= 9 and D.shape[1] == 3


@settings(max_examples=20, database=None, deadline=None)
@given(sparse_codes(7, K=(2, 3), B=(1, 4), nonnegative=False))
def test_sparse_codes(Z):
    assert Z.shape[1] == 7 and 1 <= Z.shape[0] <= 4
    assert set((Z != 0).sum(axis=1).tolist()) <= {2, 3}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(N=(5, 3)), ValueError, "empty"),
        (dict(N=(0, 3)), ValueError, "N="),
        (dict(N=(3, 6), M=(3, 4)), ValueError, "M < N"),
        (dict(N=(3, 6), M=(1, 2), K=(4, 5)), ValueError, "K="),
        (dict(N="many"), TypeError, "N must be"),
        (dict(N=(2.5, 4)), TypeError, "N must be"),
        (dict(kinds=("gaussian", "fourier")), ValueError, "kinds"),
        (dict(kinds="identity_dct"), ValueError, "kinds"),
        (dict(magnitudes=(2.0, 1.0)), ValueError, "magnitudes"),
        (dict(nonnegative="no"), TypeError, "nonnegative"),
    ],
)
def test_bad_ranges_are_refused_when_the_strategy_is_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        instances(**kwargs)


def test_sparse_codes_needs_one_N_and_K_at_most_N():
    with pytest.raises(TypeError, match="one N"):
        sparse_codes((3, 5))
    with pytest.raises(ValueError, match="K="):
        sparse_codes(3, K=(4, 5))
