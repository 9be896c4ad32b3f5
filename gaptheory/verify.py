"""``gaptheory verify``: every bound and cross-check, run on random instances.

Each check is a function registered with :func:`check`; it draws its own instances
from the seed it is given, and returns a :class:`CheckResult` row: how many instances
it tried, the worst value it saw, the bound that value must respect, and whether it
did. The default run is sized for well under two minutes on 2 cores; ``full=True``
(``gaptheory verify --full``) runs larger sweeps.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .bounds import (
    RIP_THRESHOLD,
    check_gaussian_tail_integral,
    check_stationarity,
    check_welch_equality_general,
    check_welch_equality_simplex,
    statistical_dimension,
    t2_proof_lp,
)
from .gap import (
    atom_l1_cost,
    certify_gap,
    code_set_error,
    enumerate_codes,
    gap_lower_bound,
    relu_minimax_gap,
    relu_minimax_gap_codes,
    verify_certificate,
    worst_case_error,
)
from .instances import (
    Instance,
    coherence_recovery_sparsity,
    make_instance,
    mutual_coherence,
    normalize_atoms,
    random_dictionary,
    rip_constant,
    sparse_codes,
    spark,
    welch_bound,
)
from .report import tabulate
from .solvers import basis_pursuit, basis_pursuit_lp, best_subset, lasso, omp

#: LASSO objectives of FISTA and cvxpy must agree to this relative accuracy.
OBJECTIVE_RTOL = 1e-6
#: Exact recovery means every coordinate within this of the true code.
RECOVERY_ATOL = 1e-6
#: Slack allowed for inequalities between two float64 computations of the same quantity.
FLOAT_SLACK = 1e-12


@dataclass(frozen=True)
class CheckResult:
    """One row of the verification table.

    ``worst`` is compared with ``bound`` through ``relation`` (``"<="`` means the
    worst value seen must be at most the bound).
    """

    name: str
    description: str
    instances: int
    worst: float
    relation: str
    bound: float
    passed: bool
    seconds: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("worst", "bound"):
            if not math.isfinite(out[key]):
                out[key] = str(out[key])  # JSON has no inf/nan
        return out


@dataclass(frozen=True)
class _Registered:
    name: str
    description: str
    function: Callable
    full_only: bool


_REGISTRY: list[_Registered] = []


def check(name: str, description: str, *, full_only: bool = False):
    """Register ``function(seed, full) -> (instances, worst, relation, bound[, detail])``."""

    def decorate(function):
        _REGISTRY.append(_Registered(name, description, function, full_only))
        return function

    return decorate


def available_checks(full: bool = False) -> list[str]:
    """Names of the checks that a run with ``full`` would execute."""
    return [r.name for r in _REGISTRY if full or not r.full_only]


def _compare(worst: float, relation: str, bound: float) -> bool:
    if relation == "<=":
        return worst <= bound
    if relation == ">=":
        return worst >= bound
    if relation == "==":
        return worst == bound
    raise ValueError(f"unknown relation {relation!r}")


def load_user_checks(path) -> list:
    """Import the Python file at ``path`` and return the bound checks it registers.

    The file registers checks with :func:`gaptheory.testing.bound_check`; each becomes a
    row of ``gaptheory verify --checks FILE.py`` beside the built-in checks.

    Raises
    ------
    ValueError
        When the file is missing, is not Python, fails to import (the error is named), or
        registers no check.
    """
    import importlib.util
    import os

    from . import testing

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"--checks {path}: no such file; pass the path of a Python file of bound checks.")
    spec = importlib.util.spec_from_file_location(f"gaptheory_user_checks_{abs(hash(path))}", path)
    if spec is None or spec.loader is None or not path.endswith(".py"):
        raise ValueError(f"--checks {path}: not a Python file; pass a .py file that uses gaptheory.testing.bound_check.")
    before = len(testing.REGISTERED_BOUNDS)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # any failure of the user's file is a bad input file
        message = " ".join(f"{type(err).__name__}: {err}".split())  # one line, as the CLI prints it
        raise ValueError(f"--checks {path}: importing it failed ({message}); fix the file.") from err
    registered = testing.REGISTERED_BOUNDS[before:]
    if not registered:
        raise ValueError(f"--checks {path}: registers no checks; decorate a function with @gaptheory.testing.bound_check(...).")
    return list(registered)


def _bound_row(registered, seed: int) -> CheckResult:
    start = time.perf_counter()
    try:
        report = registered.run(seed=seed)
    except Exception as err:  # e.g. a strategy whose filter rejects everything: a failed row
        return CheckResult(
            name=registered.name, description=registered.description, instances=0, worst=math.nan,
            relation=">=", bound=0.0, passed=False, seconds=time.perf_counter() - start,
            detail=f"{type(err).__name__}: {err}",
        )
    return CheckResult(
        name=registered.name, description=registered.description, instances=report.examples,
        worst=report.worst_margin, relation=">=", bound=0.0, passed=report.passed,
        seconds=time.perf_counter() - start, detail="" if report.passed else str(report),
    )


def run_checks(*, seed: int = 0, full: bool = False, only=None, progress: bool = False, user_checks=()) -> list[CheckResult]:
    """Run the registered checks and return their rows.

    Parameters
    ----------
    seed : int
        Master seed; check ``i`` draws its instances from ``seed + i``-derived seeds.
    full : bool
        Also run the larger sweeps marked ``full_only``, and ask each check for its
        larger grid.
    only : iterable of str, optional
        Run only the checks with these names.
    progress : bool
        Show a tqdm bar on stderr.
    user_checks : sequence of gaptheory.testing.RegisteredBound
        Bound checks from :func:`load_user_checks`, run after the built-in ones; a row's
        ``worst`` is the smallest margin ``rhs - lhs`` seen, which must be ``>= 0``.
    """
    names = [r.name for r in _REGISTRY] + [u.name for u in user_checks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"user checks {repeated} repeat the name of another check (built-in or user); rename them.")
    selected = [r for r in _REGISTRY if (full or not r.full_only) and (only is None or r.name in set(only))]
    user_checks = [u for u in user_checks if only is None or u.name in set(only)] if user_checks else []
    if only is not None:
        known = [r.name for r in _REGISTRY] + [u.name for u in user_checks]
        unknown = set(only) - set(known)
        if unknown:
            raise ValueError(f"unknown checks {sorted(unknown)}; choose from {known}.")
    from tqdm.auto import tqdm

    rows = []
    for index, registered in enumerate(tqdm(selected, disable=not progress, desc="verify", unit="check")):
        start = time.perf_counter()
        try:
            outcome = registered.function(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]), full)
            instances, worst, relation, bound, *rest = outcome
            detail = rest[0] if rest else ""
            passed = _compare(float(worst), relation, float(bound))
        except Exception as err:  # a crash is a failed check, reported, never hidden
            instances, worst, relation, bound, passed = 0, math.nan, "<=", math.nan, False
            detail = f"{type(err).__name__}: {err}"
        rows.append(
            CheckResult(
                name=registered.name, description=registered.description, instances=int(instances),
                worst=float(worst), relation=relation, bound=float(bound), passed=bool(passed),
                seconds=time.perf_counter() - start, detail=detail,
            )
        )
    for index, registered in enumerate(user_checks, start=len(selected)):
        rows.append(_bound_row(registered, int(np.random.SeedSequence([seed, index]).generate_state(1)[0])))
    return rows


def render_table(rows: list[CheckResult]) -> str:
    """The verification table as aligned plain text."""
    out = [tabulate(("check", "instances", "worst", "bound", "status", "seconds"),
                    [(r.name, r.instances, f"{r.worst:.3g}", f"{r.relation} {r.bound:.3g}",
                      "PASS" if r.passed else "FAIL", f"{r.seconds:.1f}") for r in rows])]
    failed = [r for r in rows if not r.passed]
    for r in failed:
        out.append(f"FAILED {r.name}: {r.description}. {r.detail}")
    out.append(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Foundation checks: instances and solvers.
# --------------------------------------------------------------------------------------


def _sizes(full: bool):
    """(N, M) pairs with N > M used by the randomized checks."""
    small = [(8, 4), (16, 8), (24, 12), (40, 20), (64, 32)]
    return small + ([(128, 64), (256, 128), (100, 90)] if full else [])


@check("welch_bound", "mu(D) - Welch(N, M) >= 0 for every drawn dictionary")
def _check_welch(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    slack = []
    for n_latents, n_dims in _sizes(full):
        for kind in ("gaussian", "rademacher", "dct"):
            D = random_dictionary(n_latents, n_dims, kind, seed=rng)
            slack.append(mutual_coherence(D) - welch_bound(n_latents, n_dims))
    return len(slack), min(slack), ">=", -FLOAT_SLACK


@check("spark_coherence_bound", "spark(D) - (1 + 1/mu) >= 0 (Donoho-Elad), exact spark")
def _check_spark(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    slack = []
    shapes = [(6, 3), (8, 4), (10, 5), (9, 6)] + ([(12, 6), (14, 7)] if full else [])
    for n_latents, n_dims in shapes:
        for kind in ("gaussian", "rademacher"):
            D = random_dictionary(n_latents, n_dims, kind, seed=rng)
            slack.append(spark(D) - (1 + 1 / mutual_coherence(D)))
    return len(slack), min(slack), ">=", -FLOAT_SLACK


@check("rip_sampled_below_exact", "sampled RIP lower bound - exact delta_K <= 0")
def _check_rip(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    excess = []
    for n_latents, n_dims in [(12, 6), (16, 8), (20, 10)] + ([(24, 12)] if full else []):
        D = random_dictionary(n_latents, n_dims, seed=rng)
        for k in (2, 3):
            excess.append(rip_constant(D, k, "sampled", n_subsets=200, seed=rng) - rip_constant(D, k))
    return len(excess), max(excess), "<=", 0.0


@check("fista_matches_cvxpy", "relative LASSO objective gap |FISTA - cvxpy| / cvxpy")
def _check_fista(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    worst, count = 0.0, 0
    for n_latents, n_dims in _sizes(full)[: 4 if not full else None]:
        for nonnegative in (False, True):
            inst = make_instance(n_latents, n_dims, max(1, n_dims // 4), 8, seed=rng, nonnegative=nonnegative)
            alpha = float(rng.uniform(0.01, 0.3))
            exact = lasso(inst.X, inst.D, alpha, method="cvxpy", nonnegative=nonnegative, return_info=True)
            fast = lasso(inst.X, inst.D, alpha, nonnegative=nonnegative, return_info=True, device="cpu")
            worst = max(worst, float(np.max(np.abs(fast.objective - exact.objective) / exact.objective)))
            count += 1
    return count, worst, "<=", OBJECTIVE_RTOL


def coherent_instances(seed: int, full: bool):
    """Instances whose K satisfies the coherence condition K < (1 + 1/mu) / 2.

    Spikes+DCT dictionaries (mu ~ sqrt(2/M)) admit K up to about sqrt(M/8); Gaussian
    dictionaries with M close to N admit small K. Yields ``(instance, threshold)``.
    """
    rng = np.random.default_rng(seed)
    specs = [(32, 16, "identity_dct"), (64, 32, "identity_dct"), (128, 64, "identity_dct"), (24, 20, "gaussian")]
    if full:
        specs += [(256, 128, "identity_dct"), (512, 256, "identity_dct")]
    for n_latents, n_dims, kind in specs:
        D = random_dictionary(n_latents, n_dims, kind, seed=rng)
        threshold = coherence_recovery_sparsity(D)
        k_max = math.ceil(threshold) - 1  # largest integer K strictly below the threshold
        if k_max < 1:
            continue
        for nonnegative in (True, False):
            Z = sparse_codes(64 if full else 24, n_latents, k_max, seed=rng, nonnegative=nonnegative)
            yield Instance(D=D, Z=Z, X=Z @ D, K=k_max, kind=kind, nonnegative=nonnegative), threshold


@check("bp_recovers_under_coherence", "max |BP(x) - z| when K < (1 + 1/mu)/2")
def _check_bp(seed: int, full: bool):
    worst, count = 0.0, 0
    for inst, _ in coherent_instances(seed, full):
        codes = basis_pursuit(inst.X, inst.D)
        worst = max(worst, float(np.abs(codes - inst.Z).max()))
        count += 1
    return count, worst, "<=", RECOVERY_ATOL


@check("omp_support_under_coherence", "rows where OMP misses the true support when K < (1 + 1/mu)/2")
def _check_omp(seed: int, full: bool):
    wrong, count = 0, 0
    for inst, _ in coherent_instances(seed, full):
        codes = omp(inst.X, inst.D, inst.K, device="cpu")
        wrong += int(((codes != 0) != (inst.Z != 0)).any(axis=1).sum())
        count += 1
    return count, wrong, "<=", 0


@check("best_subset_recovers_below_half_spark",
       "max |best_subset(x) - z| when K < spark(D)/2 (exact spark; unique sparsest code, Donoho-Elad)")
def _check_best_subset(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    worst, count = 0.0, 0
    shapes = [(10, 5), (12, 6), (16, 8)] + ([(20, 8), (18, 9)] if full else [])
    for n_latents, n_dims in shapes:
        for nonnegative in (False, True):
            D = random_dictionary(n_latents, n_dims, seed=rng)
            k = math.ceil(spark(D) / 2) - 1  # the largest K with K < spark/2: beyond any coherence guarantee
            Z = sparse_codes(40, n_latents, k, seed=rng, nonnegative=nonnegative)
            codes = best_subset(Z @ D, D, k, nonnegative=nonnegative, device="cpu")
            worst = max(worst, float(np.abs(codes - Z).max()))
            count += 1
    return count, worst, "<=", RECOVERY_ATOL


# --------------------------------------------------------------------------------------
# Theory checks (gaptheory.gap, gaptheory.bounds; proofs/T1..T4): the amortisation gap.
# --------------------------------------------------------------------------------------


#: Two LP optima (HiGHS feasibility tolerance 1e-9, |u| up to ~10) agree to this.
LP_ATOL = 1e-7
#: "eps* > 0" must hold by a margin far above LP round-off (1e-9), so a zero is never
#: mistaken for a gap; generic overcomplete dictionaries give eps* of order 0.1.
GAP_POSITIVE_MIN = 1e-6
#: BP solved by HiGHS counts as a recovery when every entry is within this of the truth
#: (relative to max(1, |z|_inf)); HiGHS meets 1e-7 primal feasibility, failures are O(1).
PT_SUCCESS_RTOL = 1e-5


def _small_gap_instances(seed: int, full: bool):
    """(D, K) with N <= 9, so that every binary code can be enumerated."""
    rng = np.random.default_rng(seed)
    shapes = [(6, 3, 2), (7, 4, 2), (8, 4, 3), (9, 5, 2)] + ([(9, 4, 3), (9, 6, 4), (8, 2, 2)] if full else [])
    for n_latents, n_dims, k in shapes:
        for kind in ("gaussian", "rademacher") + (("dct",) if full else ()):
            yield random_dictionary(n_latents, n_dims, kind, seed=rng), k


@check("t2_below_t3", "T2 bound 1/(2(1+beta_i)) - eps*_i <= 0 on every latent (proofs/T2)")
def _check_t2_below_t3(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    shapes = [(8, 4, 2), (12, 6, 3), (16, 8, 2), (24, 12, 4)] + ([(48, 24, 3), (64, 40, 4)] if full else [])
    excess, count = -math.inf, 0
    for n_latents, n_dims, k in shapes:
        for kind in ("gaussian", "rademacher"):
            D = random_dictionary(n_latents, n_dims, kind, seed=rng)
            excess = max(excess, float(np.max(gap_lower_bound(D) - relu_minimax_gap(D, k).eps)))
            count += 1
    return count, excess, "<=", LP_ATOL


@check("t3_compact_equals_enumeration", "|compact LP - enumeration LP| over all codes, binary and box (proofs/T3)")
def _check_compact_vs_enumeration(seed: int, full: bool):
    worst, count = 0.0, 0
    for D, k in _small_gap_instances(seed, full):
        for magnitudes in ((1.0, 1.0), (1.0, 2.0)):
            compact = relu_minimax_gap(D, k, magnitudes=magnitudes)
            enumerated = relu_minimax_gap_codes(D, enumerate_codes(D.shape[0], k, magnitudes=magnitudes))
            exact = compact.lp_exact  # box sets: equal where eps* < lo (always for binary codes)
            if magnitudes == (1.0, 1.0) and not exact.all():
                return count, math.inf, "<=", LP_ATOL, "binary codes gave eps* >= 1, impossible by T3"
            worst = max(worst, float(np.abs(compact.eps - enumerated.eps)[exact].max(initial=0.0)))
            count += 1
    return count, worst, "<=", LP_ATOL


@check("t3_encoder_attains_eps", "max_i |error of the LP encoder on every enumerated code - eps*_i|")
def _check_encoder_attains(seed: int, full: bool):
    worst, count = 0.0, 0
    for D, k in _small_gap_instances(seed, full):
        result = relu_minimax_gap(D, k)
        codes = enumerate_codes(D.shape[0], k)
        enumerated = code_set_error(result.encoder, D, codes)
        closed_form = worst_case_error(result.encoder, D, k)
        worst = max(worst, float(np.abs(enumerated - result.eps).max()), float(np.abs(closed_form - result.eps).max()))
        count += 1
    return count, worst, "<=", LP_ATOL


@check("t3_certificates_verify", "max_i eps*_i - (dual lower bound re-derived without the solver)")
def _check_certificates(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    worst, count = 0.0, 0
    shapes = [(8, 4, 2), (16, 8, 3), (32, 16, 4)] + ([(64, 32, 4), (128, 64, 5)] if full else [])
    for n_latents, n_dims, k in shapes:
        D = random_dictionary(n_latents, n_dims, seed=rng)
        result = relu_minimax_gap(D, k)
        for certificate in result.certificates:
            outcome = verify_certificate(certificate, D, k=k)
            worst = max(worst, result.eps[certificate.latent] - outcome.lower_bound)
        count += 1
    return count, worst, "<=", LP_ATOL


@check("t3f_binary_form_equals_compact", "max_i |eps*_i of the basis-pursuit form - compact LP (HiGHS)|, binary codes (proofs/T3 3f)")
def _check_binary_form(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    worst, count = 0.0, 0
    shapes = [(40, 16, 2), (48, 24, 3), (64, 32, 4), (25, 24, 3)] + ([(128, 64, 4), (256, 128, 4)] if full else [])
    for n_latents, n_dims, k in shapes:
        for kind in ("gaussian", "rademacher"):
            D = random_dictionary(n_latents, n_dims, kind, seed=rng)
            if n_latents == n_dims + 1:  # d_0 carried by two atoms at weight > 1: the binary form refuses it
                D[2] = normalize_atoms((-0.8 * D[1] + 0.6 * D[2])[None])[0]
                D[0] = normalize_atoms((D[1] + D[2])[None])[0]
            auto, compact = relu_minimax_gap(D, k), relu_minimax_gap(D, k, method="highs")
            if not (auto.success and compact.success):
                return count, math.inf, "<=", LP_ATOL, "a solve failed"
            worst = max(worst, float(np.abs(auto.eps - compact.eps).max()))
            count += 1
    return count, worst, "<=", LP_ATOL


@check("t3e_eps_above_lo_proven", "max_i exact worst case of the encoder - exact certified bound, box codes with eps* >= lo (proofs/T3 3e)")
def _check_eps_above_lo(seed: int, full: bool):
    worst, count = 0.0, 0
    magnitudes = (0.1, 1.0)  # most eps* here lie above lo, where the plain LP proves only lo
    for D, k in _small_gap_instances(seed, full):
        report = certify_gap(D, k, magnitudes=magnitudes)
        attained = worst_case_error(report.result.encoder, D, k, magnitudes=magnitudes)
        above = report.result.eps >= magnitudes[0]
        if above.any():
            worst = max(worst, float((attained - report.certified_lower)[above].max()))
            count += 1
    return count, worst, "<=", LP_ATOL


@check("t3_positive_when_overcomplete", "min over D of eps* = max_i eps*_i when N > M and K >= 2 (T1)")
def _check_gap_positive(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    smallest, count, exact_latents = math.inf, 0, 0
    shapes = [(5, 4, 2), (8, 7, 2), (12, 6, 3), (20, 16, 2)] + ([(40, 39, 2), (64, 48, 3)] if full else [])
    for n_latents, n_dims, k in shapes:
        for kind in ("gaussian", "rademacher"):
            D = random_dictionary(n_latents, n_dims, kind, seed=rng)
            eps = relu_minimax_gap(D, k).eps
            smallest = min(smallest, float(eps.max()))
            # T1 forces a gap only on latents whose atom lies in the span of the others
            # (beta_i < inf); a Rademacher draw can leave an atom outside it, decodable exactly.
            exact = eps < GAP_POSITIVE_MIN
            if exact.any():
                in_span = np.isfinite(atom_l1_cost(D))[exact]
                if in_span.any():
                    return count, 0.0, ">=", GAP_POSITIVE_MIN, "a latent with beta_i < inf has eps*_i = 0, contradicting T2"
                exact_latents += int(exact.sum())
            count += 1
    detail = f"{exact_latents} latents decoded exactly, each with its atom outside the span of the others"
    return count, smallest, ">=", GAP_POSITIVE_MIN, detail


@check("t3_zero_for_independent_atoms", "max_i eps*_i when N <= M (independent atoms: the gap vanishes)")
def _check_gap_zero(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    largest, count = 0.0, 0
    for n_latents, n_dims in [(4, 4), (6, 8), (10, 16)] + ([(32, 32), (40, 64)] if full else []):
        D = random_dictionary(n_latents, n_dims, seed=rng)
        for k in sorted({1, 2, min(4, n_latents)}):
            largest = max(largest, float(relu_minimax_gap(D, k).eps.max()))
            count += 1
    return count, largest, "<=", LP_ATOL


@check("rip_condition_bp_recovers", "max |BP(x) - z| on dictionaries with exact delta_2K < sqrt(2) - 1")
def _check_rip_bp(seed: int, full: bool):
    rng = np.random.default_rng(seed)
    worst, count, tried = 0.0, 0, 0
    specs = [(32, 16, "identity_dct", 1), (64, 32, "identity_dct", 1), (40, 38, "dct", 1)]
    specs += [(128, 64, "identity_dct", 1), (24, 23, "dct", 2)] if full else []
    for n_latents, n_dims, kind, k in specs:
        D = random_dictionary(n_latents, n_dims, kind, seed=rng)
        tried += 1
        if rip_constant(D, 2 * k) >= float(RIP_THRESHOLD):
            continue  # the condition does not hold here; nothing is guaranteed
        for nonnegative in (False, True):
            Z = sparse_codes(16, n_latents, k, seed=rng, nonnegative=nonnegative)
            worst = max(worst, float(np.abs(basis_pursuit(Z @ D, D, nonnegative=nonnegative) - Z).max()))
            count += 1
    if count == 0:
        return 0, math.inf, "<=", RECOVERY_ATOL, f"none of {tried} dictionaries met delta_2K < sqrt(2) - 1"
    return count, worst, "<=", RECOVERY_ATOL, f"{count // 2} of {tried} dictionaries met the RIP condition"


@check("gap_certified_where_inference_exact",
       "max |BP(x) - z| on coherent instances whose gap eps* > 0 is certified on the same D (T1)")
def _check_gap_where_inference_exact(seed: int, full: bool):
    worst, count, smallest_gap = 0.0, 0, math.inf
    for inst, _ in coherent_instances(seed, full):
        if inst.K < 2 or not inst.nonnegative:
            continue  # the gap needs K >= 2; SAE codes are nonnegative
        # HiGHS (simplex, via scipy: silent) answers these LPs exactly; Clarabel reports the
        # N = 512 instances as inaccurate.
        for x, z in zip(inst.X, inst.Z):
            recovered = _bp_highs(inst.D.T, x, nonnegative=True)
            worst = max(worst, math.inf if recovered is None else float(np.abs(recovered - z).max()))
        # eps*(S) = max_i eps*_i >= eps*_i for any latent, so a few latents certify the gap.
        latents = np.arange(min(3, inst.N))
        result = relu_minimax_gap(inst.D, inst.K, magnitudes=inst.magnitudes, latents=latents)
        certified = max(
            verify_certificate(c, inst.D, k=inst.K, magnitudes=inst.magnitudes).lower_bound for c in result.certificates
        )
        smallest_gap = min(smallest_gap, certified)
        count += 1
    if count == 0:
        return 0, math.inf, "<=", RECOVERY_ATOL, "no coherent instance with K >= 2"
    if not smallest_gap >= GAP_POSITIVE_MIN:
        return count, math.inf, "<=", RECOVERY_ATOL, f"gap not certified: lower bound {smallest_gap:.3g}"
    return count, worst, "<=", RECOVERY_ATOL, f"certified eps* >= {smallest_gap:.3g} on every instance"


@check("symbolic_identities", "sympy identities that fail: Gaussian tail, stationarity, Welch = simplex, T2 proof LP")
def _check_symbolic(seed: int, full: bool):
    from fractions import Fraction

    rng = np.random.default_rng(seed)
    outcomes = [
        check_gaussian_tail_integral() == 0,
        check_stationarity(False) == 0,
        check_stationarity(True) == 0,
        check_welch_equality_general() == 0,
    ]
    outcomes += [check_welch_equality_simplex(n) for n in ((3, 4, 5, 6, 8) if full else (3, 4, 5))]
    for _ in range(6 if full else 2):
        c = [Fraction(int(rng.integers(-9, 10)), int(rng.integers(1, 8))) for _ in range(int(rng.integers(1, 4)))]
        outcomes.append(t2_proof_lp(c) == Fraction(1) / (2 * (1 + sum(abs(v) for v in c))))
    return len(outcomes), len(outcomes) - sum(bool(o) for o in outcomes), "<=", 0


def _bp_highs(A: np.ndarray, x: np.ndarray, nonnegative: bool) -> np.ndarray | None:
    """Basis pursuit ``min |z|_1 s.t. A z = x`` (A of shape (M, N)) by HiGHS; None unless optimal."""
    result = basis_pursuit_lp(x[None, :], A.T, nonnegative=nonnegative, unit_norm=False)
    return result.codes[0] if result.success else None


def empirical_transition(n_latents: int, k: int, *, nonnegative: bool, trials: int, step: int, seed) -> tuple:
    """BP success rates on Gaussian measurements around the statistical dimension.

    Measurement matrices ``A`` (M, N) have i.i.d. N(0, 1/M) entries (ALMT's hypothesis;
    ``D = A.T`` is deliberately not row-normalised), codes have K random-signed (or
    nonnegative) Gaussian entries. Returns ``(delta, tolerance, M_half, Ms, rates)``
    where ``M_half`` interpolates the M at which the success rate crosses 1/2 and
    ``tolerance = 2 sqrt(2 min(delta, N - delta)) + 1`` (two standard deviations of the
    intrinsic-volume distribution, McCoy & Tropp 2014, plus the integer grid; proofs/T4).
    """
    rng = np.random.default_rng(seed)
    delta = statistical_dimension(n_latents, k, nonnegative=nonnegative)
    spread = math.sqrt(2 * min(delta, n_latents - delta))
    Ms = np.arange(max(1, int(delta - 2 * spread)), min(n_latents, int(delta + 2 * spread) + 1) + 1, step)
    rates = []
    for n_dims in Ms:
        success = 0
        for _ in range(trials):
            A = rng.standard_normal((n_dims, n_latents)) / math.sqrt(n_dims)
            z = np.zeros(n_latents)
            z[rng.choice(n_latents, k, replace=False)] = rng.standard_normal(k)
            z = np.abs(z) if nonnegative else z
            z_hat = _bp_highs(A, A @ z, nonnegative)
            success += z_hat is not None and np.abs(z_hat - z).max() <= PT_SUCCESS_RTOL * max(1.0, np.abs(z).max())
        rates.append(success / trials)
    rates = np.array(rates)
    above = np.flatnonzero(rates >= 0.5)
    if above.size == 0:
        m_half = math.inf
    elif above[0] == 0:
        m_half = float(Ms[0])
    else:
        lo = above[0] - 1
        m_half = float(Ms[lo] + (0.5 - rates[lo]) / (rates[lo + 1] - rates[lo]) * (Ms[lo + 1] - Ms[lo]))
    return delta, 2 * spread + 1, m_half, Ms, rates


@check("phase_transition_matches_statistical_dimension",
       "max |M_1/2 - delta| / tolerance: BP success crosses 1/2 within 2 sd of the statistical dimension")
def _check_phase_transition(seed: int, full: bool):
    settings = [(40, 4, False), (40, 10, True)]
    if full:
        settings += [(40, 10, False), (40, 4, True), (100, 10, False), (100, 25, False), (100, 10, True), (100, 40, True)]
    ratios, details = [], []
    for index, (n_latents, k, nonnegative) in enumerate(settings):
        delta, tolerance, m_half, _, _ = empirical_transition(
            n_latents, k, nonnegative=nonnegative, trials=40 if full else 12, step=1 if full else 2, seed=[seed, index]
        )
        ratios.append(abs(m_half - delta) / tolerance)
        details.append(f"N={n_latents} K={k}{'+' if nonnegative else ''}: M_1/2={m_half:.1f} vs delta={delta:.1f}")
    return len(settings), max(ratios), "<=", 1.0, "; ".join(details)


@check("sae_never_beats_eps", "min_i (exact worst-case error of a trained ReLU SAE - eps*_i): no SAE beats T3")
def _check_sae_never_beats_eps(seed: int, full: bool):
    from .encoders import SAEConfig, SparseAutoencoder
    from .training import TrainConfig, train

    rng = np.random.default_rng(seed)
    margin, count = math.inf, 0
    for n_latents, n_dims, k in [(8, 4, 2), (10, 6, 3)] + ([(12, 6, 2), (12, 8, 3)] if full else []):
        D = random_dictionary(n_latents, n_dims, seed=rng)
        eps = relu_minimax_gap(D, k).eps
        Z = enumerate_codes(n_latents, k)
        for lr in (1e-2, 3e-3):  # supervised regression of the codes, decoder fixed to D
            sae = SparseAutoencoder(SAEConfig(M=n_dims, N=n_latents, l1_coefficient=0.0), seed=int(rng.integers(2**31)))
            train(sae.fix_decoder(D), Z @ D, TrainConfig(steps=1000 if full else 200, lr=lr, progress=False), codes=Z)
            margin = min(margin, float(np.min(worst_case_error(sae, D, k) - eps)))
            count += 1
    return count, margin, ">=", -LP_ATOL


# --------------------------------------------------------------------------------------
# activations / interpret (issue 7): real-model plumbing checked on a tiny random BERT.
# --------------------------------------------------------------------------------------


@check("activation_file_matches_forward",
       "max |streamed safetensors activations - the HF model's own forward| per window (tiny random "
       "transformers BertModel: resid_pre/resid_post = output_hidden_states[l]/[l+1], mlp_out through LN_2)")
def _check_activation_file_matches_forward(seed: int, full: bool):
    import tempfile

    import torch

    from .activations import SITES, extract_activations, load_activations, tiny_bert

    words = ["the", "fire", "storm", "town", "wind", "south", "said", "of"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words, "##s", ","]
    loaded = tiny_bert(vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                       max_position_embeddings=32, seed=seed, name="tiny")
    layer, block = 1, loaded.model.encoder.layer[1]
    rng = np.random.default_rng(seed)
    documents = [" ".join(rng.choice(words + ["fires", ","], size=int(rng.integers(5, 50)))) for _ in range(10)]
    captured = {}
    handle = block.output.register_forward_hook(lambda module, args, out: captured.update(attn=args[1]))
    worst, count = 0.0, 0
    try:
        with tempfile.TemporaryDirectory() as folder:
            files = {site: load_activations(extract_activations(
                loaded, documents, f"{folder}/{site}.safetensors", layer=layer, site=site, max_tokens=300,
                context_length=20, batch_size=3, chunk_tokens=17).path) for site in SITES}
        for window in np.unique(files["resid_post"].window_ids):
            rows = np.flatnonzero(files["resid_post"].window_ids == window)
            ids = torch.tensor([[*loaded.prefix_ids, *files["resid_post"].token_ids[rows].tolist(), *loaded.suffix_ids]])
            with torch.no_grad():  # one unpadded window, the HF model's own full forward pass
                states = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
                mlp_out = torch.from_numpy(files["mlp_out"].X[rows])
                through_ln = block.output.LayerNorm(mlp_out + captured["attn"][0, 1:-1])  # LN_2(a + FFN(a))
            for extracted, reference in ((files["resid_pre"].X[rows], states[layer][0, 1:-1]),
                                         (files["resid_post"].X[rows], states[layer + 1][0, 1:-1]),
                                         (through_ln.numpy(), states[layer + 1][0, 1:-1])):
                worst = max(worst, float(np.abs(extracted - reference.numpy()).max()))
            count += 1
    finally:
        handle.remove()
    # Padding, batching and the attention kernel change float32 round-off only (~1e-6); a misplaced
    # row, a wrong hook module or a broken mask is off by O(1).
    return count, worst, "<=", 1e-4
