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

from .instances import (
    Instance,
    coherence_recovery_sparsity,
    make_instance,
    mutual_coherence,
    random_dictionary,
    rip_constant,
    sparse_codes,
    spark,
    welch_bound,
)
from .solvers import basis_pursuit, lasso, omp

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


def run_checks(*, seed: int = 0, full: bool = False, only=None, progress: bool = False) -> list[CheckResult]:
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
    """
    selected = [r for r in _REGISTRY if (full or not r.full_only) and (only is None or r.name in set(only))]
    if only is not None:
        unknown = set(only) - {r.name for r in _REGISTRY}
        if unknown:
            raise ValueError(f"unknown checks {sorted(unknown)}; choose from {[r.name for r in _REGISTRY]}.")
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
    return rows


def render_table(rows: list[CheckResult]) -> str:
    """The verification table as aligned plain text."""
    header = ("check", "instances", "worst", "bound", "status", "seconds")
    lines = [
        (r.name, str(r.instances), f"{r.worst:.3g}", f"{r.relation} {r.bound:.3g}",
         "PASS" if r.passed else "FAIL", f"{r.seconds:.1f}")
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
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
            yield Instance(D=D, Z=Z, X=Z @ D, k=k_max, kind=kind, nonnegative=nonnegative), threshold


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
        codes = omp(inst.X, inst.D, inst.k, device="cpu")
        wrong += int(((codes != 0) != (inst.Z != 0)).any(axis=1).sum())
        count += 1
    return count, wrong, "<=", 0
