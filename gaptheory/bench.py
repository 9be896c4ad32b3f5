r"""Side-by-side benchmark of gaptheory's batched solvers against what a user would otherwise call.

Everything runs in one process on the same instances: batched LASSO (homotopy, float32
path + float64 finish, and float64) against scikit-learn's ``Lasso`` (all targets in one
``fit``, same objective with ``alpha / M``, at the loosest ``tol`` that still reaches the
accuracy we promise) and against cvxpy (one parametrised problem, Clarabel and OSQP);
batched OMP against scikit-learn's ``OrthogonalMatchingPursuit``; the homotopy solver's wall
time beside a plain torch matmul of its GEMMs (solvers are timed from outside); the exact minimax gap
LP (:func:`gaptheory.gap.relu_minimax_gap`) with its growth in N; and a scaling table over
B and N with time per instance and peak memory.

Timings are medians of interleaved repeats (each repeat runs every contender once, so a
burst of load from other processes hits them alike); wall and CPU time are both kept.
The batched solvers run on :func:`gaptheory._device.default_device` (CUDA when present,
with ``torch.cuda.synchronize`` around every timing and ``torch.cuda.max_memory_allocated``
for memory); scikit-learn, cvxpy and HiGHS run on the CPU. ``passed`` reflects accuracy
(certified gaps, agreement with cvxpy, identical OMP supports); speed targets are
reported under ``targets`` with ``met`` flags, since they depend on the machine and load.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import __version__
from ._device import resolve_device
from ._threads import one_blas_thread
from .instances import make_instance, random_dictionary
from .report import tabulate
from .solvers import CvxpyProblem, Status, lasso, omp

#: Objective agreement with cvxpy promised by the batched LASSO (issue 3, issue 8).
OBJECTIVE_RTOL = 1e-6

#: scikit-learn ``tol`` values tried, loosest first: its ``Lasso`` is timed at the loosest
#: one whose objectives are all within OBJECTIVE_RTOL of the certified optimum, i.e. at its
#: fastest setting that is as accurate as what it is compared with.
SKLEARN_TOLS = (1e-4, 1e-5, 1e-6, 1e-8, 1e-10)

#: cvxpy solvers tried for the LASSO; the fastest one that solves every row is the baseline.
CVXPY_SOLVERS = ("CLARABEL", "OSQP")

#: Defaults of BenchConfig.versus_sizes and .sae_scale (see VERSUS_SIZES and SAE_SCALE).
VERSUS_SIZES_DEFAULT = ((256, 128, 8, 1024), (2048, 512, 32, 512))
SAE_SCALE_DEFAULT = (16384, 768, 64, 32)

#: Speed targets of issue 8 (ratios measured side by side, same instances).
TARGET_SKLEARN_LASSO = 5.0
TARGET_CVXPY = 100.0
TARGET_SKLEARN_OMP = 5.0
TARGET_GAP_SECONDS = 60.0


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeats of :func:`run_bench`; defaults are the issue-8 reference point."""

    B: int = 1024  # rows solved per batch
    N: int = 256  # atoms (latents)
    M: int = 128  # input dimension
    K: int = 8  # nonzeros per code (and OMP's atom budget)
    alpha: float = 0.02  # LASSO penalty weight (scikit-learn's alpha is alpha / M)
    magnitudes: tuple[float, float] = (0.5, 1.5)  # range of the nonzero code entries
    nonnegative: bool = True  # nonnegative codes and nonnegative LASSO (the SAE setting)
    repeats: int = 5  # interleaved timing repeats (after one warm-up)
    cvxpy_rows: int = 24  # rows solved by cvxpy (about 0.1 s per row with Clarabel)
    gap_N: int = 256  # N of the minimax gap LP timing
    gap_M: int = 128  # M of the minimax gap LP timing
    gap_K: int = 4  # K of the minimax gap LP timing
    gap_scaling_n: tuple[int, ...] = (64, 128)  # further N (M = N / 2) for the growth exponent
    gap_jobs: int = -1  # worker processes of the parallel gap timing (-1: one per CPU; 1 skips it)
    scaling_b: tuple[int, ...] = (256, 1024, 4096)  # B values of the scaling table (N, M fixed)
    scaling_n: tuple[int, ...] = (128, 256, 512)  # N values of the scaling table (M = N / 2)
    seed: int = 0  # master seed of every instance
    device: str | None = None  # torch device of the batched solvers (default: cuda if present)
    memory_in_fresh_process: bool = True  # measure peak memory in a new process per point (seconds each)
    versus_sizes: tuple = VERSUS_SIZES_DEFAULT  # (N, M, K, B) points of the SPAMS / sparse_encode comparison
    versus_repeats: int = 5  # interleaved repeats of that comparison
    sae_scale: tuple | None = SAE_SCALE_DEFAULT  # (N, M, K, B) timed with peak memory; None skips it
    sae_gram_budget: int | None = None  # OMP's max_gram_bytes at that point (None: the solver's default)

    @classmethod
    def quick(cls, seed: int = 0) -> "BenchConfig":
        """Tiny sizes for a smoke test (seconds); ratios at these sizes mean little."""
        return cls(B=64, N=64, M=32, K=4, repeats=2, cvxpy_rows=4, gap_N=16,
                   gap_M=8, gap_K=2, gap_scaling_n=(8, 12), scaling_b=(32, 64), scaling_n=(32, 64), seed=seed,
                   memory_in_fresh_process=False, versus_sizes=((48, 24, 3, 32),), versus_repeats=1,
                   sae_scale=(64, 32, 4, 8), sae_gram_budget=64 * 64 * 4)  # float32 Gram fits, float64 does not


@dataclass(frozen=True)
class Timing:
    """Median wall and CPU seconds of one contender over interleaved repeats."""

    wall: float
    cpu: float
    repeats: int


# ----- measurement helpers --------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def interleaved(contenders: dict, repeats: int, device) -> tuple[dict[str, Timing], dict]:
    """Time each callable in ``contenders`` ``repeats`` times, round-robin, after one
    untimed warm-up round; return the median :class:`Timing` and the last output of each."""
    device = resolve_device(device)
    samples = {name: [] for name in contenders}
    outputs = {}
    for round_ in range(repeats + 1):
        for name, fn in contenders.items():
            wall, cpu, outputs[name] = _timed(fn, device)
            if round_:
                samples[name].append((wall, cpu))
    timings = {
        name: Timing(wall=statistics.median(s[0] for s in runs), cpu=statistics.median(s[1] for s in runs),
                     repeats=repeats)
        for name, runs in samples.items()
    }
    return timings, outputs


def _read_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(fn, device) -> tuple[float, str]:
    """Run ``fn`` once; return its peak extra memory in MiB and how it was measured.

    CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at the start. CPU on
    Linux: the resident-set high-water mark (``VmHWM``, reset through
    ``/proc/self/clear_refs``) above the resident set at the start; it covers torch's
    allocator, which ``tracemalloc`` does not see. Elsewhere: growth of
    ``resource.getrusage(...).ru_maxrss``, a lower bound (it only rises past the old peak).
    """
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20, "cuda max_memory_allocated"
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident set
        start = _read_status_kb("VmRSS")
        fn()
        peak = _read_status_kb("VmHWM")
        if start is not None and peak is not None:
            return max(peak - start, 0) / 1024, "VmHWM above VmRSS (Linux)"
    except OSError:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return (after - before) * scale / 2**20, "ru_maxrss growth (lower bound)"


def _scaling_solver(name: str, inst, cfg: "BenchConfig", device):
    """The callable timed and measured by the scaling table for solver ``name``."""
    k = min(cfg.K, inst.D.shape[1])
    if name == "lasso":
        return lambda: lasso(inst.X, inst.D, cfg.alpha, nonnegative=cfg.nonnegative, method="homotopy",
                             dtype="float32", device=device)
    return lambda: omp(inst.X, inst.D, k, dtype="float32", device=device)


def child_peak_memory(spec: dict) -> dict:
    """Entry point of the fresh process of :func:`peak_memory_in_fresh_process`."""
    torch.set_num_threads(spec["threads"])
    cfg = BenchConfig(**{key: tuple(v) if isinstance(v, list) else v for key, v in spec["config"].items()})
    inst = make_instance(spec["N"], spec["M"], min(cfg.K, spec["M"]), spec["B"], seed=cfg.seed,
                         nonnegative=cfg.nonnegative, magnitudes=cfg.magnitudes)
    megabytes, how = peak_memory(_scaling_solver(spec["solver"], inst, cfg, cfg.device), cfg.device)
    return {"peak_mib": megabytes, "memory_measure": how + ", fresh process"}


def peak_memory_in_fresh_process(solver: str, B: int, N: int, M: int, cfg: "BenchConfig") -> dict:
    """Peak extra memory of one solve in a new Python process, whose allocator has cached
    nothing yet (in this process, memory freed by earlier runs hides the peak)."""
    import json
    import subprocess

    spec = {"solver": solver, "B": B, "N": N, "M": M, "threads": torch.get_num_threads(), "config": asdict(cfg)}
    code = "import json, sys; from gaptheory.bench import child_peak_memory; " \
           "print(json.dumps(child_peak_memory(json.loads(sys.argv[1]))))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"peak_mib": float("nan"), "memory_measure": f"fresh process failed: {done.stderr.strip()[-200:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def lasso_objective(X, D, Z, alpha) -> np.ndarray:
    r"""Per-row :math:`\tfrac12\|x - zD\|^2 + \alpha\|z\|_1` in float64."""
    residual = X - Z @ D
    return 0.5 * (residual * residual).sum(1) + alpha * np.abs(Z).sum(1)


def _relative(values, reference) -> float:
    values, reference = np.asarray(values), np.asarray(reference)
    return float(np.max(np.abs(values - reference) / np.maximum(np.abs(reference), np.finfo(float).tiny)))


def _machine(device) -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(resolve_device(device)),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "load_average_1min": load[0],
    }


# ----- the LASSO against cvxpy and scikit-learn -----------------------------------------


def cvxpy_lasso(X, D, alpha, *, nonnegative, solvers=CVXPY_SOLVERS) -> dict[str, dict]:
    """Per-row cvxpy LASSO with each solver (one parametrised problem, compiled before the
    clock starts; OSQP warm-starts from the previous row): seconds per row and objectives,
    or the error when a solver fails on some row."""
    out = {}
    for solver in solvers:
        problem = CvxpyProblem(D, kind="lasso", nonnegative=nonnegative)
        try:
            problem.solve_rows(X[:1], alpha, solver)  # canonicalise outside the timing
            start = time.perf_counter()
            result = problem.solve_rows(X, alpha, solver)
            seconds = time.perf_counter() - start
        except (ValueError, ImportError) as err:
            out[solver] = {"ok": False, "error": str(err)}
            continue
        out[solver] = {"ok": True, "per_instance_s": seconds / len(X), "objective": result.objective,
                       "codes": result.codes}
    return out


def sklearn_lasso_at_its_best(X, D, alpha, *, nonnegative, reference_objective) -> dict:
    """Pick scikit-learn's loosest ``tol`` in SKLEARN_TOLS whose objectives all lie within
    OBJECTIVE_RTOL of ``reference_objective``; return it with the accuracy reached."""
    from sklearn.linear_model import Lasso

    n_dims = D.shape[1]
    tried = []
    for tol in SKLEARN_TOLS:
        model = Lasso(alpha=alpha / n_dims, fit_intercept=False, positive=nonnegative, tol=tol, max_iter=1_000_000)
        codes = np.atleast_2d(model.fit(D.T, X.T).coef_)
        error = _relative(lasso_objective(X, D, codes, alpha), reference_objective)
        tried.append({"tol": tol, "max_relative_objective_error": error})
        if error <= OBJECTIVE_RTOL:
            break

    def fit():
        model = Lasso(alpha=alpha / n_dims, fit_intercept=False, positive=nonnegative, tol=tol, max_iter=1_000_000)
        return np.atleast_2d(model.fit(D.T, X.T).coef_)

    return {"tol": tol, "tried": tried, "fit": fit, "accurate": tried[-1]["max_relative_objective_error"] <= OBJECTIVE_RTOL}


def bench_lasso(cfg: BenchConfig, inst, device) -> dict:
    """Batched LASSO (homotopy float32/float64) vs scikit-learn and cvxpy on ``inst``."""
    X, D, alpha, nonneg = inst.X, inst.D, cfg.alpha, cfg.nonnegative
    ours = {
        "homotopy_float32": lambda: lasso(X, D, alpha, nonnegative=nonneg, method="homotopy", dtype="float32",
                                          device=device, return_info=True),
        "homotopy_float64": lambda: lasso(X, D, alpha, nonnegative=nonneg, method="homotopy", dtype="float64",
                                          device=device, return_info=True),
    }
    reference = ours["homotopy_float64"]()
    sk = None
    try:
        sk = sklearn_lasso_at_its_best(X, D, alpha, nonnegative=nonneg, reference_objective=reference.objective)
    except ImportError:
        pass
    contenders = dict(ours)
    if sk is not None:
        contenders["sklearn_lasso"] = sk["fit"]
    timings, outputs = interleaved(contenders, cfg.repeats, device)
    rows = slice(0, min(cfg.cvxpy_rows, len(X)))
    cvx = cvxpy_lasso(X[rows], D, alpha, nonnegative=nonneg)
    b = len(X)
    out = {"per_instance_s": {name: t.wall / b for name, t in timings.items()},
           "per_instance_cpu_s": {name: t.cpu / b for name, t in timings.items()}}
    best = min(ours, key=lambda name: timings[name].wall)
    out["best"] = best
    ours_s = timings[best].wall / b
    accuracy = {}
    for name in ours:
        result = outputs[name]
        accuracy[name] = {
            "all_optimal": bool((result.status == Status.OPTIMAL).all()),
            "max_relative_gap": float(np.max(result.duality_gap / np.maximum(result.objective, 1e-300))),
            "objective_matches_codes": _relative(lasso_objective(X, D, result.codes, alpha), result.objective) <= 1e-9,
        }
    out["accuracy"] = accuracy
    if sk is not None:
        out["sklearn"] = {"tol": sk["tol"], "tried": sk["tried"], "accurate": sk["accurate"]}
        out["ratio_vs_sklearn"] = timings["sklearn_lasso"].wall / timings[best].wall
    solved = {name: v for name, v in cvx.items() if v["ok"]}
    out["cvxpy"] = {name: ({"per_instance_s": v["per_instance_s"],
                            "max_relative_objective_vs_ours": _relative(v["objective"], reference.objective[rows])}
                           if v["ok"] else {"error": v["error"]}) for name, v in cvx.items()}
    if solved:
        fastest = min(solved, key=lambda name: solved[name]["per_instance_s"])
        accurate = [name for name in solved if name == "CLARABEL"] or list(solved)
        judge = accurate[0]  # the interior-point answer is the ground truth for agreement
        out["cvxpy_fastest"] = fastest
        out["ratio_vs_cvxpy"] = solved[fastest]["per_instance_s"] / ours_s
        out["agreement_solver"] = judge
        out["max_relative_objective_vs_cvxpy"] = {
            name: _relative(outputs[name].objective[rows], solved[judge]["objective"]) for name in ours
        }
    return out


# ----- OMP against scikit-learn ---------------------------------------------------------


def bench_omp(cfg: BenchConfig, inst, device) -> dict:
    """Batched OMP (float32 selection + float64 refit, and float64) vs scikit-learn."""
    X, D, k = inst.X, inst.D, min(cfg.K, inst.D.shape[1])
    contenders = {
        "omp_float32": lambda: omp(X, D, k, dtype="float32", device=device),
        "omp_float64": lambda: omp(X, D, k, dtype="float64", device=device),
    }
    try:
        from sklearn.linear_model import OrthogonalMatchingPursuit

        contenders["sklearn_omp"] = lambda: np.atleast_2d(
            OrthogonalMatchingPursuit(n_nonzero_coefs=k, fit_intercept=False).fit(D.T, X.T).coef_)
    except ImportError:
        pass
    timings, outputs = interleaved(contenders, cfg.repeats, device)
    b = len(X)
    ours = [name for name in contenders if name.startswith("omp")]
    best = min(ours, key=lambda name: timings[name].wall)
    out = {"per_instance_s": {name: t.wall / b for name, t in timings.items()},
           "per_instance_cpu_s": {name: t.cpu / b for name, t in timings.items()}, "best": best,
           "true_support_recovered": {name: float(np.mean(np.all((outputs[name] != 0) == (inst.Z != 0), axis=1)))
                                      for name in ours}}
    if "sklearn_omp" in outputs:
        theirs = outputs["sklearn_omp"]
        out["identical_supports"] = {name: bool(np.array_equal(outputs[name] != 0, theirs != 0)) for name in ours}
        out["max_code_difference"] = {name: float(np.max(np.abs(outputs[name] - theirs))) for name in ours}
        out["ratio_vs_sklearn"] = timings["sklearn_omp"].wall / timings[best].wall
    return out


# ----- dense phase against a plain matmul -----------------------------------------------


def bench_dense(cfg: BenchConfig, inst, device) -> dict:
    """The float32 homotopy LASSO timed from outside (public :func:`lasso`) beside
    ``torch.matmul`` of its two float64 GEMMs (``X D^T`` and ``D D^T``) in the same run:
    the fraction of the solver's wall time that those GEMMs alone would take."""
    device = resolve_device(device)
    X, D = inst.X, inst.D
    wall, _, _ = _timed(lambda: lasso(X, D, cfg.alpha, nonnegative=cfg.nonnegative, method="homotopy",
                                      device=device, dtype="float32"), device)
    X64 = torch.as_tensor(X, dtype=torch.float64, device=device)
    D64 = torch.as_tensor(D, dtype=torch.float64, device=device)
    Dt64 = D64.T.contiguous()
    timings, _ = interleaved({"matmul": lambda: X64 @ Dt64, "gram": lambda: D64 @ Dt64}, max(3, cfg.repeats), device)
    b, m, n = X.shape[0], X.shape[1], D.shape[0]
    matmul_gflops = 2 * b * m * n / timings["matmul"].wall / 1e9
    gemm_seconds = timings["matmul"].wall + timings["gram"].wall
    return {
        "solver_wall_s": wall,
        "gemm_seconds": gemm_seconds,
        "gemm_fraction_of_solver_time": gemm_seconds / wall if wall > 0 else float("nan"),
        "matmul_float64_gflops": matmul_gflops,
    }


# ----- the minimax gap LP ---------------------------------------------------------------


def bench_gap(cfg: BenchConfig) -> dict:
    """Seconds of :func:`gaptheory.gap.relu_minimax_gap` for all latents, and the exponent
    p of time ~ N^p fitted (least squares in log-log) over the N values tried (M = N / 2
    for the extra points)."""
    try:
        from .gap import relu_minimax_gap
    except ImportError as err:  # pragma: no cover - gaptheory.gap is part of the package
        return {"available": False, "error": str(err)}
    points = []
    sizes = sorted({(n, max(2, n // 2)) for n in cfg.gap_scaling_n} | {(cfg.gap_N, cfg.gap_M)})
    for N, M in sizes:
        D = random_dictionary(N, M, seed=cfg.seed)
        K = min(cfg.gap_K, N)
        start = time.perf_counter()
        result = relu_minimax_gap(D, K)
        seconds = time.perf_counter() - start
        points.append({"N": N, "M": M, "K": K, "seconds": seconds,
                       "worst_eps": float(result.worst), "success": bool(result.success)})
        if (N, M) == (cfg.gap_N, cfg.gap_M):
            main_eps = result.eps
    main = next(p for p in points if p["N"] == cfg.gap_N and p["M"] == cfg.gap_M)
    exponent = float("nan")
    if len(points) >= 2:
        logs = np.log([[p["N"], p["seconds"]] for p in points])
        exponent = float(np.polyfit(logs[:, 0], logs[:, 1], 1)[0])
    out = {"available": True, "seconds": main["seconds"], "success": main["success"], "points": points,
           "exponent_in_n": exponent}
    # the binary form (method="auto", the default) against the compact LP in HiGHS, same D, one after the other
    D = random_dictionary(cfg.gap_N, cfg.gap_M, seed=cfg.seed)
    start = time.perf_counter()
    compact = relu_minimax_gap(D, min(cfg.gap_K, cfg.gap_N), method="highs")
    seconds = time.perf_counter() - start
    out["compact_lp"] = {"seconds": seconds, "speedup_of_auto": seconds / main["seconds"],
                         "max_eps_difference": float(np.max(np.abs(compact.eps - main_eps))),
                         "success": bool(compact.success)}
    jobs = (os.cpu_count() or 1) if cfg.gap_jobs == -1 else cfg.gap_jobs
    if jobs > 1:  # the same call at the main size, latents split over processes, right after the serial one
        D = random_dictionary(cfg.gap_N, cfg.gap_M, seed=cfg.seed)
        start = time.perf_counter()
        parallel = relu_minimax_gap(D, min(cfg.gap_K, cfg.gap_N), n_jobs=jobs)
        seconds = time.perf_counter() - start
        out["parallel"] = {"N": cfg.gap_N, "jobs": jobs, "seconds": seconds, "speedup": main["seconds"] / seconds,
                           "same_eps": bool(parallel.worst == main["worst_eps"]), "success": bool(parallel.success)}
    return out


# ----- scaling over B and N -------------------------------------------------------------


def bench_scaling(cfg: BenchConfig, device) -> list[dict]:
    """Time per instance and peak memory of the batched LASSO (float32 path) and OMP over
    B (N, M fixed) and over N (B fixed, M = N / 2)."""
    grid = [(b, cfg.N, cfg.M) for b in cfg.scaling_b]
    grid += [(cfg.B, n, max(2, n // 2)) for n in cfg.scaling_n if (cfg.B, n, max(2, n // 2)) not in grid]
    rows = []
    for b, n, m in grid:
        inst = make_instance(n, m, min(cfg.K, m), b, seed=cfg.seed, nonnegative=cfg.nonnegative,
                             magnitudes=cfg.magnitudes)
        solvers = {name: _scaling_solver(name, inst, cfg, device) for name in ("lasso", "omp")}
        timings, _ = interleaved(solvers, max(1, min(cfg.repeats, 3)), device)
        for name, fn in solvers.items():
            if cfg.memory_in_fresh_process:
                memory = peak_memory_in_fresh_process(name, b, n, m, cfg)
            else:
                megabytes, how = peak_memory(fn, device)
                memory = {"peak_mib": megabytes, "memory_measure": how + ", this process (allocator caches hide reuse)"}
            rows.append({"solver": name, "B": b, "N": n, "M": m, "per_instance_s": timings[name].wall / b, **memory})
    return rows


# ----- against SPAMS and scikit-learn's sparse_encode ------------------------------------

#: (N, M, K, B) of the side-by-side comparison with SPAMS and ``sparse_encode``.
VERSUS_SIZES = VERSUS_SIZES_DEFAULT

#: Throughput targets against SPAMS at each size of VERSUS_SIZES, and against the best
#: ``sparse_encode`` algorithm at every size.
TARGET_SPAMS = (2.0, 1.0)
TARGET_SPARSE_ENCODE = 10.0

#: LASSO objectives must equal SPAMS's (float64) to this relative error: both solve
#: exactly on the final support, so they differ by round-off of the finish (~1e-15).
AGREEMENT_RTOL = 1e-9

#: ``sparse_encode`` solves row by row: it is timed on the first this many rows of each
#: instance (time per instance is what is compared), so the bench stays within minutes.
SPARSE_ENCODE_ROWS = 128

#: ``sparse_encode`` algorithms tried for each problem; the fastest is the baseline.
SPARSE_ENCODE_ALGORITHMS = {"lasso": ("lasso_lars", "lasso_cd"), "omp": ("omp",)}

#: SAE-scale point (N, M, K, B) timed with peak memory: the float64 Gram matrix there
#: (N^2 8 bytes = 2 GiB) is over the default memory budget, so OMP runs in direct form.
SAE_SCALE = SAE_SCALE_DEFAULT


def _spams_calls(X, D, K, alpha, dtype):
    """SPAMS's ``lasso`` (LARS, mode 2: the penalised form, ``pos=True``) and ``omp`` on
    Fortran-ordered (M, B) and (M, N) arrays prepared outside the clock, one thread; codes
    come back as (B, N) dense float64. None when SPAMS is not importable."""
    try:
        import spams
    except ImportError:
        return None
    Xf, Df = np.asfortranarray(X.T.astype(dtype)), np.asfortranarray(D.T.astype(dtype))
    return {
        "lasso": lambda: spams.lasso(Xf, Df, lambda1=alpha, mode=2, pos=True, numThreads=1),
        "omp": lambda: spams.omp(Xf, Df, L=K, numThreads=1),
    }


def _dense(codes) -> np.ndarray:
    """SPAMS's sparse (N, B) output as dense (B, N) float64."""
    return np.asarray(codes.toarray() if hasattr(codes, "toarray") else codes, dtype=np.float64).T


def _sparse_encode_call(X, D, K, alpha, dtype, algorithm):
    """scikit-learn's ``sparse_encode`` in gaptheory's layout (X (B, M), dictionary (N, M):
    no transposes), one job; its ``alpha`` is the weight of the l1 norm (it rescales for
    ``lasso_cd`` itself)."""
    import warnings

    from sklearn.decomposition import sparse_encode

    Xd, Dd = X[:SPARSE_ENCODE_ROWS].astype(dtype), D.astype(dtype)
    options = ({"n_nonzero_coefs": K} if algorithm == "omp"
               else {"alpha": alpha, "positive": True, "max_iter": 10_000})

    def call():
        with warnings.catch_warnings():  # lasso_cd warns on rows that stop at its own tolerance
            warnings.simplefilter("ignore")
            return sparse_encode(Xd, Dd, algorithm=algorithm, n_jobs=1, **options)

    return call


def bench_versus(N, M, K, B, *, alpha, magnitudes, seed, repeats, device) -> dict:
    """gaptheory's LASSO and OMP against SPAMS and ``sparse_encode``, float32 and float64,
    on one nonnegative instance, one thread each, timed interleaved.

    Agreement is checked in the same run: every gaptheory LASSO objective (either dtype)
    against SPAMS float64's to AGREEMENT_RTOL, every OMP support against SPAMS float64's.
    """
    inst = make_instance(N, M, K, B, seed=seed, nonnegative=True, magnitudes=magnitudes)
    X, D = inst.X, inst.D
    contenders, notes = {}, []
    for dt in ("float32", "float64"):
        contenders[f"lasso/gaptheory/{dt}"] = (lambda dt=dt: lasso(X, D, alpha, nonnegative=True, dtype=dt,
                                                                  device=device, return_info=True))
        contenders[f"omp/gaptheory/{dt}"] = (lambda dt=dt: omp(X, D, K, dtype=dt, device=device,
                                                              return_info=True))
        calls = _spams_calls(X, D, K, alpha, dt)
        if calls is None:
            notes.append("SPAMS not importable (pip install spams-bin): its columns are skipped")
        else:
            for problem, call in calls.items():
                contenders[f"{problem}/spams/{dt}"] = call
    sparse_encode_choice = {}
    try:
        import sklearn  # noqa: F401

        with one_blas_thread():
            for problem, algorithms in SPARSE_ENCODE_ALGORITHMS.items():
                for dt in ("float32", "float64"):
                    trial = {}
                    for algorithm in algorithms:  # one untimed run, then one timed: pick the fastest
                        call = _sparse_encode_call(X, D, K, alpha, dt, algorithm)
                        call()
                        trial[algorithm] = _timed(call, torch.device("cpu"))[0]
                    best = min(trial, key=trial.get)
                    sparse_encode_choice[f"{problem}/{dt}"] = {"algorithm": best, "trial_s": trial}
                    contenders[f"{problem}/sparse_encode/{dt}"] = _sparse_encode_call(X, D, K, alpha, dt, best)
    except ImportError:
        notes.append("scikit-learn not importable: the sparse_encode columns are skipped")
    with one_blas_thread():
        timings, outputs = interleaved(contenders, repeats, device)
    rows = {name: (min(B, SPARSE_ENCODE_ROWS) if "/sparse_encode/" in name else B) for name in timings}
    per = {name: t.wall / rows[name] for name, t in timings.items()}
    out = {"N": N, "M": M, "K": K, "B": B, "alpha": alpha, "per_instance_s": per, "notes": notes,
           "sparse_encode": sparse_encode_choice, "checks": {}, "ratios": {}, "forms": {}}
    spams_lasso = outputs.get("lasso/spams/float64")
    spams_omp = outputs.get("omp/spams/float64")
    for dt in ("float32", "float64"):
        ours_lasso, ours_omp = outputs[f"lasso/gaptheory/{dt}"], outputs[f"omp/gaptheory/{dt}"]
        out["forms"][dt] = {"lasso": ours_lasso.form, "omp": ours_omp.form}
        out["checks"][f"lasso/{dt}: every row certified optimal"] = bool((ours_lasso.status == Status.OPTIMAL).all())
        if spams_lasso is not None:
            theirs = lasso_objective(X, D, _dense(spams_lasso), alpha)
            error = _relative(lasso_objective(X, D, ours_lasso.codes, alpha), theirs)
            out[f"lasso_objective_vs_spams/{dt}"] = error
            out["checks"][f"lasso/{dt}: objectives within {AGREEMENT_RTOL:g} of SPAMS"] = error <= AGREEMENT_RTOL
        if spams_omp is not None:
            same = np.all((ours_omp.codes != 0) == (_dense(spams_omp) != 0), axis=1)
            out[f"omp_identical_support_fraction/{dt}"] = float(same.mean())
            out["checks"][f"omp/{dt}: supports identical to SPAMS"] = bool(same.all())
        encoded = outputs.get(f"omp/sparse_encode/{dt}")
        if encoded is not None:  # plain OMP (scikit-learn's Gram-form OMP)
            same = np.all((ours_omp.codes[:SPARSE_ENCODE_ROWS] != 0) == (np.asarray(encoded) != 0), axis=1)
            out[f"omp_identical_support_fraction_sparse_encode/{dt}"] = float(same.mean())
            out["checks"][f"omp/{dt}: supports identical to sparse_encode omp"] = bool(same.all())
        for problem in ("lasso", "omp"):
            ours = per[f"{problem}/gaptheory/{dt}"]
            for other in ("spams", "sparse_encode"):
                name = f"{problem}/{other}/{dt}"
                if name in per:
                    out["ratios"][name] = per[name] / ours
    return out


def bench_sae_scale(N, M, K, B, *, alpha, seed, device, max_gram_bytes=None) -> list[dict]:
    """Time per instance and peak memory at an SAE's size: OMP in float32 and float64 (in the
    form ``omp`` chooses: at N = 16384 and B = 32, direct: its Gram matrix costs more than the
    rows, and in float64 exceeds the memory budget) and the LASSO in float64 (Gram form)."""
    inst = make_instance(N, M, K, B, seed=seed, nonnegative=True, magnitudes=(0.5, 1.5))
    budget = {} if max_gram_bytes is None else {"max_gram_bytes": max_gram_bytes}
    runs = {
        "omp/float32": lambda: omp(inst.X, inst.D, K, dtype="float32", device=device, return_info=True, **budget),
        "omp/float64": lambda: omp(inst.X, inst.D, K, dtype="float64", device=device, return_info=True, **budget),
        "lasso/float64": lambda: lasso(inst.X, inst.D, alpha, nonnegative=True, device=device, return_info=True),
    }
    rows = []
    for name, fn in runs.items():
        box = {}

        def run(fn=fn):
            box["wall"], _, box["result"] = _timed(fn, resolve_device(device))

        with one_blas_thread():
            megabytes, how = peak_memory(run, device)
        result = box["result"]
        rows.append({"solver": name, "N": N, "M": M, "K": K, "B": B, "per_instance_s": box["wall"] / B,
                     "peak_mib": megabytes, "memory_measure": how, "form": result.form,
                     "all_optimal": bool((result.status == Status.OPTIMAL).all())})
    return rows


def render_versus(versus: list[dict]) -> str:
    """The side-by-side table of :func:`bench_versus` outcomes (us per instance, ratios)."""
    rows = []
    for point in versus:
        per, ratios = point["per_instance_s"], point["ratios"]
        size = f"{point['N']},{point['M']},{point['K']},{point['B']}"
        for problem in ("lasso", "omp"):
            for dt in ("float32", "float64"):
                def cell(other):
                    name = f"{problem}/{other}/{dt}"
                    if name not in per:
                        return "-"
                    return f"{_us(per[name])} ({ratios[name]:.2f}x)"

                se = point["sparse_encode"].get(f"{problem}/{dt}", {}).get("algorithm", "")
                if problem == "lasso":
                    agree = f"obj vs SPAMS {point.get(f'lasso_objective_vs_spams/{dt}', float('nan')):.1e}"
                else:
                    agree = (f"same support as SPAMS "
                             f"{point.get(f'omp_identical_support_fraction/{dt}', float('nan')):.1%}, "
                             f"as sparse_encode "
                             f"{point.get(f'omp_identical_support_fraction_sparse_encode/{dt}', float('nan')):.1%}")
                rows.append([size, problem, dt, _us(per[f"{problem}/gaptheory/{dt}"]), cell("spams"),
                             cell("sparse_encode") + (f" [{se}]" if se else ""), point["forms"][dt][problem], agree])
    table = tabulate(["N,M,K,B", "problem", "dtype", "gaptheory us", "SPAMS us (ratio)",
                       "sparse_encode us (ratio) [algorithm]", "form", "agreement"], rows)
    notes = sorted({note for point in versus for note in point["notes"]})
    return "\n".join([table, *notes, "(ratio = their time / gaptheory's: above 1, gaptheory is faster; "
                                     f"sparse_encode timed on the first {SPARSE_ENCODE_ROWS} rows)"])


# ----- the whole benchmark --------------------------------------------------------------


def _targets(cfg: BenchConfig, lasso_out, omp_out, dense, gap) -> list[dict]:
    def target(name, value, bound, relation):
        met = bool(value >= bound) if relation == ">=" else bool(value < bound)
        return {"target": name, "value": value, "relation": relation, "bound": bound,
                "met": met if np.isfinite(value) else False}

    out = []
    if "ratio_vs_sklearn" in lasso_out:
        out.append(target("LASSO throughput vs scikit-learn Lasso", lasso_out["ratio_vs_sklearn"],
                          TARGET_SKLEARN_LASSO, ">="))
    if "ratio_vs_cvxpy" in lasso_out:
        out.append(target(f"LASSO throughput vs cvxpy/{lasso_out['cvxpy_fastest']}", lasso_out["ratio_vs_cvxpy"],
                          TARGET_CVXPY, ">="))
    if "ratio_vs_sklearn" in omp_out:
        out.append(target("OMP throughput vs scikit-learn OMP", omp_out["ratio_vs_sklearn"], TARGET_SKLEARN_OMP, ">="))
    if gap.get("available"):
        out.append(target(f"relu_minimax_gap seconds at N={cfg.gap_N}, M={cfg.gap_M}, K={cfg.gap_K}",
                          gap["seconds"], TARGET_GAP_SECONDS, "<"))
    return out


def _versus_targets(versus: list[dict]) -> list[dict]:
    """Targets of the SPAMS / sparse_encode comparison: gaptheory >= TARGET_SPAMS[i] times
    SPAMS at the i-th point of VERSUS_SIZES (its last value beyond), >= TARGET_SPARSE_ENCODE
    times the best ``sparse_encode``, in the same dtype; float32 no slower than float64."""
    out = []
    for index, point in enumerate(versus):
        where = f"N={point['N']}, M={point['M']}, K={point['K']}, B={point['B']}"
        spams_bound = TARGET_SPAMS[min(index, len(TARGET_SPAMS) - 1)]
        for name, ratio in point["ratios"].items():
            problem, other, dt = name.split("/")
            bound = spams_bound if other == "spams" else TARGET_SPARSE_ENCODE
            out.append({"target": f"{problem.upper()} {dt} vs {other} at {where}", "value": ratio, "relation": ">=",
                        "bound": bound, "met": bool(np.isfinite(ratio) and ratio >= bound)})
        for problem in ("lasso", "omp"):
            per = point["per_instance_s"]
            value = per[f"{problem}/gaptheory/float64"] / per[f"{problem}/gaptheory/float32"]
            out.append({"target": f"{problem.upper()} float32 speed / float64 speed at {where}", "value": value,
                        "relation": ">=", "bound": 1.0, "met": bool(value >= 1.0)})
    return out


def _checks(lasso_out, omp_out) -> dict[str, bool]:
    checks = {}
    for name, acc in lasso_out["accuracy"].items():
        checks[f"{name}: every row certified optimal"] = acc["all_optimal"] and acc["objective_matches_codes"]
    for name, error in lasso_out.get("max_relative_objective_vs_cvxpy", {}).items():
        checks[f"{name}: objective within {OBJECTIVE_RTOL:g} of cvxpy"] = error <= OBJECTIVE_RTOL
    for name, same in omp_out.get("identical_supports", {}).items():
        checks[f"{name}: supports identical to scikit-learn"] = same
    return checks


def run_bench(cfg: BenchConfig | None = None, *, progress=None) -> dict:
    """Run every measurement of the benchmark and return one JSON-ready dict.

    Parameters
    ----------
    cfg : BenchConfig, optional
        Sizes and repeats (default: the issue-8 reference point; ``BenchConfig.quick()``
        for a smoke test).
    progress : callable, optional
        Called with a short string before each stage (e.g. print to stderr).
    """
    cfg = cfg or BenchConfig()
    device = resolve_device(cfg.device)
    say = progress or (lambda message: None)
    machine = _machine(device)
    started = time.perf_counter()
    inst = make_instance(cfg.N, cfg.M, cfg.K, cfg.B, seed=cfg.seed,
                         nonnegative=cfg.nonnegative, magnitudes=cfg.magnitudes)
    say("lasso: homotopy vs scikit-learn vs cvxpy")
    lasso_out = bench_lasso(cfg, inst, device)
    say("omp: batched vs scikit-learn")
    omp_out = bench_omp(cfg, inst, device)
    versus = []
    for N, M, K, B in cfg.versus_sizes:
        say(f"lasso and omp vs SPAMS and sparse_encode at N={N}, M={M}, K={K}, B={B}")
        versus.append(bench_versus(N, M, K, B, alpha=cfg.alpha, magnitudes=cfg.magnitudes, seed=cfg.seed,
                                   repeats=cfg.versus_repeats, device=device))
    sae = []
    if cfg.sae_scale is not None:
        say(f"SAE scale N, M, K, B = {cfg.sae_scale}")
        sae = bench_sae_scale(*cfg.sae_scale, alpha=cfg.alpha, seed=cfg.seed, device=device,
                              max_gram_bytes=cfg.sae_gram_budget)
    say("homotopy vs its GEMMs")
    dense = bench_dense(cfg, inst, device)
    say("minimax gap LP")
    gap = bench_gap(cfg)
    say("scaling over B and N")
    scaling = bench_scaling(cfg, device)
    checks = _checks(lasso_out, omp_out)
    for point in versus:
        for name, ok in point["checks"].items():
            checks[f"N={point['N']}: {name}"] = ok
    machine["load_average_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "verb": "bench",
        "version": __version__,
        "seed": cfg.seed,
        "config": asdict(cfg),
        "machine": machine,
        "lasso": lasso_out,
        "omp": omp_out,
        "dense": dense,
        "gap": gap,
        "scaling": scaling,
        "versus": versus,
        "sae_scale": sae,
        "targets": _targets(cfg, lasso_out, omp_out, dense, gap) + _versus_targets(versus),
        "checks": checks,
        "passed": all(checks.values()),
        "seconds": time.perf_counter() - started,
    }


# ----- rendering --------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def render(outcome: dict) -> str:
    """Plain-text tables of a :func:`run_bench` outcome."""
    cfg, mach = outcome["config"], outcome["machine"]
    parts = [
        f"gaptheory bench {outcome['version']}: B={cfg['B']}, N={cfg['N']}, M={cfg['M']}, "
        f"K={cfg['K']}, alpha={cfg['alpha']}, codes in {tuple(cfg['magnitudes'])}, "
        f"nonnegative={cfg['nonnegative']}, seed={cfg['seed']}",
        f"machine: {mach['processor']}, {mach['cpu_count']} cores, torch threads {mach['torch_threads']}, "
        f"device {mach['device']}; load average {mach['load_average_1min']:.2f} at start, "
        f"{mach['load_average_1min_end']:.2f} at end",
        "",
    ]
    lasso_out, omp_out = outcome["lasso"], outcome["omp"]
    rows = []
    for name, seconds in lasso_out["per_instance_s"].items():
        cpu = lasso_out["per_instance_cpu_s"][name]
        note = ""
        if name in lasso_out["accuracy"]:
            acc = lasso_out["accuracy"][name]
            vs = lasso_out.get("max_relative_objective_vs_cvxpy", {}).get(name, float("nan"))
            note = f"max rel gap {acc['max_relative_gap']:.1e}; obj vs cvxpy {vs:.1e}"
        elif name == "sklearn_lasso":
            note = f"tol={lasso_out['sklearn']['tol']:g} (loosest reaching {OBJECTIVE_RTOL:g})"
        rows.append(["lasso", name, _us(seconds), _us(cpu), note])
    for name, info in lasso_out["cvxpy"].items():
        if "error" in info:
            rows.append(["lasso", f"cvxpy/{name}", "failed", "", info["error"][:60]])
        else:
            rows.append(["lasso", f"cvxpy/{name}", _us(info["per_instance_s"]), "",
                         f"obj vs ours {info['max_relative_objective_vs_ours']:.1e}"])
    for name, seconds in omp_out["per_instance_s"].items():
        note = ""
        if name in omp_out.get("identical_supports", {}):
            note = (f"supports identical to sklearn: {omp_out['identical_supports'][name]}; "
                    f"max |dz| {omp_out['max_code_difference'][name]:.1e}")
        rows.append(["omp", name, _us(seconds), _us(omp_out["per_instance_cpu_s"][name]), note])
    parts.append(tabulate(["problem", "solver", "us/instance (wall)", "us/instance (cpu)", "accuracy"], rows))
    dense = outcome["dense"]
    parts += ["", f"homotopy float32: {dense['solver_wall_s'] * 1e3:.1f} ms; its two float64 GEMMs alone (torch matmul, "
                  f"{dense['matmul_float64_gflops']:.1f} GFLOP/s) take {dense['gemm_fraction_of_solver_time']:.0%} of that"]
    gap = outcome["gap"]
    if gap.get("available"):
        pts = ", ".join(f"N={p['N']}: {p['seconds']:.2f}s" for p in gap["points"])
        parts.append(f"relu_minimax_gap (all latents): {pts}; time ~ N^{gap['exponent_in_n']:.2f}")
        if "compact_lp" in gap:
            lp = gap["compact_lp"]
            parts.append(f"relu_minimax_gap at N={cfg['gap_N']}: method='highs' (compact LP for every latent) "
                         f"{lp['seconds']:.2f}s, the default binary form {lp['speedup_of_auto']:.1f}x faster; "
                         f"eps* differ by at most {lp['max_eps_difference']:.1e}")
        if "parallel" in gap:
            par = gap["parallel"]
            parts.append(f"relu_minimax_gap at N={par['N']}, n_jobs={par['jobs']}: {par['seconds']:.2f}s "
                         f"({par['speedup']:.2f}x the serial call; same eps*: {par['same_eps']})")
    if outcome.get("versus"):
        parts += ["", "LASSO (alpha={}, nonnegative) and OMP against SPAMS and scikit-learn sparse_encode, "
                      "one thread each, same instances:".format(cfg["alpha"]), render_versus(outcome["versus"])]
    if outcome.get("sae_scale"):
        parts += ["", "SAE scale (form: gram = N x N Gram matrix formed; direct = Gram rows from D per step, "
                      "the Gram matrix being over the memory budget):",
                  tabulate(["solver", "N", "M", "K", "B", "us/instance", "peak MiB", "form", "all optimal"],
                            [[r["solver"], r["N"], r["M"], r["K"], r["B"], _us(r["per_instance_s"]),
                              f"{r['peak_mib']:.0f}", r["form"], r["all_optimal"]] for r in outcome["sae_scale"]]),
                  f"(memory: {outcome['sae_scale'][0]['memory_measure']})"]
    parts += ["", tabulate(["target", "value", "bound", "met"],
                            [[t["target"], f"{t['value']:.3g}", f"{t['relation']} {t['bound']:g}", t["met"]]
                             for t in outcome["targets"]])]
    parts += ["", tabulate(["solver", "B", "N", "M", "us/instance", "peak MiB"],
                            [[r["solver"], r["B"], r["N"], r["M"], _us(r["per_instance_s"]), f"{r['peak_mib']:.1f}"]
                             for r in outcome["scaling"]])]
    if outcome["scaling"]:
        parts.append(f"(memory: {outcome['scaling'][0]['memory_measure']})")
    if outcome["machine"]["device"] == "cpu":
        parts.append("(device cpu: no GPU on this machine; on CUDA the same bench runs the batched solvers on the GPU)")
    failed = [name for name, ok in outcome["checks"].items() if not ok]
    parts += ["", "accuracy checks: " + ("all passed" if not failed else "FAILED: " + "; ".join(failed))]
    return "\n".join(parts)
