"""Five encoders on all-MiniLM-L6-v2 activations of the Lee corpus: a thin wrapper over the sweep.

Runs ``gaptheory run examples/real_minilm.toml`` (the ``real`` extra; resumable: a rerun computes
only what is missing) and ``gaptheory table`` on its store, then compares each method's per-latent
detection F1 with the ReLU SAE's from the stored records (two-sided Mann-Whitney U, Cliff's delta,
Holm-adjusted p). Run it niced, e.g.::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/real_activations.py --store real.db --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gaptheory.cli import main as gaptheory
from gaptheory.experiments.store import ResultStore
from gaptheory.experiments.sweep import load_sweep
from gaptheory.interpret import compare_scores, holm

SWEEP = Path(__file__).resolve().parents[1] / "examples" / "real_minilm.toml"
METRICS = ["selected", "mean_l0", "explained_variance", "median_f1", "chance_f1", "dead_latents", "steps_run",
           "train_flops", "inference_flops_per_token"]


def f1_against_the_sae(records: list[dict]) -> list[str]:
    """One line per method: its per-latent F1 (latents of every seed pooled) against the ReLU SAE's,
    Holm-adjusted over the methods."""
    f1: dict[str, list] = {}
    for r in records:
        f1.setdefault(r["method"], []).extend(json.loads(r["f1_per_latent"]))
    others = [m for m in f1 if m != "sae" and f1[m] and f1.get("sae")]
    raw = [compare_scores(f1[m], f1["sae"], name_a=m, name_b="sae") for m in others]
    adjusted = holm([c.p_value for c in raw]) if raw else []
    return [f"F1 {c.name_a} vs sae: Cliff's delta {c.cliffs_delta:+.3f}, Holm p {p:.3g} (n={c.n_a}, {c.n_b})"
            for c, p in zip(raw, adjusted)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=str(SWEEP), help="activations sweep file (default examples/real_minilm.toml)")
    parser.add_argument("--store", default="real.db", help="results store (default real.db)")
    parser.add_argument("--workers", default="1", help="local worker processes (default 1)")
    args = parser.parse_args(argv)

    code = gaptheory(["run", args.sweep, "--store", args.store, "--workers", args.workers])
    if code:
        return code
    name = load_sweep(args.sweep).name
    code = gaptheory(["table", args.store, "--sweep", name, "--group-by", "method", "--metrics", *METRICS])
    with ResultStore(args.store, readonly=True) as store:
        print("\n".join(f1_against_the_sae(store.records(sweep=name))))
    return code


if __name__ == "__main__":
    sys.exit(main())
