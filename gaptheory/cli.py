"""Command-line interface: ``gaptheory VERB [options]``.

stdout carries only the result (a table, or one JSON document with ``--json``);
progress goes to stderr. Exit codes: 0 all good, 1 a check failed, 2 bad usage or
input (a message, no traceback), 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` returns EXIT_USAGE."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")


# ----- verify ---------------------------------------------------------------------------


def _add_verify(subparsers) -> None:
    parser = subparsers.add_parser("verify", help="run every bound and solver cross-check")
    _common(parser)
    parser.add_argument("--full", action="store_true", help="also run the large sweeps (minutes)")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run only these checks")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.set_defaults(command=_run_verify)


def _run_verify(args, *, show_progress: bool) -> tuple[dict, str]:
    from . import verify

    if args.list:
        names = verify.available_checks(full=True)
        return {"checks": names, "passed": True}, "\n".join(names)
    rows = verify.run_checks(seed=args.seed, full=args.full, only=args.only, progress=show_progress)
    outcome = {
        "verb": "verify",
        "version": __version__,
        "seed": args.seed,
        "full": args.full,
        "checks": [row.to_dict() for row in rows],
        "passed": all(row.passed for row in rows),
    }
    return outcome, verify.render_table(rows)


# ----- main -----------------------------------------------------------------------------

#: Each entry adds one subcommand; its handler returns ``(outcome dict, text)``.
_SUBCOMMANDS = [_add_verify]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gaptheory", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gaptheory {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gaptheory`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "command", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    show_progress = sys.stderr.isatty() and not (getattr(args, "json", False) or getattr(args, "no_progress", False))
    try:
        outcome, text = args.command(args, show_progress=show_progress)
    except ValueError as err:
        print(f"gaptheory {args.verb}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"gaptheory {args.verb}: interrupted; rerun the same command to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(outcome, sort_keys=True, default=str) if getattr(args, "json", False) else text)
    return EXIT_OK if outcome.get("passed", True) else EXIT_CHECK_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
