"""The error contract, table-driven: every public function against every bad-input family,
every CLI verb against bad flags and bad files.

Each case ends in one category:

- ``refused``: a ``ValueError``/``TypeError`` (or, for a numerical failure, a distinct
  exception such as ``SolverFailedError``) whose message names the argument (or file);
- ``right``: an input that must be accepted (int, float16, float32, list or torch data,
  an extreme but finite scale, duplicated atoms) gave the right answer;
- ``silent wrong``: a value came back where a refusal was due, or the value is wrong;
- ``traceback``: any other exception, or a refusal that does not name the argument;
- ``wrong exit code`` (CLI only): the exit status is not the contract's (0 ok, 1 a check
  or task failed, 2 bad usage/input/file, 130 interrupted), or the message is not one
  line naming the flag or file, or a traceback reached the user.

``python tests/test_contract.py`` prints the number of cases per category.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import sqlite3
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from gaptheory import bounds, flops, gap, instances, metrics, report, solvers
from gaptheory.encoders import (MLPEncoder, MLPEncoderConfig, SAEConfig, SparseAutoencoder, SparseCoding, SparseCodingConfig,
                                TopKSAE, TopKSAEConfig)

REFUSED, RIGHT, SILENT, TRACEBACK, EXIT = "refused", "right", "silent wrong", "traceback", "wrong exit code"
#: The exceptions of the contract: bad input, and numerical failures reported as such.
CONTRACT_ERRORS = (ValueError, TypeError, solvers.SolverFailedError)


@dataclasses.dataclass(frozen=True)
class Case:
    """One call and what it must do.

    ``accept`` is None when the call must be refused, else a predicate on the value it
    returns; ``may_refuse`` lets an accepted input (an extreme scale) be refused instead,
    provided the message names one of ``names``.
    """

    id: str
    call: Callable[[], object]
    names: tuple[str, ...]
    accept: Callable[[object], bool] | None = None
    may_refuse: bool = False


def classify(case: Case) -> tuple[str, str]:
    """Run ``case`` and return its category and a short account of what happened."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = case.call()
    except CONTRACT_ERRORS as err:
        message = str(err)
        if "\n" not in message.strip() and any(name.lower() in message.lower() for name in case.names):
            if case.accept is None or case.may_refuse:
                return REFUSED, message
            return SILENT, f"refused an input it must accept: {message}"
        return TRACEBACK, f"{type(err).__name__} not naming {case.names}: {message}"
    except Exception as err:  # noqa: BLE001 - anything else is an uncontrolled failure
        return TRACEBACK, f"{type(err).__name__}: {err}"
    if case.accept is None:
        return SILENT, f"returned {_short(value)} instead of refusing"
    try:
        ok = bool(case.accept(value))
    except Exception as err:  # noqa: BLE001 - a value the check cannot even read is wrong
        return SILENT, f"returned an unusable value ({type(err).__name__}: {err})"
    return (RIGHT, "") if ok else (SILENT, f"wrong value {_short(value)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 160 else text[:160] + "..."


# ----- reference data --------------------------------------------------------------------

N, M, K, B = 8, 5, 2, 6
D = instances.random_dictionary(N, M, seed=0)
Z = instances.sparse_codes(B, N, K, seed=1)
X = Z @ D
Z_HAT = Z + 0.05 * np.random.default_rng(2).standard_normal(Z.shape)
#: Metric data: enough rows that every latent varies, so the MCC matching has no ties.
Z_MET = instances.sparse_codes(40, N, K, seed=4)
Z_MET_HAT = Z_MET + 0.05 * np.random.default_rng(5).standard_normal(Z_MET.shape)
D_RAW = D * np.array([0.5, 2, 3, 1, 7, 0.25, 1, 4])[:, None]
#: Small gap instances: every gap case solves N_GAP latent LPs.
N_GAP, M_GAP = 5, 3
D_GAP = instances.random_dictionary(N_GAP, M_GAP, seed=3)
Z_GAP = gap.enumerate_codes(N_GAP, 2)
SCALES = (1e-200, 1e-150, 1e150, 1e200)


def _values(result) -> np.ndarray:
    """The numbers a result carries, as one float64 vector (NaN kept)."""
    if isinstance(result, torch.Tensor):
        return result.detach().double().cpu().numpy().ravel()
    if isinstance(result, solvers.SolveResult):
        return np.asarray(result.codes, dtype=float).ravel()
    if isinstance(result, gap.GapResult):
        return np.asarray(result.eps, dtype=float).ravel()
    if isinstance(result, gap.GapReport):
        return np.concatenate([result.result.eps, result.t2_bound, result.certified_lower])
    if dataclasses.is_dataclass(result):
        return np.asarray([float(v) for v in dataclasses.asdict(result).values()
                           if isinstance(v, (int, float, np.number))], dtype=float)
    if isinstance(result, tuple):
        return np.concatenate([_values(r) for r in result]) if result else np.zeros(0)
    return np.asarray(result, dtype=float).ravel()


def _same(a, b) -> bool:
    """Equal values (NaN equal to NaN): the same numbers reached through another input type."""
    a, b = _values(a), _values(b)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _close(a, b, rtol: float) -> bool:
    """``a`` within ``rtol`` of ``b`` relative to ``b``'s largest magnitude (NaN equal to NaN)."""
    a, b = _values(a), _values(b)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    return bool(np.all(np.abs(a - b) <= rtol * max(np.abs(b).max(initial=0.0), np.finfo(float).tiny)))


# ----- the families of bad input -----------------------------------------------------------


@dataclasses.dataclass
class Spec:
    """A public function, good arguments and the rules its arguments follow.

    ``arrays`` maps array arguments to their ndim; ``columns`` lists arrays whose last
    dimension must agree with another argument; ``scale(args, s)`` returns the arguments
    scaled by ``s`` and the factor by which the answer scales (``rtol`` bounds the
    relative difference: solver tolerances relative to the data, see each spec);
    ``k`` names the sparsity argument (valid ``1 <= k <= k_max``); ``dictionary`` names a
    dictionary argument (zero atoms refused; non-unit ones too when ``unit``);
    ``duplicate`` checks the answer when one atom is duplicated; ``ints`` maps integer
    arguments to their minimum; ``bad`` lists other bad values per argument.
    """

    name: str
    fn: Callable
    args: dict
    arrays: dict = dataclasses.field(default_factory=dict)
    columns: tuple = ()
    scale: Callable | None = None
    rtol: float = 0.0
    k: str | None = None
    k_max: int = N
    dictionary: str | None = None
    unit: bool = True
    duplicate: Callable | None = None
    ints: dict = dataclasses.field(default_factory=dict)
    bad: dict = dataclasses.field(default_factory=dict)
    int_data: tuple = ()  # arrays for which integer-valued data is meaningful
    allow_inf: tuple = ()  # arrays where +inf has a documented meaning


def _with(args: dict, **changes) -> dict:
    return {**args, **changes}


def _cases(spec: Spec) -> list[Case]:
    fn, args, cases = spec.fn, spec.args, []

    def add(family, new_args, names, accept=None, may_refuse=False):
        cases.append(Case(f"{spec.name}-{family}", lambda a=new_args: fn(**a), tuple(names), accept, may_refuse))

    for name, ndim in spec.arrays.items():
        a = np.asarray(args[name], dtype=float)
        for label, bad in (("nan", np.nan), ("inf", np.inf)):
            if label == "inf" and name in spec.allow_inf:
                continue
            broken = a.copy()
            broken.flat[0] = bad
            add(f"{name}-{label}", _with(args, **{name: broken}), [name])
        add(f"{name}-complex", _with(args, **{name: a + 1j * a}), [name])
        add(f"{name}-complex-zero-imag", _with(args, **{name: a.astype(complex)}), [name])
        if ndim is not None:  # None: elementwise, any shape
            add(f"{name}-ndim-minus", _with(args, **{name: a[0]}), [name])
            add(f"{name}-ndim-plus", _with(args, **{name: a[None]}), [name])
            add(f"{name}-empty", _with(args, **{name: a[:0]}), [name])
        add(f"{name}-string", _with(args, **{name: np.full(a.shape, "x")}), [name])
        # Accepted types: the same numbers as float64 give the same answer (or both refuse).
        conversions = {"float16": lambda v: v.astype(np.float16), "float32-torch": lambda v: torch.tensor(v, dtype=torch.float32),
                       "float64-torch": torch.tensor, "list": lambda v: v.tolist()}
        if name in spec.int_data:
            conversions["int"] = lambda v: np.rint(4 * v).astype(np.int64)
        for label, convert in conversions.items():
            converted = convert(a)
            as_float = np.asarray(converted.numpy() if isinstance(converted, torch.Tensor) else converted, dtype=float)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reference = fn(**_with(args, **{name: as_float}))
            except CONTRACT_ERRORS:
                add(f"{name}-{label}", _with(args, **{name: converted}), [name])
                continue
            add(f"{name}-{label}", _with(args, **{name: converted}), [name], lambda v, r=reference: _same(v, r))
    for name in spec.columns:
        a = np.asarray(args[name])
        add(f"{name}-columns", _with(args, **{name: a[:, :-1]}), [name, *spec.arrays])
    if spec.scale is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = fn(**args)
        for s in SCALES:
            scaled, factor = spec.scale(args, s)
            add(f"scale-{s:g}", scaled, list(scaled), lambda v, r=reference, f=factor: _close(_values(v) / f, r, spec.rtol),
                may_refuse=True)
    if spec.k is not None:
        for value in (0, -1, spec.k_max + 1):
            add(f"{spec.k}={value}", _with(args, **{spec.k: value}), [spec.k])
        for value in (2.5, True, "2", None):
            add(f"{spec.k}={value!r}", _with(args, **{spec.k: value}), [spec.k])
    if spec.dictionary is not None:
        d = np.asarray(args[spec.dictionary], dtype=float)
        zero = d.copy()
        zero[1] = 0.0
        add("zero-atom", _with(args, **{spec.dictionary: zero}), [spec.dictionary])
        if spec.unit:
            longer = d.copy()
            longer[0] *= 2.0
            add("non-unit-atom", _with(args, **{spec.dictionary: longer}), [spec.dictionary])
            add("atoms-as-columns", _with(args, **{spec.dictionary: d.T}), [spec.dictionary, *spec.arrays])
        if spec.duplicate is not None:
            twice = d.copy()
            twice[1] = twice[0]
            new_args = _with(args, **{spec.dictionary: twice})
            if "X" in args and "Z" not in args:  # data drawn from the dictionary the solver is given
                new_args["X"] = Z @ twice
            add("duplicated-atom", new_args, [spec.dictionary], lambda v, a=new_args: spec.duplicate(v, a))
    for name, minimum in spec.ints.items():
        for value in (minimum - 1, -1, 2.5, True, "3", None):
            if value == -1 and minimum <= -1:
                continue
            add(f"{name}={value!r}", _with(args, **{name: value}), [name])
    for name, values in spec.bad.items():
        for value in values:
            add(f"{name}={_short(value)[:30]}", _with(args, **{name: value}), [name])
    return cases


def _scaled(*names, factor_of=None):
    """A scale rule: multiply ``names`` by ``s``; the answer scales by ``s`` when ``factor_of`` is set."""
    def rule(args, s):
        new = dict(args)
        for name in names:
            value = args[name]
            new[name] = tuple(s * v for v in value) if isinstance(value, tuple) else np.asarray(value) * s if not np.isscalar(value) else value * s
        return new, (s if factor_of else 1.0)
    return rule


#: Codes of an LP vertex or a least-squares refit agree with the unscaled ones to about the
#: solvers' relative feasibility tolerance (1e-9) times the conditioning of the small
#: instances (< 1e2), well below 1e-6; a wrong answer is off by O(1).
SOLVER_RTOL = 1e-6


def _reconstructs(result, args, rtol=SOLVER_RTOL) -> bool:
    """Codes that reproduce ``X`` (basis pursuit, OMP, best subset with a duplicated atom):
    the solvers' own residual checks are far tighter (basis pursuit: BP_RESIDUAL_RTOL = 1e-9
    of ||x||; least squares: M K eps cond), and codes that do not reconstruct are off by O(1)."""
    codes = _values(result).reshape(args["X"].shape[0], -1)
    residual = np.abs(codes @ args["D"] - args["X"]).max()
    return bool(np.isfinite(codes).all() and residual <= rtol * np.abs(args["X"]).max())


def _finite(result, args=None) -> bool:
    values = _values(result)
    return bool(values.size and np.isfinite(values).all())


#: Metrics are ratios of sums over a few dozen entries: a product of the scaled inputs
#: rounds to ~1e-15 relatively; 1e-10 leaves margin and still catches a 0.0 for 1.0.
METRIC_RTOL = 1e-10


SOLVER_BAD = {"nonnegative": ["no", 1, None]}
SPECS = [
    # instances
    Spec("normalize_atoms", instances.normalize_atoms, {"D": D_RAW}, {"D": 2}, scale=_scaled("D"), rtol=METRIC_RTOL,
         dictionary="D", unit=False, duplicate=_finite),
    Spec("random_dictionary", instances.random_dictionary, {"N": N, "M": M, "seed": 0}, ints={"N": 1, "M": 1},
         bad={"kind": ["nope", 3], "seed": [-1, 1.5, "0"]}),
    Spec("sparse_codes", instances.sparse_codes, {"B": B, "N": N, "K": K, "seed": 0}, k="K", ints={"B": 1},
         bad={"magnitudes": [(1.0, 0.5), (-1.0, 1.0), (math.nan, 1.0), (0.0, 1.0), 3.0, (1.0, math.inf)],
              "nonnegative": ["no"], "seed": [-1]}),
    Spec("make_instance", instances.make_instance, {"N": N, "M": M, "K": K, "B": B, "seed": 0}, k="K", ints={"M": 1, "B": 1},
         bad={"kind": ["nope"], "nonnegative": ["no"]}),
    Spec("mutual_coherence", instances.mutual_coherence, {"D": D}, {"D": 2}, dictionary="D",
         duplicate=lambda v, a: v == pytest.approx(1.0)),
    Spec("welch_bound", instances.welch_bound, {"N": N, "M": M}, ints={"N": 2, "M": 1}),
    Spec("spark", instances.spark, {"D": D}, {"D": 2}, dictionary="D", duplicate=lambda v, a: v == 2,
         ints={"max_subsets": 1}),
    Spec("rip_constant", instances.rip_constant, {"D": D, "K": K}, {"D": 2}, k="K", dictionary="D",
         duplicate=lambda v, a: v == pytest.approx(1.0), bad={"method": ["nope"], "n_subsets": [0, -1]}),
    Spec("coherence_recovery_sparsity", instances.coherence_recovery_sparsity, {"D": D}, {"D": 2}, dictionary="D",
         duplicate=lambda v, a: v == pytest.approx(1.0)),
    # solvers
    Spec("basis_pursuit", solvers.basis_pursuit, {"X": X, "D": D}, {"X": 2, "D": 2}, columns=("X",),
         scale=_scaled("X", factor_of="X"), rtol=SOLVER_RTOL, dictionary="D", duplicate=_reconstructs,
         int_data=("X",), bad={**SOLVER_BAD, "solver": ["NOPE"]}),
    Spec("basis_pursuit_lp", solvers.basis_pursuit_lp, {"X": X, "D": D}, {"X": 2, "D": 2}, columns=("X",),
         scale=_scaled("X", factor_of="X"), rtol=SOLVER_RTOL, dictionary="D", duplicate=_reconstructs,
         int_data=("X",), bad={**SOLVER_BAD, "unit_norm": ["yes"]}),
    Spec("lasso", solvers.lasso, {"X": X, "D": D, "alpha": 0.05}, {"X": 2, "D": 2}, columns=("X",),
         scale=_scaled("X", "alpha", factor_of="X"), rtol=SOLVER_RTOL, dictionary="D", duplicate=_finite,
         int_data=("X",), bad={**SOLVER_BAD, "alpha": [0.0, -1.0, math.nan, math.inf, "1"], "method": ["nope"],
                               "tol": [0.0, -1.0, math.nan], "max_iter": [0, -1, 2.5]}),
    Spec("omp", solvers.omp, {"X": X, "D": D, "K": K}, {"X": 2, "D": 2}, columns=("X",),
         scale=_scaled("X", factor_of="X"), rtol=SOLVER_RTOL, k="K", k_max=M, dictionary="D", duplicate=_finite,
         int_data=("X",), bad={"dtype": ["float8", 3]}),
    Spec("best_subset", solvers.best_subset, {"X": X, "D": D, "K": K}, {"X": 2, "D": 2}, columns=("X",),
         scale=_scaled("X", factor_of="X"), rtol=SOLVER_RTOL, k="K", dictionary="D", duplicate=_reconstructs,
         int_data=("X",), bad={**SOLVER_BAD, "max_supports": [0, -1, 2.5]}),
    Spec("count_supports", solvers.count_supports, {"N": N, "K": K}, k="K", ints={"N": 1}),
    # metrics
    Spec("correlation_matrix", metrics.correlation_matrix, {"Z_true": Z_MET, "Z_hat": Z_MET_HAT}, {"Z_true": 2, "Z_hat": 2},
         scale=_scaled("Z_true", "Z_hat"), rtol=METRIC_RTOL, int_data=("Z_true", "Z_hat")),
    Spec("mcc", metrics.mcc, {"Z_true": Z_MET, "Z_hat": Z_MET_HAT}, {"Z_true": 2, "Z_hat": 2}, scale=_scaled("Z_true", "Z_hat"),
         rtol=METRIC_RTOL, int_data=("Z_true", "Z_hat"), bad={"return_matching": ["yes"]}),
    Spec("align_codes", metrics.align_codes, {"Z_hat": Z_MET_HAT, "N": N,
                                              "matching": metrics.mcc(Z_MET, Z_MET_HAT, return_matching=True)[1]},
         {"Z_hat": 2}, scale=_scaled("Z_hat", factor_of="Z_hat"), rtol=METRIC_RTOL, ints={"N": 1}, bad={"matching": [(np.arange(3), np.arange(2)), "x", (np.arange(N) + 100, np.arange(N))]}),
    Spec("dictionary_recovery", metrics.dictionary_recovery, {"D_true": D, "D_hat": D_RAW}, {"D_true": 2, "D_hat": 2},
         columns=("D_hat",), scale=_scaled("D_true", "D_hat"), rtol=METRIC_RTOL, ints={"n_chance": 1},
         bad={"seed": [-1, "0"]}),
    Spec("support_scores", metrics.support_scores, {"Z_true": Z_MET, "Z_hat": Z_MET_HAT, "threshold": 1e-3},
         {"Z_true": 2, "Z_hat": 2}, columns=("Z_hat",), scale=_scaled("Z_true", "Z_hat", "threshold"), rtol=METRIC_RTOL,
         int_data=("Z_true", "Z_hat"), bad={"threshold": [-1.0, math.nan, "0"]}),
    Spec("relative_code_error", metrics.relative_code_error, {"Z_true": Z_MET, "Z_hat": Z_MET_HAT}, {"Z_true": 2, "Z_hat": 2},
         columns=("Z_hat",), scale=_scaled("Z_true", "Z_hat"), rtol=METRIC_RTOL, int_data=("Z_true", "Z_hat"),
         bad={"Z_true": [np.zeros_like(Z_MET)]}),
    Spec("explained_variance", metrics.explained_variance, {"X": X, "X_hat": Z_HAT @ D}, {"X": 2, "X_hat": 2},
         columns=("X_hat",), scale=_scaled("X", "X_hat"), rtol=METRIC_RTOL, int_data=("X", "X_hat"),
         bad={"X": [np.ones_like(X)]}),
    Spec("mean_l0", metrics.mean_l0, {"Z": Z_HAT, "threshold": 1e-3}, {"Z": 2}, scale=_scaled("Z", "threshold"),
         rtol=0.0, int_data=("Z",), bad={"threshold": [-1.0, math.nan]}),
    Spec("dead_latents", metrics.dead_latents, {"Z": Z, "threshold": 1e-3}, {"Z": 2}, scale=_scaled("Z", "threshold"),
         rtol=0.0, int_data=("Z",), bad={"threshold": [-1.0, math.nan]}),
    Spec("code_metrics", metrics.code_metrics, {"Z_true": Z_MET, "Z_hat": Z_MET_HAT, "X": Z_MET @ D, "X_hat": Z_MET_HAT @ D, "threshold": 1e-3},
         {"Z_true": 2, "Z_hat": 2, "X": 2, "X_hat": 2}, columns=("X_hat",),
         scale=_scaled("Z_true", "Z_hat", "X", "X_hat", "threshold"), rtol=METRIC_RTOL, bad={"threshold": [-1.0]}),
    # bounds
    Spec("welch", bounds.welch, {"N": N, "M": M}, ints={"N": 2, "M": 1}),
    Spec("spark_lower_bound", bounds.spark_lower_bound, {"mu": 0.3}, bad={"mu": [-0.1, 1.5, math.nan, "0.3"]}),
    Spec("coherence_sparsity", bounds.coherence_sparsity, {"mu": 0.3}, bad={"mu": [-0.1, 1.5, math.nan]}),
    Spec("rip_guarantees_recovery", bounds.rip_guarantees_recovery, {"delta_2k": 0.3},
         bad={"delta_2k": [-0.1, math.nan, "x"]}),
    Spec("gaussian_tail_integral", bounds.gaussian_tail_integral, {"tau": np.array([0.5, 1.0])}, {"tau": None}),
    Spec("statistical_dimension_threshold", bounds.statistical_dimension_threshold, {"rho": 0.3},
         bad={"rho": [0.0, -0.1, 1.5, math.nan], "nonnegative": ["no"]}),
    Spec("statistical_dimension", bounds.statistical_dimension, {"N": N, "K": K}, k="K",
         ints={"N": 1}, bad={"nonnegative": ["no"]}),
    Spec("t2_bound", bounds.t2_bound, {"beta": np.array([0.5, 1.0, 2.0])}, {"beta": None},
         allow_inf=("beta",), bad={"beta": [np.array([-1.0, 1.0])]}),
    Spec("t2_proof_lp", bounds.t2_proof_lp, {"coefficients": [1, 1, 1]}, bad={"coefficients": [[], "abc", [1.5, math.nan]]}),
    Spec("simplex_frame", bounds.simplex_frame, {"N": 3}, ints={"N": 2}),
    Spec("check_welch_equality_simplex", bounds.check_welch_equality_simplex, {"N": 3}, ints={"N": 2}),
    Spec("four_code_lp", bounds.four_code_lp, {"D": [[1, 0], [0, 1], [-1, 0]], "i": 0}, ints={"i": 0},
         bad={"i": [3], "D": ["D", [[1, "x"], [0, 1], [1, 0]]]}),
    Spec("check_rational_dictionary", bounds.check_rational_dictionary, {"D": [[1, 0], [0, 1]]},
         bad={"D": [[[2, 0], [0, 1]], [[0, 0], [0, 1]], [[math.nan, 0]], [[1j, 0]]]}),
    # gap
    Spec("relu_minimax_gap", gap.relu_minimax_gap, {"D": D_GAP, "k": 2}, {"D": 2}, k="k", k_max=N_GAP,
         scale=lambda a, s: (_with(a, magnitudes=(s, s)), s), rtol=SOLVER_RTOL, dictionary="D", duplicate=_finite,
         bad={"magnitudes": [(1.0, 0.5), (0.0, 1.0), (math.nan, 1.0), "ab"], "method": ["nope"], "n_jobs": [0, 2.5],
              "latents": [[N_GAP], [-1], []]}),
    Spec("relu_minimax_gap_codes", gap.relu_minimax_gap_codes, {"D": D_GAP, "Z": Z_GAP}, {"D": 2, "Z": 2},
         columns=("Z",), scale=_scaled("Z", factor_of="Z"), rtol=SOLVER_RTOL, dictionary="D", duplicate=_finite,
         bad={"latents": [[N_GAP]]}),
    Spec("enumerate_codes", gap.enumerate_codes, {"n_latents": N_GAP, "k": 2}, k="k", k_max=N_GAP,
         scale=lambda a, s: (_with(a, magnitudes=(s, s)), s), rtol=0.0, ints={"n_latents": 1},
         bad={"magnitudes": [(1.0, 0.5)], "max_codes": [0, -1, 2.5]}),
    Spec("atom_l1_cost", gap.atom_l1_cost, {"D": D_GAP}, {"D": 2}, dictionary="D", duplicate=_finite),
    Spec("gap_lower_bound", gap.gap_lower_bound, {"D": D_GAP}, {"D": 2}, dictionary="D", duplicate=_finite),
    Spec("certify_gap", gap.certify_gap, {"D": D_GAP, "k": 2}, {"D": 2}, k="k", k_max=N_GAP,
         scale=lambda a, s: (_with(a, magnitudes=(s, s)), s), rtol=SOLVER_RTOL, dictionary="D",
         bad={"magnitudes": [(1.0, 0.5)], "n_jobs": [0]}),
    # flops
    Spec("matmul_flops", flops.matmul_flops, {"a": 3, "b": 4, "c": 5}, ints={"a": 0, "b": 0, "c": 0}),
    Spec("encoder_flops", flops.encoder_flops, {"B": 3, "widths": (5, 8)}, ints={"B": 0},
         bad={"widths": [(5,), (5, 0), (5, -1), (5, 2.5), "58"], "activation": ["nope"]}),
    Spec("training_step_flops", flops.training_step_flops, {"B": 3, "widths": (5, 8)}, ints={"B": 0},
         bad={"widths": [(5,), (5, 0)], "activation": ["nope"], "decoder": ["nope"]}),
    Spec("fista_flops", flops.fista_flops, {"n_iter": 10, "M": 5, "N": 8},
         ints={"M": 1, "N": 1}, bad={"n_iter": [-1, 2.5, math.nan, "3"], "check_every": [0, -1]}),
    Spec("dictionary_step_flops", flops.dictionary_step_flops, {"B": 3, "M": 5, "N": 8},
         ints={"B": 0, "M": 1, "N": 1}),
    Spec("best_subset_flops", flops.best_subset_flops, {"B": 3, "M": 5, "N": 8, "K": 2}, k="K",
         ints={"B": 0, "M": 1, "N": 1}),
]


def _encoder_specs() -> list[Spec]:
    """encode/decode of each encoder kind: arrays in, codes out, float32 models."""
    sae = SparseAutoencoder(SAEConfig(N, M), seed=0)
    topk = TopKSAE(TopKSAEConfig(N, M, K=2), seed=0)
    mlp = MLPEncoder(MLPEncoderConfig(N, M), seed=0)
    coding = SparseCoding(SparseCodingConfig(N, M), seed=0)
    # A bias-free ReLU/TopK layer is positively homogeneous: codes scale with X. A float32
    # model holds |X| in about [1e-38, 1e38], so 1e+-150 and beyond must be refused. Where
    # it answers, c X rounds to float32 (eps32 = 1.2e-7) before dot products of M terms:
    # codes agree to about (M + 1) eps32 < 1e-5 relative.
    return [
        Spec("SparseAutoencoder.encode", lambda X: sae.encode(X), {"X": X}, {"X": 2}, columns=("X",),
             scale=_scaled("X", factor_of="X"), rtol=1e-5, int_data=("X",)),
        Spec("TopK.encode", lambda X: topk.encode(X), {"X": X}, {"X": 2}, columns=("X",),
             scale=_scaled("X", factor_of="X"), rtol=1e-5, int_data=("X",)),
        Spec("SparseAutoencoder.decode", lambda Z: sae.decode(Z), {"Z": Z}, {"Z": 2}, columns=("Z",),
             scale=_scaled("Z", factor_of="Z"), rtol=1e-5, int_data=("Z",)),
        Spec("MLPEncoder.encode", lambda X: mlp.encode(X), {"X": X}, {"X": 2}, columns=("X",), int_data=("X",)),
        Spec("SparseCoding.encode", lambda X: coding.encode(X), {"X": X}, {"X": 2}, columns=("X",), int_data=("X",)),
        Spec("SAEConfig", SAEConfig, {"M": M, "N": N}, ints={"M": 1, "N": 1},
             bad={"l1_coefficient": [-1.0, math.nan]}),
        Spec("TopKSAEConfig", TopKSAEConfig, {"M": M, "N": N, "K": 2}, k="K"),
        Spec("SparseAutoencoder", SparseAutoencoder, {"cfg": SAEConfig(N, M)},
             bad={"seed": [-1, 1.5]}),
    ]


RECORDS = [{"key": f"k{i}", "status": "ok", "kind": "recovery", "sweep": "s", "seed": i, "N": 4, "M": 2, "K": 1,
            "success_rate": 0.5 + i / 4, "metrics": "success_rate"} for i in range(2)]


def _report_cases(tmp: Path) -> list[Case]:
    summary = report.summarize(RECORDS, ["N"])
    return [
        Case("summarize-metrics-unknown", lambda: report.summarize(RECORDS, ["N"], ["no_such_metric"]), ("no_such_metric",)),
        Case("format_table-metrics-unknown", lambda: report.format_table(RECORDS, ["N"], ["no_such_metric"]),
             ("no_such_metric",)),
        Case("summarize-group_by-string", lambda: report.summarize(RECORDS, "N"), ("group_by",),
             lambda v: v == summary),
        Case("summarize-records-dict", lambda: report.summarize(RECORDS[0], ["N"]), ("records",)),
        Case("summarize-records-none", lambda: report.summarize(None, ["N"]), ("records",)),
        Case("format_table-metrics-string", lambda: report.format_table(RECORDS, ["N"], "success_rate"), ("metrics",),
             lambda v: v == report.format_table(RECORDS, ["N"], ["success_rate"])),
        Case("pareto_front-nan", lambda: report.pareto_front([(1.0, math.nan), (2.0, 0.5)]), ("points",)),
        Case("pareto_front-not-pairs", lambda: report.pareto_front([1.0, 2.0]), ("points",)),
        Case("plot-kind", lambda: report.plot(RECORDS, "nope", tmp / "f.png"), ("kind",)),
        Case("plot-out-missing-folder", lambda: report.plot(RECORDS, "phase", tmp / "missing" / "f.png"), ("missing",)),
        Case("plot-out-a-folder", lambda: report.plot(RECORDS, "phase", tmp), (str(tmp),)),
        Case("plot-no-records", lambda: report.plot([], "phase", tmp / "f.png"), ("recovery",)),
        Case("table-no-records", lambda: report.table([], ["N"]), ("records",)),
        Case("table-store-missing", lambda: report.table(str(tmp / "missing.db"), ["N"]), ("missing.db",)),
    ]


def api_cases(tmp: Path) -> list[Case]:
    cases = [case for spec in SPECS + _encoder_specs() for case in _cases(spec)]
    return cases + _report_cases(tmp)


# ----- the command line ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CliCase:
    """``gaptheory ARGV`` must exit with ``code`` and, for a refusal, print one line naming ``names``."""

    id: str
    argv: tuple[str, ...]
    code: int
    names: tuple[str, ...] = ()


def run_cli(argv) -> tuple[int, str, str]:
    from gaptheory.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse --help / --version
            code = exit_.code if isinstance(exit_.code, int) else 2
        except BaseException as exc:  # noqa: BLE001 - escaping main at all is the failure
            import traceback

            traceback.print_exc(file=err)
            code = f"raised {type(exc).__name__}"
    return code, out.getvalue(), err.getvalue()


def classify_cli(case: CliCase) -> tuple[str, str]:
    code, out, err = run_cli(case.argv)
    if "Traceback" in err or isinstance(code, str):
        return TRACEBACK, f"exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    if code != case.code:
        return EXIT, f"exit {code}, expected {case.code}: {err.strip()[-300:]}"
    if case.code == 2:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if len(lines) != 1 or not any(name in lines[0] for name in case.names):
            return EXIT, f"message is not one line naming {case.names}: {err.strip()[-300:]}"
    return (REFUSED if case.code != 0 else RIGHT), ""


SWEEP_OK = """
name = "tiny"
kind = "recovery"
[fixed]
N = 8
B = 2
solver = "omp"
[grid]
M = [4]
K = [1]
seed = [0]
"""


def cli_files(tmp: Path) -> dict[str, Path]:
    """Files a user might pass: a good store, a sweep, and every kind of bad file."""
    from gaptheory.experiments.store import ResultStore

    files = {"dir": tmp / "a_folder", "missing": tmp / "missing.db", "random": tmp / "random.db",
             "empty": tmp / "empty.db", "truncated": tmp / "truncated.db", "good": tmp / "good.db",
             "sweep": tmp / "tiny.toml", "bad_toml": tmp / "bad.toml", "bad_grid": tmp / "bad_grid.toml",
             "type_grid": tmp / "type_grid.toml", "not_utf8": tmp / "binary.toml", "readonly_store": tmp / "ro.db",
             "real_bad_method": tmp / "real_bad_method.toml", "real_steps_zero": tmp / "real_steps_zero.toml",
             "text": tmp / "notes.txt"}
    files["dir"].mkdir(exist_ok=True)
    files["random"].write_bytes(np.random.default_rng(0).bytes(8192))
    files["empty"].write_bytes(b"")
    with ResultStore(files["good"]) as store:
        for record in RECORDS + [{**r, "key": f"g{i}", "kind": "gap", "eps_star": 0.3, "gap_lower_bound": 0.1,
                                  "metrics": "eps_star,gap_lower_bound"} for i, r in enumerate(RECORDS)]:
            store.put(record)
        for i in range(100):
            store.put({"key": f"pad{i}", "status": "ok", "kind": "pad", "text": "x" * 300})
    files["truncated"].write_bytes(files["good"].read_bytes()[:3000])
    files["sweep"].write_text(SWEEP_OK)
    files["bad_toml"].write_text("name = [unclosed\n")
    files["bad_grid"].write_text(SWEEP_OK.replace("M = [4]", "M = [-4]"))
    files["type_grid"].write_text(SWEEP_OK.replace("M = [4]", 'M = ["a"]'))
    files["not_utf8"].write_bytes(b"\xff\xfe\x00name")
    files["text"].write_text("not a store, not a sweep\n")
    real = 'name = "real"\nkind = "activations"\n[fixed]\n'
    files["real_bad_method"].write_text(real + 'method = "nope"\n')
    files["real_steps_zero"].write_text(real + "steps = 0\n")
    with ResultStore(files["readonly_store"]) as store:
        store.put(RECORDS[0])
    files["readonly_store"].chmod(0o444)
    return files


def cli_cases(tmp: Path) -> list[CliCase]:
    f = {name: str(path) for name, path in cli_files(tmp).items()}
    out = str(tmp / "fig")
    cases = [
        CliCase("no-verb", (), 2, ("gaptheory",)),
        CliCase("unknown-verb", ("frobnicate",), 2, ("frobnicate",)),
        CliCase("help", ("--help",), 0),
        # verify
        CliCase("verify-unknown-flag", ("verify", "--frobnicate"), 2, ("--frobnicate",)),
        CliCase("verify-seed-negative", ("verify", "--seed", "-1", "--only", "welch_bound"), 2, ("--seed",)),
        CliCase("verify-seed-text", ("verify", "--seed", "x"), 2, ("--seed",)),
        CliCase("verify-unknown-check", ("verify", "--only", "no_such_check"), 2, ("no_such_check",)),
        CliCase("verify-quiet", ("verify", "-q", "--only", "welch_bound"), 0),
        CliCase("verify-verbose", ("verify", "-v", "--only", "welch_bound"), 0),
        # run
        CliCase("run-missing", ("run", f["missing"] + ".toml", "--store", str(tmp / "r1.db")), 2, ("missing",)),
        CliCase("run-a-folder", ("run", f["dir"], "--store", str(tmp / "r2.db")), 2, (f["dir"],)),
        CliCase("run-bad-toml", ("run", f["bad_toml"], "--store", str(tmp / "r3.db")), 2, ("bad.toml",)),
        CliCase("run-not-utf8", ("run", f["not_utf8"], "--store", str(tmp / "r4.db")), 2, ("binary.toml",)),
        CliCase("run-text-file", ("run", f["text"], "--store", str(tmp / "r5.db")), 2, ("notes.txt",)),
        CliCase("run-a-store-as-sweep", ("run", f["good"], "--store", str(tmp / "r6.db")), 2, ("good.db",)),
        CliCase("run-bad-grid", ("run", f["bad_grid"], "--store", str(tmp / "r7.db")), 2, ("M",)),
        CliCase("run-type-grid", ("run", f["type_grid"], "--store", str(tmp / "r8.db")), 2, ("M",)),
        CliCase("run-store-random", ("run", f["sweep"], "--store", f["random"], "--workers", "1"), 2, ("random.db",)),
        CliCase("run-store-truncated", ("run", f["sweep"], "--store", f["truncated"], "--workers", "1"), 2,
                ("truncated.db",)),
        CliCase("run-store-folder", ("run", f["sweep"], "--store", f["dir"], "--workers", "1"), 2, (f["dir"],)),
        CliCase("run-store-missing-folder", ("run", f["sweep"], "--store", str(tmp / "nope" / "r.db"), "--workers", "1"),
                2, ("nope",)),
        CliCase("run-workers-zero", ("run", f["sweep"], "--store", str(tmp / "r9.db"), "--workers", "0"), 2,
                ("--workers",)),
        CliCase("run-scheduler-unreachable", ("run", f["sweep"], "--store", str(tmp / "r10.db"), "--scheduler",
                                              "tcp://127.0.0.1:9"), 2, ("--scheduler",)),
        CliCase("run-scheduler-garbage", ("run", f["sweep"], "--store", str(tmp / "r11.db"), "--scheduler", "::::"), 2,
                ("--scheduler",)),
        CliCase("run-ok-quiet", ("run", f["sweep"], "--store", str(tmp / "r12.db"), "--workers", "1", "-q"), 0),
        # table
        CliCase("table-missing", ("table", f["missing"]), 2, ("missing.db",)),
        CliCase("table-folder", ("table", f["dir"]), 2, (f["dir"],)),
        CliCase("table-random", ("table", f["random"]), 2, ("random.db",)),
        CliCase("table-empty-file", ("table", f["empty"]), 2, ("empty.db",)),
        CliCase("table-truncated", ("table", f["truncated"]), 2, ("truncated.db",)),
        CliCase("table-a-sweep-file", ("table", f["sweep"]), 2, ("tiny.toml",)),
        CliCase("table-read-only", ("table", f["readonly_store"]), 0),
        CliCase("table-unknown-metric", ("table", f["good"], "--metrics", "no_such_metric"), 2,
                ("no_such_metric",)),
        CliCase("table-unknown-group", ("table", f["good"], "--group-by", "no_such_field"), 2, ("no_such_field",)),
        CliCase("table-bad-where", ("table", f["good"], "--where", "N"), 2, ("--where",)),
        CliCase("table-no-match", ("table", f["good"], "--where", "N=999"), 2, ("N",)),
        CliCase("table-unknown-sweep", ("table", f["good"], "--sweep", "nope"), 2, ("nope",)),
        CliCase("table-ok-verbose", ("table", f["good"], "-v", "--group-by", "N"), 0),
        # plot
        CliCase("plot-missing-store", ("plot", f["missing"], "--kind", "phase", "--out", out + ".png"), 2, ("missing.db",)),
        CliCase("plot-random-store", ("plot", f["random"], "--kind", "phase", "--out", out + ".png"), 2, ("random.db",)),
        CliCase("plot-kind", ("plot", f["good"], "--kind", "nope", "--out", out + ".png"), 2, ("--kind",)),
        CliCase("plot-out-missing-folder", ("plot", f["good"], "--kind", "phase", "--out", str(tmp / "nope" / "f.png")),
                2, ("--out",)),
        CliCase("plot-out-a-folder", ("plot", f["good"], "--kind", "phase", "--out", f["dir"]), 2, ("--out",)),
        CliCase("plot-out-wrong-suffix", ("plot", f["good"], "--kind", "phase", "--out", out + ".txt"), 2, ("--out",)),
        CliCase("plot-no-records-of-kind", ("plot", f["good"], "--kind", "compute", "--out", out + ".png"), 2,
                ("training",)),
        CliCase("plot-ok-quiet", ("plot", f["good"], "--kind", "phase", "--out", out + "1.png", "-q"), 0),
        # gap
        CliCase("gap-N-zero", ("gap", "--N", "0"), 2, ("--N",)),
        CliCase("gap-M-negative", ("gap", "--M", "-1"), 2, ("--M",)),
        CliCase("gap-K-too-large", ("gap", "--N", "4", "--M", "3", "--K", "9"), 2, ("--K",)),
        CliCase("gap-K-zero", ("gap", "--K", "0"), 2, ("--K",)),
        CliCase("gap-kind", ("gap", "--kind", "nope"), 2, ("--kind",)),
        CliCase("gap-magnitudes", ("gap", "--magnitudes", "2", "1"), 2, ("--magnitudes",)),
        CliCase("gap-magnitudes-nan", ("gap", "--magnitudes", "nan", "1"), 2, ("--magnitudes",)),
        CliCase("gap-jobs-zero", ("gap", "--jobs", "0"), 2, ("--jobs",)),
        CliCase("gap-seed-negative", ("gap", "--seed", "-3"), 2, ("--seed",)),
        CliCase("gap-ok-quiet", ("gap", "--N", "4", "--M", "3", "--K", "1", "-q"), 0),
        # bench
        CliCase("bench-threads-zero", ("bench", "--threads", "0"), 2, ("--threads",)),
        CliCase("bench-device", ("bench", "--quick", "--device", "tpu9"), 2, ("--device",)),
        # activations
        CliCase("activations-no-action", ("activations",), 2, ("activations",)),
        CliCase("extract-out-missing-folder", ("activations", "extract", "--out", str(tmp / "nope" / "a.safetensors"),
                                              "--tokens", "0"), 2, ("--tokens", "--out")),
        CliCase("extract-layer", ("activations", "extract", "--out", str(tmp / "a.safetensors"), "--layer", "99"), 2,
                ("--layer",)),
        CliCase("extract-corpus-missing", ("activations", "extract", "--out", str(tmp / "a.safetensors"), "--corpus",
                                          str(tmp / "nope.txt")), 2, ("nope.txt",)),
        CliCase("extract-model-folder-empty", ("activations", "extract", "--out", str(tmp / "a.safetensors"), "--model",
                                              f["dir"]), 2, (f["dir"],)),
        CliCase("run-activations-unknown-method", ("run", f["real_bad_method"], "--store", str(tmp / "real.db"),
                                                   "--workers", "1"), 2, ("nope",)),
        CliCase("run-activations-steps-zero", ("run", f["real_steps_zero"], "--store", str(tmp / "real.db"),
                                               "--workers", "1"), 2, ("steps",)),
    ]
    return cases


# ----- the tests ------------------------------------------------------------------------------

_API_TMP = Path(os.environ.get("TMPDIR", "/tmp")) / f"gaptheory-contract-{os.getpid()}"
_API_TMP.mkdir(exist_ok=True)
API_CASES = api_cases(_API_TMP)


#: Cases still answered wrongly, each with where the fix belongs (case id -> reason); strict,
#: so a fix flips one to XPASS and fails the suite until its entry is removed. Empty: every
#: case is refused or answered right.
KNOWN_OPEN: dict[str, str] = {}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN_OPEN[c.id], strict=True))
                                  if c.id in KNOWN_OPEN else c for c in API_CASES],
                         ids=[case.id for case in API_CASES])
def test_public_function_refuses_bad_input_or_answers_right(case):
    category, detail = classify(case)
    assert category in (REFUSED, RIGHT), f"{category}: {detail}"


_CLI_IDS = [case.id for case in cli_cases(_API_TMP / "ids")] if (_API_TMP / "ids").mkdir(exist_ok=True) is None else []


@pytest.mark.parametrize("case_id", _CLI_IDS)
def test_cli_exits_with_the_contract_code_and_one_line(case_id, tmp_path):
    case = {c.id: c for c in cli_cases(tmp_path)}[case_id]
    category, detail = classify_cli(case)
    assert category in (REFUSED, RIGHT), f"{category}: {detail}"


def counts(tmp: Path) -> dict[str, Counter]:
    """Cases per category, for the API and the CLI (``python tests/test_contract.py``)."""
    api = Counter(classify(case)[0] for case in api_cases(tmp))
    (tmp / "cli").mkdir(exist_ok=True)
    cli = Counter(classify_cli(case)[0] for case in cli_cases(tmp / "cli"))
    return {"api": api, "cli": cli}


if __name__ == "__main__":  # pragma: no cover - the report of the counts
    import tempfile

    verbose = "-v" in sys.argv
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if verbose:
            for case in api_cases(tmp):
                category, detail = classify(case)
                if category not in (REFUSED, RIGHT):
                    print(f"api {case.id}: {category}: {detail[:200]}")
            (tmp / "cli").mkdir()
            for case in cli_cases(tmp / "cli"):
                category, detail = classify_cli(case)
                if category not in (REFUSED, RIGHT):
                    print(f"cli {case.id}: {category}: {detail[:200]}")
        print(json.dumps({k: dict(v) for k, v in counts(tmp).items()}, indent=1, sort_keys=True))
