"""Tests of gaptheory.interpret: detection scores, top contexts, method comparisons."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.interpret import (
    MIN_TRAIN_FIRES,
    compare_scores,
    detection_scores,
    holm,
    shuffled_baseline,
    top_contexts,
)

#: Scores computed two ways from the same counts agree to float64 round-off.
SCORE_ATOL = 1e-12


def _tokens(n, n_types, seed):
    return np.random.default_rng(seed).integers(0, n_types, size=n)


def test_detection_scores_give_f1_one_to_a_latent_that_fires_exactly_on_one_token_type():
    train, test = _tokens(2000, 30, 0), _tokens(1000, 30, 1)
    codes = lambda ids: np.stack([(ids == 7) * 1.5, (ids == 3) | (ids == 4)], axis=1).astype(float)  # noqa: E731
    scores = detection_scores(codes(train), train, codes(test), test)
    assert scores.associated == [[7], [3, 4]]
    assert np.allclose(scores.f1, 1.0, atol=SCORE_ATOL)


def test_detection_scores_choose_associated_tokens_on_training_text_only():
    train, test = _tokens(2000, 30, 0), _tokens(1000, 30, 1)
    # On the training split the latent detects token 7; on held-out text it detects token 8.
    scores = detection_scores((train == 7)[:, None] * 1.0, train, (test == 8)[:, None] * 1.0, test)
    assert scores.associated == [[7]] and scores.f1[0] == 0.0


def test_detection_scores_of_a_real_detector_beat_the_shuffled_baseline():
    train, test = _tokens(3000, 40, 2), _tokens(1500, 40, 3)
    rng = np.random.default_rng(4)
    noisy = lambda ids: ((ids == 5) & (rng.random(ids.size) < 0.8))[:, None] * 1.0  # noqa: E731
    real = detection_scores(noisy(train), train, noisy(test), test)
    chance = shuffled_baseline(noisy(train), train, noisy(test), test, seed=0)
    # precision 1 and recall 0.8 give F1 = 2 (0.8) / 1.8 = 0.89, with a standard error of about
    # 0.04 over the ~37 test occurrences of token 5 (0.8 is 2 SE below); shuffled codes fire on
    # 1 token type in 40 at random, an F1 near 0.05
    assert real.f1[0] > 0.8 > 0.2 > chance.f1[0]


def test_detection_scores_leave_latents_with_too_few_training_fires_unscored():
    train = _tokens(500, 10, 0)
    codes = np.zeros((500, 3))
    codes[:MIN_TRAIN_FIRES - 1, 1] = 1.0  # too rare
    codes[:, 2] = train == 2
    scores = detection_scores(codes, train, codes, train)
    assert scores.latents.tolist() == [2] and scores.n_unscored == 2 and scores.n_latents == 3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.01, 0.9))
def test_detection_scores_are_probabilities_and_f1_lies_between_precision_and_recall(seed, density):
    rng = np.random.default_rng(seed)
    train, test = rng.integers(0, 12, 400), rng.integers(0, 15, 300)
    codes = lambda n: rng.random((n, 6)) * (rng.random((n, 6)) < density)  # noqa: E731
    s = detection_scores(codes(400), train, codes(300), test)
    for values in (s.precision, s.recall, s.f1):
        assert np.all((values >= 0) & (values <= 1))
    assert np.all(s.f1 <= np.maximum(s.precision, s.recall) + SCORE_ATOL)
    assert np.all(s.f1 >= np.minimum(s.precision, s.recall) - SCORE_ATOL)


def test_detection_scores_reject_ids_that_do_not_match_the_codes():
    with pytest.raises(ValueError, match=r"one entry per code row"):
        detection_scores(np.ones((4, 2)), [1, 2, 3], np.ones((4, 2)), [1, 2, 3, 4])


def test_top_contexts_are_sorted_stay_in_their_window_and_skip_silent_tokens():
    vocab = [f"w{i}" for i in range(10)]
    ids = np.arange(10)
    windows = np.array([0] * 5 + [1] * 5)
    codes = np.zeros((10, 1))
    codes[[4, 5, 8], 0] = [3.0, 2.0, 1.0]
    contexts = top_contexts(codes, 0, ids, windows, vocab, k=5, width=3)
    assert [c.activation for c in contexts] == [3.0, 2.0, 1.0]
    assert contexts[0].text == "w1 w2 w3 [[w4]]" and contexts[1].text == "[[w5]] w6 w7 w8"


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.integers(0, 6), min_size=1, max_size=15), b=st.lists(st.integers(0, 6), min_size=1, max_size=15))
def test_cliffs_delta_equals_the_pair_count_definition_and_is_antisymmetric(a, b):
    a, b = np.array(a, float), np.array(b, float)
    if np.ptp(np.concatenate([a, b])) == 0:
        return  # all values tied: the U test is undefined
    brute = (np.sign(a[:, None] - b[None, :])).mean()
    assert compare_scores(a, b).cliffs_delta == pytest.approx(brute, abs=SCORE_ATOL)
    assert compare_scores(b, a).cliffs_delta == pytest.approx(-brute, abs=SCORE_ATOL)


def test_compare_scores_finds_a_clear_shift_and_not_a_null_one():
    rng = np.random.default_rng(0)
    shifted = compare_scores(rng.normal(1, 1, 300), rng.normal(0, 1, 300))
    null = compare_scores(rng.normal(0, 1, 300), rng.normal(0, 1, 300))
    # A unit shift gives Cliff's delta 2 Phi(1/sqrt 2) - 1 = 0.52; with 300 per group its
    # standard error under the null is sqrt((n + m + 1) / (3 n m)) = 0.047, so the shift is
    # ~11 SE (p far below 1e-6) and 0.3 is 5 SE below 0.52; the null's |delta| < 0.15 and
    # p > 1e-3 are both 3.2-3.3 SE events, and the draw is seeded.
    assert shifted.p_value < 1e-6 and shifted.cliffs_delta > 0.3
    assert null.p_value > 1e-3 and abs(null.cliffs_delta) < 0.15


@settings(max_examples=40, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_adjusted_p_values_dominate_the_raw_ones_and_keep_their_order(p):
    p = np.array(p)
    adjusted = holm(p)
    assert np.all(adjusted >= p - SCORE_ATOL) and np.all(adjusted <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= -SCORE_ATOL)


@pytest.mark.parametrize("val_l0, target, expected", [([80, 41, 20], 32, 1), ([10, 30, 34], 32, 1),
                                                      ([5, 7], 1000, 1), ([20, 44], 32, 0)])
def test_select_closest_l0_picks_the_nearest_point_and_the_first_on_ties(val_l0, target, expected):
    from gaptheory.interpret import select_closest_l0

    assert select_closest_l0(val_l0, target) == expected
