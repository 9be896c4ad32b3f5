import json

from gaptheory.cli import EXIT_OK, EXIT_USAGE, main


def test_gap_prints_one_json_document_with_per_latent_certificates(capsys):
    assert main(["gap", "--N", "10", "--M", "5", "--K", "2", "--seed", "1", "--json"]) == EXIT_OK
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["passed"] and outcome["seed"] == 1 and len(outcome["latents"]) == 10
    assert all(row["certificate_valid"] and row["t2_bound"] <= row["eps"] + 1e-7 for row in outcome["latents"])
    assert abs(outcome["eps_star"] - max(row["eps"] for row in outcome["latents"])) == 0


def test_gap_table_says_certified(capsys):
    assert main(["gap", "--N", "6", "--M", "3", "--K", "2"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "CERTIFIED" in out and "eps* = max_i eps*_i" in out


def test_gap_without_t2_prints_null_bound(capsys):
    assert main(["gap", "--N", "6", "--M", "3", "--K", "1", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["t2_bound_max"] is None


def test_gap_rejects_k_above_n(capsys):
    assert main(["gap", "--N", "6", "--M", "3", "--K", "7"]) == EXIT_USAGE
    assert "1 <= K <= N" in capsys.readouterr().err


def test_gap_flags_default_to_the_problem_size_and_the_library_defaults():
    from gaptheory._validation import parameter_defaults
    from gaptheory.cli import build_parser
    from gaptheory.gap import GapProblemSize, certify_gap
    from gaptheory.instances import random_dictionary

    args = build_parser({"gap"}).parse_args(["gap"])
    certify = parameter_defaults(certify_gap)
    assert {"N": args.N, "M": args.M, "K": args.K} == parameter_defaults(GapProblemSize)
    assert args.kind == parameter_defaults(random_dictionary)["kind"]
    assert tuple(args.magnitudes) == certify["magnitudes"] and args.jobs == certify["n_jobs"]
