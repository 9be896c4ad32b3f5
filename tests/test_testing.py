"""check_bound finds and shrinks counterexamples to false bounds and accepts true ones."""

import math
import textwrap

import numpy as np
import pytest

from gaptheory import cli
from gaptheory.instances import make_instance, mutual_coherence, spark, welch_bound
from gaptheory.solvers import omp
from gaptheory.strategies import instances
from gaptheory.testing import BoundReport, check_bound

EPS = np.finfo(np.float64).eps


def omp_error_bound(inst):
    """(max |OMP code - true code|, its round-off allowance).

    Under the coherence condition the support Gram matrix has eigenvalues in
    [1 - (K-1) mu, 1 + (K-1) mu] with (K-1) mu < 1/2 (Gershgorin), so the least-squares
    refit has condition number below 3 and errs by at most about 3 (K + M) eps |z|; the
    allowance is 64 times that.
    """
    error = float(np.max(np.abs(omp(inst.X, inst.D, inst.K) - inst.Z)))
    return error, 64 * 3 * (inst.K + inst.M) * EPS * float(np.max(np.abs(inst.Z)))


def test_a_true_bound_holds_on_every_instance_drawn():
    # Tropp (2004), Theorem A: OMP recovers every K-sparse code when K < (1 + 1/mu)/2.
    report = check_bound(
        omp_error_bound,
        strategy=instances(N=(3, 20), M=(2, 10), K=(1, 3), coherence_condition=True),
        max_examples=60,
    )
    assert report.passed and report.counterexample is None
    assert report.examples == 60 and report.worst_margin >= 0


def test_a_false_bound_returns_its_shrunk_counterexample():
    # "Every dictionary has coherence at most 1/2" fails already for the smallest N drawn.
    report = check_bound(lambda inst: (mutual_coherence(inst.D), 0.5), strategy=instances(N=(3, 10), M=(2, 4)),
                         max_examples=50, name="coherence_at_most_half")
    assert not report.passed and report.counterexample.N == 3 and report.counterexample.M == 2
    assert report.lhs == mutual_coherence(report.counterexample.D) > 0.5 == report.rhs
    assert report.worst_margin == 0.5 - report.lhs  # the same subtraction, on the same example
    assert "coherence_at_most_half: fails on make_instance(N=3" in str(report)


def omp_below_half_spark(inst):
    """False claim: OMP recovers every code that is the unique sparsest one (K < spark/2)."""
    if not inst.K < spark(inst.D) / 2:
        return 0.0, 1.0  # outside the claim's hypothesis
    return omp_error_bound(inst)


def test_omp_below_half_spark_is_false_and_the_counterexample_reproduces():
    report = check_bound(omp_below_half_spark, strategy=instances(N=(3, 12), M=(2, 8), K=(1, 3)), max_examples=200)
    assert not report.passed
    inst = report.counterexample
    assert inst.K >= 2  # K = 1 below half the spark is recovered by OMP
    rebuilt = eval(repr(inst), {"make_instance": make_instance})
    lhs, rhs = omp_below_half_spark(rebuilt)
    assert lhs > rhs and (lhs, rhs) == (report.lhs, report.rhs)


def test_same_seed_same_report_and_nan_or_crash_is_a_failure():
    strategy = instances(N=(3, 8), M=(2, 4))
    false = lambda inst: (mutual_coherence(inst.D), welch_bound(inst.N, inst.M))  # noqa: E731 (backwards)
    first, second = (check_bound(false, strategy=strategy, max_examples=30, seed=5) for _ in range(2))
    assert repr(first) == repr(second) and not first.passed
    nan = check_bound(lambda inst: (math.nan, 1.0), strategy=strategy, max_examples=5)
    assert not nan.passed and math.isnan(nan.worst_margin)
    crash = check_bound(lambda inst: 1 / 0, strategy=strategy, max_examples=5)
    assert not crash.passed and crash.error.startswith("ZeroDivisionError")
    not_a_pair = check_bound(lambda inst: 3.0, strategy=strategy, max_examples=5)
    assert "pair (lhs, rhs)" in not_a_pair.error


def test_rtol_admits_round_off_only():
    strategy = instances(N=(3, 6), M=(2, 3))
    at_equality = lambda inst: (1.0 + 2 * EPS, 1.0)  # noqa: E731
    assert not check_bound(at_equality, strategy=strategy, max_examples=3).passed
    assert check_bound(at_equality, strategy=strategy, max_examples=3, rtol=4 * EPS).passed


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(strategy="instances"), TypeError),
        (dict(max_examples=0), ValueError),
        (dict(seed=-1), ValueError),
        (dict(rtol=-1e-3), ValueError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error):
    args = dict(strategy=instances(), max_examples=5) | kwargs
    with pytest.raises(error):
        check_bound(lambda inst: (0.0, 1.0), **args)
    assert isinstance(check_bound(lambda inst: (0.0, 1.0), strategy=instances(), max_examples=2), BoundReport)


USER_CHECKS = textwrap.dedent(
    """
    from gaptheory.instances import mutual_coherence, welch_bound
    from gaptheory.strategies import instances
    from gaptheory.testing import bound_check

    # rtol (M + 4) eps for M <= 4: coherence's M-term dot products and the bound's few roundings
    @bound_check("user_welch", strategy=instances(N=(3, 10), M=(2, 4)), max_examples=20, rtol=8 * 2.3e-16)
    def welch(instance):
        "mu(D) >= Welch(N, M)"
        return welch_bound(instance.N, instance.M), mutual_coherence(instance.D)
    """
)


def test_verify_checks_runs_a_users_file_beside_the_built_in_checks(tmp_path, capsys):
    good = tmp_path / "bounds.py"
    good.write_text(USER_CHECKS)
    assert cli.main(["verify", "--checks", str(good), "--only", "user_welch", "welch_bound"]) == 0
    out = capsys.readouterr().out
    assert "user_welch" in out and "welch_bound" in out and "2 passed, 0 failed" in out

    false = tmp_path / "false.py"
    false.write_text(USER_CHECKS.replace("welch_bound(instance.N, instance.M), mutual_coherence(instance.D)",
                                         "mutual_coherence(instance.D), 0.5").replace("user_welch", "user_half"))
    assert cli.main(["verify", "--checks", str(false), "--only", "user_half"]) == 1
    assert "fails on make_instance(N=3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), ("this is not python(", "importing it failed"), ("x = 1\n", "registers no checks")],
)
def test_verify_checks_refuses_a_bad_file_with_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "checks.py"
    if content is not None:
        path.write_text(content)
    assert cli.main(["verify", "--checks", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and str(path) in err


def test_verify_checks_import_error_is_one_line(tmp_path, capsys):
    path = tmp_path / "checks.py"
    path.write_text("raise RuntimeError('first line\\nsecond line')\n")
    assert cli.main(["verify", "--checks", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "RuntimeError: first line second line" in err


def test_verify_checks_refuse_a_name_taken_by_another_check(tmp_path, capsys):
    clash = tmp_path / "clash.py"
    clash.write_text(USER_CHECKS.replace("user_welch", "welch_bound"))
    assert cli.main(["verify", "--checks", str(clash), "--only", "welch_bound"]) == 2
    assert "['welch_bound']" in capsys.readouterr().err
    good = tmp_path / "bounds.py"
    good.write_text(USER_CHECKS)
    assert cli.main(["verify", "--checks", str(good), "--checks", str(good), "--only", "user_welch"]) == 2
    assert "['user_welch']" in capsys.readouterr().err
