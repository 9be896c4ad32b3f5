"""Per-instance cvxpy vs the batched LASSO solvers (FISTA, homotopy) and scikit-learn, same instances.

Prints one table: seconds per instance, throughput ratio against the fastest cvxpy solver,
and the largest relative objective difference to cvxpy/Clarabel on the rows cvxpy solved.
The fuller benchmark (OMP, dense-phase GFLOP/s, the gap LP, scaling) is ``gaptheory bench``.

    python scripts/bench_solvers.py                       # B=1024, N=256, M=128, K=8, alpha=0.02
    python scripts/bench_solvers.py --B 256 --json
"""

from __future__ import annotations

import argparse
import json
import sys

from gaptheory import bench
from gaptheory._validation import parameter_defaults
from gaptheory.instances import make_instance
from gaptheory.report import tabulate
from gaptheory.solvers import lasso


def compare(args) -> dict:
    inst = make_instance(args.N, args.M, args.K, args.B, seed=args.seed,
                         nonnegative=not args.signed, magnitudes=(0.5, 1.5))
    X, D, alpha, nonneg = inst.X, inst.D, args.alpha, not args.signed
    batched = {
        f"{method} {dtype}": (lambda method=method, dtype=dtype: lasso(
            X, D, alpha, nonnegative=nonneg, method=method, dtype=dtype, device=args.device, return_info=True))
        for method, dtype in [("fista", "float64"), ("homotopy", "float64"), ("homotopy", "float32")]
    }
    contenders = dict(batched)
    reference = batched["homotopy float64"]()
    try:
        sk = bench.sklearn_lasso_at_its_best(X, D, alpha, nonnegative=nonneg, reference_objective=reference.objective)
        contenders[f"scikit-learn Lasso (tol={sk['tol']:g})"] = sk["fit"]
    except ImportError:
        print("scikit-learn not installed: skipping it", file=sys.stderr)
    timings, outputs = bench.interleaved(contenders, args.repeats, args.device)
    rows = slice(0, min(args.cvxpy_rows, len(X)))
    cvx = bench.cvxpy_lasso(X[rows], D, alpha, nonnegative=nonneg)
    solved = {name: v for name, v in cvx.items() if v["ok"]}
    if not solved:
        raise SystemExit(f"every cvxpy solver failed: {cvx}")
    fastest = min(solved, key=lambda name: solved[name]["per_instance_s"])
    judge = "CLARABEL" if "CLARABEL" in solved else fastest
    truth = solved[judge]["objective"]
    table = []
    for name, info in cvx.items():
        if info["ok"]:
            table.append({"solver": f"cvxpy/{name}", "per_instance_s": info["per_instance_s"],
                          "ratio_vs_cvxpy": solved[fastest]["per_instance_s"] / info["per_instance_s"],
                          "max_rel_objective_vs_cvxpy": bench._relative(info["objective"], truth)})
    for name, timing in timings.items():
        out = outputs[name]
        codes = out.codes if hasattr(out, "codes") else out
        objective = bench.lasso_objective(X[rows], D, codes[rows], alpha)
        per_instance = timing.wall / len(X)
        table.append({"solver": name, "per_instance_s": per_instance,
                      "ratio_vs_cvxpy": solved[fastest]["per_instance_s"] / per_instance,
                      "max_rel_objective_vs_cvxpy": bench._relative(objective, truth)})
    return {"B": len(X), "N": args.N, "M": args.M, "K": args.K, "alpha": alpha,
            "nonnegative": nonneg, "cvxpy_rows": rows.stop, "cvxpy_fastest": fastest, "agreement_solver": judge,
            "repeats": args.repeats, "rows": table}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = parameter_defaults(bench.BenchConfig)  # the sizes of `gaptheory bench`, one place
    for flag, help_text in (("B", "rows solved per batch"), ("N", "atoms"), ("M", "input dimension"),
                            ("K", "nonzeros per code")):
        parser.add_argument(f"--{flag}", type=int, default=defaults[flag], help=f"{help_text} (default {defaults[flag]})")
    parser.add_argument("--alpha", type=float, default=defaults["alpha"], help=f"LASSO weight (default {defaults['alpha']})")
    parser.add_argument("--signed", action="store_true", help="signed codes and LASSO (default nonnegative)")
    parser.add_argument("--cvxpy-rows", type=int, default=defaults["cvxpy_rows"],
                        help=f"rows solved by cvxpy (default {defaults['cvxpy_rows']})")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (default 3)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    result = compare(args)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"LASSO, B={result['B']}, N={result['N']}, M={result['M']}, K={result['K']}, alpha={result['alpha']}, "
          f"nonnegative={result['nonnegative']}; cvxpy on {result['cvxpy_rows']} rows, objectives vs "
          f"cvxpy/{result['agreement_solver']}")
    print(tabulate(["solver", "us/instance", f"x vs cvxpy/{result['cvxpy_fastest']}", "max rel obj diff"],
                   [[r["solver"], f"{r['per_instance_s'] * 1e6:,.1f}", f"{r['ratio_vs_cvxpy']:,.1f}",
                     f"{r['max_rel_objective_vs_cvxpy']:.1e}"] for r in result["rows"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
