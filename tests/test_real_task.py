"""The ``activations`` task kind: a tiny real_minilm-like sweep on a tiny random BERT and corpus.

The model is a randomly initialised BERT saved as a Hugging Face folder and the corpus a text
file, so the whole path (extraction into the cache, training within the budget, selection on
validation L0, held-out scores, store, table) runs in seconds without the ``real`` extra.
"""

import json

import numpy as np
import pytest

from gaptheory.cli import EXIT_OK, EXIT_USAGE, main
from gaptheory.experiments.runner import run_sweep
from gaptheory.experiments.store import ResultStore
from gaptheory.experiments.sweep import Sweep

METHODS = ("sae", "sae_topk", "mlp", "sae_ito", "sparse_coding")
GRIDS = {"sae": "[0.01, 0.3]", "sae_topk": "[2, 6]", "mlp": "[0.01, 0.3]", "sae_ito": "[0.01, 0.3]",
         "sparse_coding": "[0.005, 0.15]"}
TINY = dict(layer=1, train_tokens=700, test_tokens=300, context_length=24, held_out_fraction=0.25, expansion=2,
            K=4, steps=15, batch_size=32, n_val=40, n_score_train=200, n_score_test=120, fista_max_iter=20,
            fit_max_iter=5, mlp_hidden=24, n_examples=2, target_l0=4.0)


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """A saved tiny BERT folder and a corpus file (one document per line)."""
    from gaptheory.activations import tiny_bert

    words = ["the", "fire", "storm", "town", "people", "wind", "south", "hill", "said", "in", "of", "and"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words + [",", "."]
    loaded = tiny_bert(vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       max_position_embeddings=32, seed=0, name="tiny")
    folder = tmp_path_factory.mktemp("source")
    loaded.model.save_pretrained(str(folder / "model"))
    loaded.tokenizer.save_pretrained(str(folder / "model"))
    rng = np.random.default_rng(0)
    (folder / "corpus.txt").write_text("\n".join(" ".join(rng.choice(words + [",", "."], size=60)) for _ in range(20)))
    return {"model": str(folder / "model"), "corpus": str(folder / "corpus.txt"), "cache": str(folder / "cache")}


def _sweep(source, name="tiny_real", methods=METHODS, **fixed):
    cases = tuple({"method": m, "sparsity_grid": GRIDS[m]} for m in methods)
    return Sweep(name=name, kind="activations", fixed={**TINY, **source, **fixed}, cases=cases)


@pytest.fixture(scope="module")
def tiny_records(tiny_source, tmp_path_factory):
    with ResultStore(tmp_path_factory.mktemp("store") / "real.db") as store:
        summary = run_sweep(_sweep(tiny_source), store)
        failures = store.failures()
        records = {record["method"]: record for record in store.records(sweep="tiny_real")}
    assert summary.failed == 0, [f["traceback"] for f in failures]
    return records


def test_every_method_trains_within_one_flop_budget(tiny_records):
    assert set(tiny_records) == set(METHODS)
    for method, r in tiny_records.items():
        budget = r["budget_flops"]
        assert r["train_flops"] <= (1.5 if method == "sparse_coding" else 1.0) * budget  # sparse coding: a pilot
        assert -1 <= r["explained_variance"] <= 1 and r["mean_l0"] >= 0 and r["inference_flops_per_token"] > 0
        assert (r["N"], r["M"], r["n_points"]) == (32, 16, 2)
    assert len({r["budget_flops"] for r in tiny_records.values()}) == 1  # the same budget for every method
    assert tiny_records["sae_topk"]["mean_l0"] <= tiny_records["sae_topk"]["selected"]
    assert tiny_records["mlp"]["steps_run"] < tiny_records["sae"]["steps_run"]  # a costlier step buys fewer
    assert tiny_records["sae_ito"]["inference_flops_per_token"] > tiny_records["sae"]["inference_flops_per_token"]


def test_each_method_keeps_the_grid_point_closest_to_the_target_l0_on_validation(tiny_records):
    for method, r in tiny_records.items():
        points = json.loads(r["sweep_points"])
        assert [p["value"] for p in points] == json.loads(GRIDS[method])
        distance = [abs(p["val_l0"] - TINY["target_l0"]) for p in points]
        kept = points[distance.index(min(distance))]
        assert r["selected"] == kept["value"] and r["val_l0"] == kept["val_l0"] and r["steps_run"] == kept["steps"]
    # SAE + ITO trains as the SAE does (same seed, same batches): the same steps at every point.
    assert ([p["steps"] for p in json.loads(tiny_records["sae_ito"]["sweep_points"])]
            == [p["steps"] for p in json.loads(tiny_records["sae"]["sweep_points"])])


def test_records_carry_detection_scores_examples_and_exact_saelens_round_trips(tiny_records):
    for method, r in tiny_records.items():
        f1 = json.loads(r["f1_per_latent"])
        assert len(f1) == r["n_scored"] and all(0 <= v <= 1 for v in f1)
        assert len(json.loads(r["example_latents"])) <= TINY["n_examples"]
        assert r["saelens_round_trip_max_abs_diff"] == (None if method in ("mlp", "sparse_coding") else 0.0)


def test_selection_reads_only_validation_rows(tiny_source, tmp_path):
    """Scoring other held-out tokens changes held-out scores but not the validation numbers selection uses."""
    records = []
    for n_score_test in (120, 50):
        with ResultStore(tmp_path / f"{n_score_test}.db") as store:
            run_sweep(_sweep(tiny_source, methods=("sae_topk",), n_score_test=n_score_test), store)
            records.append(store.records(kind="activations")[0])
    assert records[0]["sweep_points"] == records[1]["sweep_points"]
    assert records[0]["explained_variance"] != records[1]["explained_variance"]


def _toml(path, source, grid: str) -> str:
    lines = [f'{name} = {json.dumps(value)}' for name, value in {**TINY, **source}.items()]
    path.write_text('name = "cli_real"\nkind = "activations"\n[fixed]\n' + "\n".join(lines) + f"\n[grid]\n{grid}\n")
    return str(path)


def test_gaptheory_run_and_table_on_an_activations_sweep_and_a_rerun_computes_nothing(tiny_source, tmp_path,
                                                                                      capsys):
    sweep = _toml(tmp_path / "tiny_real.toml", {**tiny_source, "method": "sae_topk", "sparsity_grid": "[2, 6]"},
                  "seed = [0, 1]")
    store = str(tmp_path / "real.db")
    for expected_ok in (2, 0):
        assert main(["run", sweep, "--store", store, "--workers", "1", "--json"]) == EXIT_OK
        outcome = json.loads(capsys.readouterr().out)
        assert (outcome["ok"], outcome["skipped"]) == (expected_ok, 2 - expected_ok)
    assert main(["table", store, "--group-by", "method", "--metrics", "mean_l0", "median_f1"]) == EXIT_OK
    table = capsys.readouterr().out
    assert "sae_topk" in table and "median_f1" in table


def test_the_script_is_a_thin_wrapper_over_run_and_table_plus_f1_against_the_sae(tiny_source, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "real_activations.py"
    spec = importlib.util.spec_from_file_location("real_activations", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sweep = _toml(tmp_path / "two.toml", {**tiny_source, "sparsity_grid": "[]"}, 'method = ["sae", "sae_topk"]')
    assert script.main(["--sweep", sweep, "--store", str(tmp_path / "r.db")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "| sae_topk" in out and "F1 sae_topk vs sae: Cliff's delta" in out


@pytest.mark.parametrize("fixed, named", [({"method": "best_subset"}, "best_subset"), ({"steps": 0}, "steps"),
                                          ({"sparsity_grid": "[2, 2]"}, "repeats"),
                                          ({"method": "sae_topk", "sparsity_grid": "[2.5]"}, "integers"),
                                          ({"site": "attn"}, "site")])
def test_bad_activations_sweeps_are_refused_before_anything_runs(fixed, named):
    with pytest.raises(ValueError, match=named):
        Sweep(name="bad", kind="activations", fixed={**TINY, **fixed}).tasks()


def test_the_example_sweep_expands_to_the_five_methods_at_matched_l0():
    from pathlib import Path

    from gaptheory.experiments.sweep import load_sweep

    tasks = load_sweep(Path(__file__).resolve().parents[1] / "examples" / "real_minilm.toml").tasks()
    assert [t.config["method"] for t in tasks] == list(METHODS)
    assert {(t.config["model"], t.config["corpus"], t.config["target_l0"]) for t in tasks} == {
        ("minilm", "lee_background", 32.0)}


def test_cli_refuses_an_activations_sweep_with_an_unknown_method(tmp_path, capsys):
    sweep = tmp_path / "bad.toml"
    sweep.write_text('name = "bad"\nkind = "activations"\n[fixed]\nmethod = "transcoder"\n')
    assert main(["run", str(sweep), "--store", str(tmp_path / "r.db")]) == EXIT_USAGE
    assert "transcoder" in capsys.readouterr().err
