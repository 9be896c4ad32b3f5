import json

import numpy as np
import pytest

from gaptheory import bench
from gaptheory.cli import main
from gaptheory.instances import make_instance
from gaptheory.solvers import lasso


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
    assert script.main(["--n-samples", "8", "--n-latents", "24", "--n-dims", "12", "--k", "2", "--cvxpy-rows", "3",
                        "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    solvers = {row["solver"] for row in result["rows"]}
    assert {"fista float64", "homotopy float64", "homotopy float32", "cvxpy/CLARABEL"} <= solvers
    batched = [row for row in result["rows"] if not row["solver"].startswith("cvxpy")]
    assert all(row["max_rel_objective_vs_cvxpy"] <= 1e-5 for row in batched)
