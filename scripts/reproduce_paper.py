"""Reproduce the paper's synthetic experiments, the l1 phase transition and the amortisation gap.

Runs every sweep through the same machinery as ``gaptheory run`` (one SQLite store,
resumable: rerun the script after an interruption and finished tasks are skipped), then
writes the tables and figures from the store alone:

    python scripts/reproduce_paper.py --quick            # minutes on 2 cores
    python scripts/reproduce_paper.py --out results      # the full grids
    python scripts/reproduce_paper.py --dask-local 8     # on a Dask LocalCluster
    python scripts/reproduce_paper.py --scheduler tcp://HOST:8786

Outputs in ``--out``: ``results.db``, ``phase.png``, ``gap.png``, ``compute_<setting>.png``,
and ``tables.md`` / ``tables.tex`` (mean +- std over seeds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from gaptheory import report
from gaptheory.experiments.methods import METHODS, SETTINGS
from gaptheory.experiments.runner import run_sweep
from gaptheory.experiments.store import ResultStore
from gaptheory.experiments.sweep import Sweep, load_sweep

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")

#: Hidden widths of the MLP encoders trained (one hidden layer each: "mlp_32", "mlp_256").
MLP_WIDTHS = (32, 256)


def methods_of(setting: str) -> list[str]:
    """The methods of :data:`gaptheory.experiments.methods.METHODS` that run in ``setting``; ``mlp``
    at each of :data:`MLP_WIDTHS`, and without ``best_subset`` (exact search, kept to examples/paper.toml)."""
    names = [name for name, method in METHODS.items() if setting in method.settings and name != "best_subset"]
    return [variant for name in names for variant in ([f"mlp_{w}" for w in MLP_WIDTHS] if name == "mlp" else [name])]


TRAINING_METRICS = ["test_mcc", "test_f1", "dict_recovery", "inference_flops_per_sample", "train_flops"]


def sweeps(quick: bool) -> list[Sweep]:
    """Every sweep of the reproduction; ``quick`` shrinks grids, seeds and steps."""
    phase = load_sweep(os.path.join(EXAMPLES, "phase_transition.toml"))
    gap = load_sweep(os.path.join(EXAMPLES, "gap.toml"))
    seeds = [0, 1] if quick else [0, 1, 2]
    if quick:
        phase = Sweep(name=phase.name, kind=phase.kind, fixed={**phase.fixed, "N": 50, "B": 5},
                      grid={"M_over_N": [0.1, 0.25, 0.4, 0.55, 0.7, 0.85], "K_over_M": [0.05, 0.2, 0.35, 0.5, 0.65, 0.8],
                            "seed": seeds})
        gap = Sweep(name=gap.name, kind=gap.kind, fixed={**gap.fixed, "B": 50, "sae_steps": 500},
                    grid={"M_over_N": [0.25, 0.5, 0.75], "K": [2, 3], "seed": seeds})
    out = [phase, gap]
    for setting in SETTINGS:
        methods = methods_of(setting)
        fixed = {"setting": setting, "N": 16, "M": 8, "K": 3, "steps": 300 if quick else 2000}
        if quick:
            fixed.update(n_train=512, n_val=256, n_test=512)
        out.append(Sweep(name=f"paper_{setting}", kind="training", fixed=fixed,
                         grid={"method": methods, "seed": seeds}))
    return out


def write_outputs(store: ResultStore, out: str) -> list[str]:
    """Tables and figures from the store; returns the files written."""
    written = []
    md, tex = ["# gaptheory reproduction tables (mean ± std over seeds)\n"], []
    phase = store.records(sweep="phase_transition")
    if phase:
        report.plot(phase, "phase", os.path.join(out, "phase.png"))
        written.append("phase.png")
    gap = store.records(sweep="gap")
    if gap:
        report.plot(gap, "gap", os.path.join(out, "gap.png"))
        written.append("gap.png")
        metrics = ["eps_star", "gap_lower_bound", "sae_worst_case", "per_sample_error"]
        md += ["## Amortisation gap (binary codes, N = 16)\n", report.format_table(gap, ["K", "M"], metrics), ""]
        tex.append(report.format_table(gap, ["K", "M"], metrics, latex=True, caption="Amortisation gap, N = 16"))
    for setting in SETTINGS:
        records = store.records(sweep=f"paper_{setting}")
        if not records:
            continue
        report.plot(records, "compute", os.path.join(out, f"compute_{setting}.png"))
        written.append(f"compute_{setting}.png")
        md += [f"## Setting: {setting} (N = 16, M = 8, K = 3)\n", report.format_table(records, ["method"], TRAINING_METRICS), ""]
        tex.append(report.format_table(records, ["method"], TRAINING_METRICS, latex=True, caption=f"Setting {setting}"))
    for name, text in (("tables.md", "\n".join(md)), ("tables.tex", "\n\n".join(tex))):
        with open(os.path.join(out, name), "w") as handle:
            handle.write(text + "\n")
        written.append(name)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids, 2 seeds, short training (minutes)")
    parser.add_argument("--out", default="results", help="output folder (default results/)")
    parser.add_argument("--only", nargs="+", help="run only these sweeps (names as in the store)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    where.add_argument("--scheduler", help="address of a running Dask scheduler")
    where.add_argument("--dask-local", type=int, help="start a Dask LocalCluster with N workers")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with ResultStore(os.path.join(args.out, "results.db")) as store:
        for sweep in sweeps(args.quick):
            if args.only and sweep.name not in args.only:
                continue
            start = time.perf_counter()
            summary = run_sweep(sweep, store, workers=args.workers, scheduler=args.scheduler,
                                dask_local=args.dask_local, progress=sys.stderr.isatty())
            print(f"{sweep.name}: {summary.total} tasks, {summary.skipped} skipped, {summary.ok} ok, "
                  f"{summary.failed} failed, {time.perf_counter() - start:.1f} s", flush=True)
        for failure in store.failures()[:10]:
            print(f"FAILED {failure['sweep']} {failure['key']}: {failure.get('error')}", file=sys.stderr)
        written = write_outputs(store, args.out)
    print("wrote " + ", ".join(os.path.join(args.out, name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
