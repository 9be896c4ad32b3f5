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
