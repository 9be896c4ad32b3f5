import json

import numpy as np
import pytest
import torch

from gaptheory import bench
from gaptheory.cli import main
from gaptheory.instances import make_instance
from gaptheory.solvers import lasso, omp

from conftest import least_squares_atol, sum_atol

#: How far the script's batched objectives may lie from cvxpy/Clarabel's: cvxpy's own
#: accuracy. Clarabel stops at 1e-8 absolute, ~3e-7 relative on these objectives (~4e-2), but
#: on cvxpy's conic reformulation of rows rescaled to max|x| in [0.5, 1), which no documented
#: tolerance ties to the LASSO objective; hence the margin. The rigorous check, through duality
#: gaps and cvxpy's own codes, is test_solvers.test_batched_lasso_agrees_with_cvxpy.
CVXPY_OBJECTIVE_RTOL = 1e-5


def test_bench_quick_runs_every_stage_and_its_accuracy_checks_pass(capsys):
    code = main(["bench", "--quick", "--json"])
    outcome = json.loads(capsys.readouterr().out)
    assert code == 0 and outcome["passed"] and outcome["quick"]
    assert outcome["checks"] and all(outcome["checks"].values())
    names = {t["target"].split(" vs ")[0] for t in outcome["targets"]}
    assert {"LASSO throughput", "OMP throughput"} <= names
    assert outcome["gap"]["available"] and np.isfinite(outcome["gap"]["exponent_in_n"])
    if "parallel" in outcome["gap"]:  # machines with more than one CPU
        assert outcome["gap"]["parallel"]["same_eps"] and outcome["gap"]["parallel"]["success"]
    assert {(row["solver"], row["B"]) for row in outcome["scaling"]} >= {("lasso", 32), ("omp", 64)}
    assert set(outcome["lasso"]["cvxpy"]) == set(bench.CVXPY_SOLVERS)
    assert [(p["N"], p["B"]) for p in outcome["versus"]] == [(48, 32)]
    assert {row["form"] for row in outcome["sae_scale"]} == {"gram", "direct"}
    assert any(t["target"].startswith("OMP float32 speed / float64 speed") for t in outcome["targets"])


def test_interleaved_times_every_contender_and_keeps_its_output():
    calls = []
    timings, outputs = bench.interleaved({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2},
                                         3, "cpu")
    assert calls == ["a", "b"] * 4  # one warm-up round, then round-robin
    assert outputs == {"a": 1, "b": 2}
    assert all(t.repeats == 3 and t.wall >= 0 for t in timings.values())


def test_peak_memory_sees_a_large_allocation():
    megabytes, how = bench.peak_memory(lambda: np.ones(64 * 2**20 // 8).sum(), "cpu")
    if how.startswith("ru_maxrss"):
        pytest.skip("only a lower bound is available on this platform")
    assert megabytes >= 48


def test_sklearn_lasso_is_timed_at_a_tol_that_reaches_the_promised_accuracy():
    pytest.importorskip("sklearn")
    inst = make_instance(40, 20, 3, 16, seed=4, nonnegative=True)
    reference = lasso(inst.X, inst.D, 0.02, nonnegative=True, return_info=True)
    best = bench.sklearn_lasso_at_its_best(inst.X, inst.D, 0.02, nonnegative=True,
                                           reference_objective=reference.objective)
    assert best["accurate"] and best["tol"] in bench.SKLEARN_TOLS
    error = np.max(np.abs(bench.lasso_objective(inst.X, inst.D, best["fit"](), 0.02) - reference.objective)
                   / reference.objective)
    assert error <= bench.OBJECTIVE_RTOL


def test_bench_solvers_script_prints_cvxpy_fista_homotopy_rows(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_solvers.py"
    spec = importlib.util.spec_from_file_location("bench_solvers", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--B", "8", "--N", "24", "--M", "12", "--K", "2", "--cvxpy-rows", "3",
                        "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    solvers = {row["solver"] for row in result["rows"]}
    assert {"fista float64", "homotopy float64", "homotopy float32", "cvxpy/CLARABEL"} <= solvers
    batched = [row for row in result["rows"] if not row["solver"].startswith("cvxpy")]
    assert all(row["max_rel_objective_vs_cvxpy"] <= CVXPY_OBJECTIVE_RTOL for row in batched)


def test_versus_times_every_contender_and_checks_agreement_with_spams_and_sparse_encode():
    pytest.importorskip("spams")
    pytest.importorskip("sklearn")
    point = bench.bench_versus(40, 20, 3, 24, alpha=0.02, magnitudes=(0.5, 1.5), seed=3, repeats=1, device="cpu")
    for dt in ("float32", "float64"):
        for problem in ("lasso", "omp"):
            for who in ("gaptheory", "spams", "sparse_encode"):
                assert point["per_instance_s"][f"{problem}/{who}/{dt}"] > 0
            assert np.isfinite(point["ratios"][f"{problem}/spams/{dt}"])
        assert point[f"lasso_objective_vs_spams/{dt}"] <= bench.AGREEMENT_RTOL
        assert point["sparse_encode"][f"lasso/{dt}"]["algorithm"] in bench.SPARSE_ENCODE_ALGORITHMS["lasso"]
    assert len(point["checks"]) == 8 and all(point["checks"].values())
    text = bench.render_versus([point])
    assert "SPAMS" in text and "obj vs SPAMS" in text and "same support as SPAMS 100.0%" in text


def test_versus_skips_spams_and_sparse_encode_with_a_note_when_they_are_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "spams", None)  # import spams raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn", None)
    point = bench.bench_versus(30, 15, 2, 8, alpha=0.02, magnitudes=(0.5, 1.5), seed=4, repeats=1, device="cpu")
    assert set(point["per_instance_s"]) == {f"{p}/gaptheory/{dt}" for p in ("lasso", "omp")
                                            for dt in ("float32", "float64")}
    assert any("SPAMS not importable" in note for note in point["notes"])
    assert any("scikit-learn not importable" in note for note in point["notes"])
    assert all(point["checks"].values()) and not point["ratios"]
    assert "SPAMS not importable" in bench.render_versus([point])


def test_sae_scale_reports_the_form_each_solver_used_and_its_peak_memory():
    rows = bench.bench_sae_scale(64, 32, 4, 8, alpha=0.02, seed=5, device="cpu", max_gram_bytes=64 * 64 * 4)
    forms = {row["solver"]: row["form"] for row in rows}
    assert forms == {"omp/float32": "gram", "omp/float64": "direct", "lasso/float64": "gram"}
    assert all(row["all_optimal"] and row["per_instance_s"] > 0 and row["peak_mib"] >= 0 for row in rows)


def _devices():
    cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, cuda])]


@pytest.mark.parametrize("device", _devices())
def test_batched_solvers_on_a_device_match_the_cpu_kernels(device):
    inst = make_instance(128, 64, 5, 96, seed=6, nonnegative=True, magnitudes=(0.5, 1.5))
    for dt in ("float32", "float64"):
        reference = omp(inst.X, inst.D, 5, dtype=dt, device="cpu")
        on_device = omp(inst.X, inst.D, 5, dtype=dt, device=device, return_info=True)
        np.testing.assert_array_equal(on_device.codes != 0, reference != 0)
        # float64 least-squares finish on the same support on both
        np.testing.assert_allclose(on_device.codes, reference, rtol=0, atol=least_squares_atol(inst.D, reference))
        certified = lasso(inst.X, inst.D, 0.02, nonnegative=True, dtype=dt, device=device, return_info=True)
        exact = lasso(inst.X, inst.D, 0.02, nonnegative=True, dtype="float64", device="cpu", return_info=True)
        assert certified.success
        # each within its certified gap of the optimum (plus the objectives' float64 round-off)
        slack = certified.duality_gap + exact.duality_gap + sum_atol(inst.N + inst.M, exact.objective)
        assert (np.abs(certified.objective - exact.objective) <= slack).all()
