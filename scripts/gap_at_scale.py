"""eps* for every latent of a random dictionary in one call, then the exact checks of all certificates.

    python scripts/gap_at_scale.py --N 4096 --M 512 --K 8 --jobs 2     # docs/results.md: 18.1 + 12.2 min
    python scripts/gap_at_scale.py --N 512 --M 256 --K 4 --jobs 2      # 19 s + 23 s

Times ``relu_minimax_gap(D, K, n_jobs=jobs)`` and ``result.verify(n_jobs=jobs)`` on
``random_dictionary(N, M, seed)`` (binary codes), after a one-latent warm-up that compiles the
kernels, and prints one JSON document: wall seconds of each, eps* (min / median / max), how many
latents were proven exact and how, the smallest certified lower bound, the bytes of the stored
certificate codes, and the peak resident memory of this process and of its largest worker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

from gaptheory.gap import relu_minimax_gap
from gaptheory.instances import random_dictionary


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def gap_at_scale(n_latents: int, n_dims: int, k: int, *, jobs: int = 1, seed: int = 0) -> dict:
    D = random_dictionary(n_latents, n_dims, seed=seed)
    relu_minimax_gap(D, k, latents=[0]).verify()  # warm-up: numba compiles outside the timings
    start = time.perf_counter()
    result = relu_minimax_gap(D, k, n_jobs=jobs)
    solved = time.perf_counter() - start
    start = time.perf_counter()
    checks = result.verify(n_jobs=jobs)
    verified = time.perf_counter() - start
    reasons = [check.reason for check in checks]
    return {
        "N": n_latents, "M": n_dims, "K": k, "jobs": jobs, "seed": seed,
        "solve_s": solved, "verify_s": verified, "success": bool(result.success),
        "eps": [float(np.min(result.eps)), float(np.median(result.eps)), float(np.max(result.eps))],
        "exact": int(np.sum(result.exact)), "reasons": {reason: reasons.count(reason) for reason in sorted(set(reasons))},
        "certified_min": float(np.min(result.certified_lower)),
        "code_MB": sum(c.codes.data.nbytes + c.codes.indices.nbytes + c.codes.indptr.nbytes
                       for c in result.certificates) / 1e6,
        "peak_MB": _peak_mb(resource.RUSAGE_SELF), "peak_worker_MB": _peak_mb(resource.RUSAGE_CHILDREN),
        "load_average": os.getloadavg(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=512)
    parser.add_argument("--M", type=int, default=256)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(gap_at_scale(args.N, args.M, args.K, jobs=args.jobs, seed=args.seed), indent=1))


if __name__ == "__main__":
    main()
