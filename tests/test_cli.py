import json

from gaptheory.cli import EXIT_OK, EXIT_USAGE, main


def test_verify_passes_and_prints_one_json_document(capsys):
    assert main(["verify", "--json", "--only", "welch_bound", "omp_support_under_coherence"]) == EXIT_OK
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["passed"] and {c["name"] for c in outcome["checks"]} == {"welch_bound", "omp_support_under_coherence"}
    assert outcome["seed"] == 0 and "version" in outcome


def test_verify_table_lists_every_check(capsys):
    assert main(["verify", "--only", "welch_bound"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "welch_bound" in out and "PASS" in out and "1 passed, 0 failed" in out


def test_unknown_check_is_a_usage_error_without_traceback(capsys):
    assert main(["verify", "--only", "no_such_check"]) == EXIT_USAGE
    assert "unknown checks" in capsys.readouterr().err


def test_bad_flag_is_a_usage_error(capsys):
    assert main(["verify", "--frobnicate"]) == EXIT_USAGE
    assert main([]) == EXIT_USAGE


def test_stdout_to_stderr_keeps_c_level_writes_out_of_stdout(capfd):
    import os

    from gaptheory._io import stdout_to_stderr

    with stdout_to_stderr():
        os.write(1, b"Running HiGHS banner\n")  # what a C++ library does
    print("result")
    captured = capfd.readouterr()
    assert captured.out == "result\n"
    assert "HiGHS banner" in captured.err


def test_verify_json_stdout_is_one_document_even_with_solver_banners():
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "gaptheory", "verify", "--json", "--only", "gap_certified_where_inference_exact"],
        capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["passed"]


def test_a_figure_write_refused_midway_exits_2_naming_the_file_and_keeps_the_old_figure(tmp_path):
    """The kernel refuses the figure's bytes past half its size (RLIMIT_FSIZE, EFBIG, as a full disk refuses them)."""
    import os
    import resource
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from gaptheory.experiments.store import ResultStore

    def gap_records(seeds):
        return [{"key": f"g{M}-{s}", "status": "ok", "kind": "gap", "N": 8, "M": M, "K": 2, "seed": s,
                 "eps_star": 0.1 * M + 0.01 * s, "gap_lower_bound": 0.05 * M} for M in (2, 4, 6) for s in seeds]

    db, out = tmp_path / "r.db", tmp_path / "figures" / "gap.png"
    out.parent.mkdir()
    with ResultStore(db) as store:
        for record in gap_records(range(2)):
            store.put(record)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "MPLCONFIGDIR": str(tmp_path / "mpl")}  # matplotlib's caches, written by the first run only
    cmd = [sys.executable, "-m", "gaptheory", "plot", str(db), "--kind", "gap", "--out", str(out)]
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
    old = out.read_bytes()
    with ResultStore(db) as store:  # more seeds: a different figure
        for record in gap_records(range(2, 4)):
            store.put(record)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(old) // 2, len(old) // 2))

    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size)
    assert refused.returncode == EXIT_USAGE, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "ulimit -f" in lines[0], refused.stderr
    assert out.read_bytes() == old and os.listdir(out.parent) == ["gap.png"]  # no torn file, no temporary


def test_activations_extract_and_bench_flags_default_to_the_library_defaults():
    from gaptheory._validation import parameter_defaults
    from gaptheory.activations import extract_split
    from gaptheory.bench import BenchConfig
    from gaptheory.cli import build_parser

    args = build_parser({"activations"}).parse_args(["activations", "extract", "--out", "x.safetensors"])
    extraction = parameter_defaults(extract_split)
    names = ("model", "corpus", "split", "held_out_fraction", "layer", "site", "context_length", "batch_size", "device")
    assert {name: getattr(args, name) for name in names} == {name: extraction[name] for name in names}
    assert args.tokens == extraction["max_tokens"]
    assert build_parser({"bench"}).parse_args(["bench"]).device == parameter_defaults(BenchConfig)["device"]
