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


# ----- the comparison pipeline on activations of a tiny random transformer ----------------

TINY_COMPARISON = dict(expansion=2, k=4, steps=15, batch_size=32, n_val=40, n_score_train=200, n_score_test=120,
                       fista_max_iter=20, fit_max_iter=5, mlp_hidden=24, n_examples=2)


@pytest.fixture(scope="module")
def tiny_activations(tmp_path_factory):
    from gaptheory.activations import extract_activations, tiny_bert

    words = ["the", "fire", "storm", "town", "people", "wind", "south", "hill", "said", "in", "of", "and"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words + [",", "."]
    loaded = tiny_bert(vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       max_position_embeddings=32, seed=0, name="tiny")
    rng = np.random.default_rng(0)
    documents = [" ".join(rng.choice(words + [",", "."], size=60)) for _ in range(20)]
    folder = tmp_path_factory.mktemp("acts")
    paths = {}
    for split, docs in (("train", range(15)), ("test", range(15, 20))):
        paths[split] = extract_activations(loaded, documents, folder / f"{split}.safetensors", layer=1,
                                           max_tokens=700, context_length=24, doc_indices=list(docs)).path
    return paths


def test_compare_encoders_trains_every_method_within_one_flop_budget(tiny_activations, tmp_path):
    from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations

    result = compare_encoders_on_activations(tiny_activations["train"], tiny_activations["test"], tmp_path,
                                             config=ComparisonConfig(**TINY_COMPARISON), seed=0, device="cpu")
    assert [m.method for m in result.methods] == ["sae", "sae_topk", "mlp", "sae_ito", "sparse_coding"]
    for m in result.methods:
        assert m.train_flops <= result.budget_flops * 1.5  # sparse coding's pilot estimate may drift
        if m.method != "sparse_coding":  # analytic costs, the MLP's data initialisation included
            assert m.train_flops <= result.budget_flops
        assert -1 <= m.explained_variance <= 1 and m.mean_l0 >= 0 and m.inference_flops_per_token > 0
    by_name = {m.method: m for m in result.methods}
    assert by_name["sae_topk"].mean_l0 <= TINY_COMPARISON["k"]
    assert by_name["mlp"].steps < by_name["sae"].steps  # a costlier step buys fewer steps
    assert by_name["sae_ito"].inference_flops_per_token > by_name["sae"].inference_flops_per_token
    assert (tmp_path / "results.json").exists() and "Example latents" in (tmp_path / "report.md").read_text()


def test_compare_encoders_exports_saes_that_load_back_in_the_saelens_layout(tiny_activations, tmp_path):
    import json

    from safetensors import safe_open

    from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations

    config = ComparisonConfig(**{**TINY_COMPARISON, "methods": ("sae", "sae_topk")})
    result = compare_encoders_on_activations(tiny_activations["train"], tiny_activations["test"], tmp_path,
                                             config=config, seed=1, device="cpu")
    assert set(result.saelens_exports) == {"sae", "sae_topk"}
    for method, info in result.saelens_exports.items():
        assert info["round_trip_max_abs_diff"] == 0.0
        cfg = json.loads((tmp_path / "saes" / method / "cfg.json").read_text())
        assert (cfg["d_in"], cfg["d_sae"]) == (16, 32)
        with safe_open(str(tmp_path / "saes" / method / "sae_weights.safetensors"), framework="np") as f:
            assert {"W_enc", "b_enc", "W_dec", "b_dec"} <= set(f.keys())
            assert f.get_tensor("W_enc").shape == (16, 32) and f.get_tensor("W_dec").shape == (32, 16)


def test_comparison_config_rejects_an_unknown_method():
    from gaptheory.interpret import ComparisonConfig

    with pytest.raises(ValueError, match=r"non-empty subset"):
        ComparisonConfig(methods=("sae", "transcoder"))


def test_cli_activations_compare_prints_one_json_document(tiny_activations, tmp_path, capsys):
    import json

    from gaptheory.cli import main

    code = main(["activations", "compare", "--train", tiny_activations["train"], "--test", tiny_activations["test"],
                 "--out", str(tmp_path), "--expansion", "2", "--k", "4", "--steps", "10", "--batch-size", "32",
                 "--n-val", "40", "--n-score-train", "200", "--n-score-test", "100", "--methods", "sae", "sae_topk", "--json",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    outcome = json.loads(captured.out)
    assert [m["method"] for m in outcome["methods"]] == ["sae", "sae_topk"]
    assert outcome["comparisons"][0]["name_a"] == "sae_topk"


# ----- the sparsity-matched comparison: sweep on validation, score the matched models ------

TINY_SWEEP = dict(TINY_COMPARISON, l1_grid=(0.01, 0.3), k_grid=(2, 6), alpha_grid=(0.005, 0.15), target_l0=4.0)


@pytest.fixture(scope="module")
def tiny_sweep(tiny_activations, tmp_path_factory):
    from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations

    return compare_encoders_on_activations(tiny_activations["train"], tiny_activations["test"],
                                           tmp_path_factory.mktemp("sweep"), config=ComparisonConfig(**TINY_SWEEP),
                                           seed=0, device="cpu")


def test_sparsity_sweep_measures_every_grid_point_of_every_method_on_validation(tiny_sweep):
    grids = {"sae": TINY_SWEEP["l1_grid"], "sae_topk": TINY_SWEEP["k_grid"], "mlp": TINY_SWEEP["l1_grid"],
             "sae_ito": TINY_SWEEP["l1_grid"], "sparse_coding": TINY_SWEEP["alpha_grid"]}
    assert [(p.method, p.value) for p in tiny_sweep.sweep] == [(m, v) for m, grid in grids.items() for v in grid]
    for p in tiny_sweep.sweep:
        assert p.val_l0 >= 0 and p.val_explained_variance <= 1 and 0 <= p.val_dead_latents <= 32
        assert p.train_flops <= tiny_sweep.budget_flops * 1.5  # the same budget at every grid point
    steps = lambda method: [(p.value, p.steps, p.train_flops) for p in tiny_sweep.sweep if p.method == method]  # noqa: E731
    assert steps("sae_ito") == steps("sae")  # ITO reuses the ReLU SAE trained at the same l1


def test_sparsity_sweep_keeps_per_method_the_point_closest_to_the_target_l0(tiny_sweep):
    for method in ("sae", "sae_topk", "mlp", "sae_ito", "sparse_coding"):
        points = [p for p in tiny_sweep.sweep if p.method == method]
        distance = [abs(p.val_l0 - TINY_SWEEP["target_l0"]) for p in points]
        assert [p.selected for p in points] == [d == min(distance) and d not in distance[:i]
                                                for i, d in enumerate(distance)]
        kept = next(p for p in points if p.selected)
        result = next(m for m in tiny_sweep.methods if m.method == method)
        assert result.setting == {kept.knob: kept.value} and result.steps == kept.steps


def test_sparsity_sweep_keeps_the_sparsest_point_for_a_tiny_target_and_the_densest_for_a_huge_one(
        tiny_activations, tmp_path):
    from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations

    kept = {}
    for target in (0.01, 1000.0):
        config = ComparisonConfig(**{**TINY_SWEEP, "methods": ("sae_topk",), "k_grid": (1, 3, 6), "target_l0": target})
        result = compare_encoders_on_activations(tiny_activations["train"], tiny_activations["test"], tmp_path,
                                                 config=config, seed=0, device="cpu")
        kept[target] = result.methods[0].setting["k"]
        assert result.methods[0].setting["k"] == next(p.value for p in result.sweep if p.selected)
    assert kept == {0.01: 1, 1000.0: 6}


def test_sparsity_sweep_selection_does_not_depend_on_the_test_split(tiny_activations, tmp_path):
    from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations

    config = ComparisonConfig(**{**TINY_SWEEP, "methods": ("sae", "sae_topk")})
    runs = [compare_encoders_on_activations(tiny_activations["train"], test, tmp_path / str(i), config=config,
                                            seed=0, device="cpu")
            for i, test in enumerate((tiny_activations["test"], tiny_activations["train"]))]
    assert [p.to_dict() for p in runs[0].sweep] == [p.to_dict() for p in runs[1].sweep]
    assert runs[0].methods[0].explained_variance != runs[1].methods[0].explained_variance  # the test split differs


def test_single_setting_comparison_has_no_sweep_and_records_its_setting(tiny_activations, tmp_path):
    from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations

    config = ComparisonConfig(**{**TINY_COMPARISON, "methods": ("sae", "sae_topk")})
    assert not config.sweep
    result = compare_encoders_on_activations(tiny_activations["train"], tiny_activations["test"], tmp_path,
                                             config=config, seed=0, device="cpu")
    assert result.sweep == [] and [m.setting for m in result.methods] == [{"l1_coefficient": 0.1}, {"k": 4}]


@pytest.mark.parametrize("grid, message", [
    (dict(l1_grid=(0.1, -0.2)), r"l1_grid=.*finite numbers > 0"),
    (dict(alpha_grid=(float("nan"),)), r"alpha_grid=.*finite numbers > 0"),
    (dict(k_grid=(8, 2.5)), r"k_grid=.*integers >= 1"),
    (dict(k_grid=(0,)), r"k_grid=.*integers >= 1"),
    (dict(l1_grid=(0.1, 0.1)), r"repeats a value"),
    (dict(l1_grid="0.1"), r"sequence of numbers"),
    (dict(l1_grid=(0.1,), target_l0=0), r"target_l0=0 must be a finite number > 0"),
])
def test_comparison_config_rejects_bad_sparsity_grids(grid, message):
    from gaptheory.interpret import ComparisonConfig

    with pytest.raises(ValueError, match=message):
        ComparisonConfig(**grid)


def test_sparsity_sweep_rejects_a_k_larger_than_the_latents(tiny_activations, tmp_path):
    from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations

    config = ComparisonConfig(**{**TINY_COMPARISON, "methods": ("sae_topk",), "k_grid": (4, 33)})
    with pytest.raises(ValueError, match=r"1 <= K <= N=32"):
        compare_encoders_on_activations(tiny_activations["train"], tiny_activations["test"], tmp_path,
                                        config=config, seed=0, device="cpu")


@pytest.mark.parametrize("val_l0, target, expected", [([80, 41, 20], 32, 1), ([10, 30, 34], 32, 1),
                                                      ([5, 7], 1000, 1), ([20, 44], 32, 0)])
def test_select_closest_l0_picks_the_nearest_point_and_the_first_on_ties(val_l0, target, expected):
    from gaptheory.interpret import select_closest_l0

    assert select_closest_l0(val_l0, target) == expected


def test_cli_activations_compare_runs_the_sweep_when_a_grid_is_given(tiny_activations, tmp_path, capsys):
    import json

    from gaptheory.cli import main

    code = main(["activations", "compare", "--train", tiny_activations["train"], "--test", tiny_activations["test"],
                 "--out", str(tmp_path), "--expansion", "2", "--steps", "10", "--batch-size", "32", "--n-val", "40",
                 "--n-score-train", "200", "--n-score-test", "100", "--methods", "sae_topk", "--k-grid", "1", "6",
                 "--target-l0", "1000", "--json", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    outcome = json.loads(captured.out)
    assert [(p["value"], p["selected"]) for p in outcome["sweep"]] == [(1, False), (6, True)]
    assert outcome["methods"][0]["setting"] == {"k": 6} and outcome["config"]["k_grid"] == [1, 6]


def test_comparison_config_passes_the_mlp_initialisation_options_on():
    from gaptheory.interpret import ComparisonConfig

    options = ComparisonConfig(mlp_fit_output=True, mlp_init_rows=4096).hparams("mlp")
    assert options["fit_output_to_decoder"] is True and options["init_rows"] == 4096
    assert ComparisonConfig().hparams("mlp")["init_rows"] is None
    with pytest.raises(ValueError, match="mlp_init_rows"):
        ComparisonConfig(mlp_init_rows=0)
