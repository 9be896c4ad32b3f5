"""Table of the amortisation gap against M/N and K: exact eps*, the T2 bound, trained SAEs.

For each ratio M/N, sparsity K and seed it draws a Gaussian dictionary D (N, M), computes
eps* = max_i eps*_i of the best ReLU encoder on binary codes with at most K nonzeros
(``gaptheory.gap.certify_gap``: the T3 LP, its certificate and the exact error of the
encoder it returns; a row whose bracket fails is reported as an error), the T2 bound
max_i 1/(2(1 + beta_i)), and, when ``gaptheory.encoders`` is available, the worst-case
error over the whole code set (exact, ``gap.worst_case_error``) of the best of a few
ReLU SAEs trained by supervised regression of the codes with the decoder fixed to D.
By T3 no SAE can go below eps*; the script checks that and exits 1 otherwise.

Prints the table as Markdown and as LaTeX (booktabs) through ``gaptheory.report.format_table``
(mean ± std over seeds).

    python scripts/gap_table.py --N 12 --ratios 0.25 0.5 0.75 1.0 --K 1 2 3 --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from gaptheory.gap import certify_gap, enumerate_codes, worst_case_error
from gaptheory.instances import random_dictionary
from gaptheory.report import format_table

#: An SAE may match eps* up to LP and float32 round-off; below eps* by more is a bug.
SAE_BELOW_EPS_ATOL = 1e-5
#: Learning rates tried per SAE; the best worst-case error over them is reported.
LEARNING_RATES = (1e-2, 3e-3)


def best_sae_worst_case(D: np.ndarray, k: int, *, steps: int, seed: int) -> float | None:
    """Smallest exact worst-case error over the code set among SAEs trained on every code."""
    try:
        from gaptheory.encoders import SAEConfig, SparseAutoencoder
        from gaptheory.training import TrainConfig, train
    except ImportError:
        return None
    n_latents, n_dims = D.shape
    Z = enumerate_codes(n_latents, k)
    X = Z @ D
    best = np.inf
    for lr in LEARNING_RATES:
        sae = SparseAutoencoder(SAEConfig(M=n_dims, N=n_latents, l1_coefficient=0.0), seed=seed).fix_decoder(D)
        train(sae, X, TrainConfig(steps=steps, lr=lr, seed=seed, progress=False), codes=Z)
        best = min(best, float(worst_case_error(sae, D, k).max()))
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=12, help="latents (default 12; codes are enumerated for the SAEs)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0], help="values of M/N")
    parser.add_argument("--K", type=int, nargs="+", default=[1, 2, 3], help="sparsity levels")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="dictionary seeds")
    parser.add_argument("--steps", type=int, default=1500, help="SAE training steps (default 1500)")
    parser.add_argument("--no-sae", action="store_true", help="skip training SAEs")
    args = parser.parse_args(argv)

    records, failures = [], []
    metrics = "eps_star,t2_bound" + ("" if args.no_sae else ",sae_worst_case")
    for ratio in args.ratios:
        n_dims = max(1, round(ratio * args.N))
        for k in args.K:
            for seed in args.seeds:
                D = random_dictionary(args.N, n_dims, seed=seed)
                report = certify_gap(D, k)
                if not report.passed:
                    failures.append(f"M/N={ratio} K={k} seed={seed}: eps* not certified")
                t2 = float(np.nanmax(report.t2_bound)) if k >= 2 else None
                record = {"M/N": ratio, "K": k, "seed": seed, "eps_star": report.result.worst, "t2_bound": t2,
                          "metrics": metrics}
                if not args.no_sae:
                    sae = best_sae_worst_case(D, k, steps=args.steps, seed=seed)
                    record["sae_worst_case"] = sae
                    if sae is not None and sae < report.result.worst - SAE_BELOW_EPS_ATOL:
                        failures.append(f"M/N={ratio} K={k} seed={seed}: SAE {sae:.6g} below eps* {report.result.worst:.6g}")
                records.append(record)
                print(f"M/N={ratio} K={k} seed={seed}: {record}", file=sys.stderr)
    caption = (f"Amortisation gap, N={args.N}, binary codes with at most K nonzeros, Gaussian D; "
               f"mean and std over seeds {args.seeds}")
    print(format_table(records, ["M/N", "K"]))
    print()
    print(format_table(records, ["M/N", "K"], latex=True, caption=caption))
    for failure in failures:
        print("FAILED", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
