r"""Tables and figures, built from the results store only.

``report`` reads nothing from gaptheory but :mod:`gaptheory.experiments.store` (it writes its files
through :mod:`gaptheory._io` and renders its tables with :func:`tabulate`, the package's one
table renderer), so every table and figure can be rebuilt from the database file:
``gaptheory table results.db`` and ``gaptheory plot results.db --kind compute|phase|gap``.

Record fields each figure reads (written by :mod:`gaptheory.experiments.tasks`):

- ``phase`` (kind ``recovery``): ``N``, ``M``, ``K``, ``success_rate``,
  ``transition_K_over_M`` (the statistical-dimension prediction at that M/N).
- ``compute`` (kind ``training``): ``method``, ``test_mcc``,
  ``inference_flops_per_sample``, ``train_flops``.
- ``gap`` (kind ``gap``): ``N``, ``M``, ``K``, ``eps_star``, ``gap_lower_bound``,
  ``per_sample_error`` and, where an SAE was trained, ``sae_worst_case``.
"""

from __future__ import annotations

import math
import os
import numbers
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from ._io import atomic_file
from ._table import tabulate
from .experiments.store import ResultStore

#: Okabe & Ito (2008) colour-blind-safe palette, black first.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")

#: Fields that describe how a record was made, never averaged as metrics.
BOOKKEEPING = frozenset({"key", "sweep", "kind", "status", "version", "seed", "device", "split", "host",
                         "error", "traceback", "metrics"})

#: Digits shown in table cells (mean and spread).
TABLE_DIGITS = 3

#: Figure resolution; 150 dpi keeps lines crisp in a PDF and files small.
FIGURE_DPI = 150

PLOT_KINDS = ("compute", "phase", "gap", "ev_l0", "curves")

#: Colours in the order series use them: the Okabe-Ito colours (yellow last, low contrast on
#: white; black kept for the Pareto front), then Paul Tol's muted scheme, so twelve methods
#: each get a colour of their own.
SERIES_COLOURS = tuple(OKABE_ITO[i] for i in (1, 2, 3, 5, 6, 7, 4)) + (
    "#332288", "#88CCEE", "#44AA99", "#999933", "#882255")

#: Markers in the order series use them, one per colour.
SERIES_MARKERS = "osD^v<>pXhP*"


def series_styles(names) -> dict:
    """A distinct (colour, marker) per name, in sorted name order (stable across figures).

    Examples
    --------
    >>> styles = series_styles(["b", "a"])
    >>> styles["a"] != styles["b"]
    True
    """
    names = sorted({str(name) for name in names})
    if len(names) > len(SERIES_COLOURS):
        raise ValueError(f"{len(names)} series exceed the {len(SERIES_COLOURS)} distinct colours; plot fewer methods "
                         "per figure (filter with --where).")
    return {name: (SERIES_COLOURS[i], SERIES_MARKERS[i]) for i, name in enumerate(names)}


def _nonnegative_yerr(means, spreads):
    """Error bars of a nonnegative quantity: the lower arm stops at 0 (mean - spread clipped)."""
    return [[min(s, max(m, 0.0)) for m, s in zip(means, spreads)], list(spreads)]


# ---------------------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------------------


def _mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_names(records: list[dict]) -> list[str]:
    """The metrics the records declare (their ``metrics`` field), in first-seen order."""
    names: list[str] = []
    for record in records:
        for name in (record.get("metrics") or "").split(","):
            if name and name not in names:
                names.append(name)
    return names


def _check_records(records, name: str = "records") -> list[dict]:
    """``records`` as a list of dicts; a single record, None or a string are refused."""
    if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Iterable):
        raise TypeError(f"{name} must be a list of dicts (store records, e.g. store.records()); got "
                        f"{type(records).__name__}. Wrap a single record as [record].")
    records = list(records)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"{name}[{i}] is a {type(record).__name__}, not a dict; pass store records.")
    return records


def _check_fields(names, name: str, records: list[dict], *, numeric: bool) -> list[str]:
    """``names`` (one field or a sequence) as a list of field names the records have.

    A field that no record has is refused with the ones available (numeric fields outside
    the bookkeeping when ``numeric``); with no records there is nothing to check against.
    """
    names = [names] if isinstance(names, str) else list(names)
    for field in names:
        if not isinstance(field, str):
            raise TypeError(f"{name} must be field names (str); got {type(field).__name__} ({field!r}).")
    present = {field for record in records for field in record}
    unknown = [field for field in names if field not in present]
    if records and unknown:
        available = sorted(field for field in present if not numeric or (
            field not in BOOKKEEPING and any(_is_number(r.get(field)) or isinstance(r.get(field), bool)
                                             for r in records)))
        raise ValueError(f"{name}: {', '.join(map(repr, unknown))} is not a field of any record; "
                         f"available: {', '.join(available) or 'none'}.")
    return names


def _check_table_arguments(records, group_by, metrics) -> tuple[list[dict], list[str], list[str]]:
    """The records, the row fields and the metric columns (default: the declared metrics), checked."""
    records = _check_records(records)
    group_by = _check_fields(group_by, "group_by", records, numeric=False)
    if metrics is None:
        return records, group_by, [m for m in metric_names(records) if m not in group_by]
    return records, group_by, _check_fields(metrics, "metrics", records, numeric=True)


def summarize(records: list[dict], group_by, metrics=None) -> list[dict]:
    r"""Group records and aggregate each metric over the group (typically: over seeds).

    Parameters
    ----------
    records : list of dict
        Store records.
    group_by : str or sequence of str
        Fields that define a row; records missing one are grouped under ``None``.
    metrics : str or sequence of str, optional
        Numeric fields to aggregate; default the records' declared metrics.

    Returns
    -------
    rows : list of dict
        One per group, sorted by the group values: the group fields, ``n`` (records in
        the group) and, per metric, ``<metric>`` (mean) and ``<metric>_spread`` (sample
        standard deviation) over the records where the metric is a finite number.

    Raises
    ------
    TypeError
        ``records`` is not a list of dicts, or a field name is not a string.
    ValueError
        A ``group_by`` or ``metrics`` field is in no record (the message lists those available).

    Examples
    --------
    >>> rows = summarize([{"a": 1, "x": 1.0}, {"a": 1, "x": 3.0}], ["a"], ["x"])
    >>> rows[0]["x"], round(rows[0]["x_spread"], 4), rows[0]["n"]
    (2.0, 1.4142, 2)
    """
    records, group_by, metrics = _check_table_arguments(records, group_by, metrics)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        groups[tuple(record.get(name) for name in group_by)].append(record)
    rows = []
    for values in sorted(groups, key=lambda vs: tuple((v is None, str(type(v)), v if v is not None else 0) for v in vs)):
        members = groups[values]
        row = dict(zip(group_by, values))
        row["n"] = len(members)
        for metric in metrics:
            numbers = [float(r[metric]) for r in members if _is_number(r.get(metric)) or isinstance(r.get(metric), bool)]
            if numbers:
                row[metric], row[f"{metric}_spread"] = _mean_spread(numbers)
            else:
                row[metric] = row[f"{metric}_spread"] = None
        rows.append(row)
    return rows


def _format_cell(mean, spread, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{TABLE_DIGITS}g} ± {spread:.{TABLE_DIGITS - 1}g}" if n > 1 else f"{mean:.{TABLE_DIGITS}g}"


def format_table(records: list[dict], group_by, metrics=None, *, latex: bool = False, caption: str | None = None) -> str:
    r"""A table of ``mean ± std`` over seeds, one row per group, as Markdown or LaTeX (:func:`tabulate`).

    LaTeX output uses booktabs (``\toprule``, ``\midrule``, ``\bottomrule``) and writes
    each cell as ``$mean \pm std$``; add ``\usepackage{booktabs}`` to the preamble.

    Examples
    --------
    >>> print(format_table([{"a": 1, "x": 1.0, "metrics": "x"}, {"a": 1, "x": 3.0, "metrics": "x"}], ["a"]))
    | a | n | x |
    | --- | ---: | ---: |
    | 1 | 2 | 2 ± 1.4 |
    """
    records, group_by, metrics = _check_table_arguments(records, group_by, metrics)
    rows = summarize(records, group_by, metrics)
    header = group_by + ["n"] + list(metrics)
    body = [[str(row[name]) for name in group_by] + [str(row["n"])]
            + [_format_cell(row[m], row[f"{m}_spread"], row["n"]) for m in metrics] for row in rows]
    return tabulate(header, body, style="latex" if latex else "markdown",
                    align="l" * len(group_by) + "r" * (1 + len(metrics)), caption=caption)


# ---------------------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


#: Formats a figure file may end in (matplotlib writes each without extra packages); no suffix is PNG.
FIGURE_FORMATS = ("png", "pdf", "svg", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def _check_out(out) -> Path:
    """``out`` as the file a figure is written to: refused if a folder, in a missing folder or of an unknown format."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a file path (str or Path); got {type(out).__name__} ({out!r}).")
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"out={str(path)!r} is a folder; pass a file name such as {str(path / 'figure.png')!r}.")
    if path.suffix and path.suffix[1:].lower() not in FIGURE_FORMATS:
        raise ValueError(f"out={str(path)!r}: unknown figure format {path.suffix!r}; end the name in one of "
                         f"{', '.join('.' + f for f in FIGURE_FORMATS)}.")
    if not path.parent.is_dir():
        raise ValueError(f"out={str(path)!r}: folder {str(path.parent)!r} does not exist; create it first "
                         f"(mkdir -p {path.parent}).")
    return path


def _save_figure(fig, out: Path) -> None:
    """Write ``fig`` to ``out`` atomically, in the format its suffix names (PNG without one), and close it."""
    try:
        with atomic_file(out) as handle:
            fig.savefig(handle, format=out.suffix[1:].lower() or "png", dpi=FIGURE_DPI)
    finally:
        _pyplot().close(fig)


def _check_point(point, i: int) -> tuple[float, float]:
    """One (cost, score) pair of finite real numbers."""
    pair = tuple(point) if isinstance(point, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"points[{i}] = {point!r} is not a (cost, score) pair of real numbers; "
                        "pass a list of pairs.")
    if not all(math.isfinite(v) for v in pair):
        raise ValueError(f"points[{i}] = {point!r} is not finite; drop NaN/inf points (failed runs) first.")
    return pair


def pareto_front(points) -> list[tuple[float, float]]:
    """The points not dominated when cost (first) is minimised and score (second) maximised.

    Returned sorted by cost; each has a strictly higher score than the previous one.

    Parameters
    ----------
    points : iterable of (cost, score)
        Finite real pairs.

    Raises
    ------
    TypeError
        A point is not a pair of real numbers.
    ValueError
        A point is NaN or infinite (drop failed runs before calling).

    Examples
    --------
    >>> pareto_front([(1, 0.5), (2, 0.4), (3, 0.9), (3, 0.8)])
    [(1, 0.5), (3, 0.9)]
    """
    points = [_check_point(point, i) for i, point in enumerate(points)]
    front, best = [], -math.inf
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((cost, score))
            best = score
    return front


def _edges(centres: list[float]) -> list[float]:
    """Cell edges around sorted centres: midpoints inside, half a spacing beyond the ends."""
    if len(centres) == 1:
        return [centres[0] - 0.05, centres[0] + 0.05]
    mids = [(a + b) / 2 for a, b in zip(centres, centres[1:])]
    return [centres[0] - (mids[0] - centres[0])] + mids + [centres[-1] + (centres[-1] - mids[-1])]


def plot_phase(records: list[dict], out, *, title: str | None = None) -> dict:
    """Empirical l1 success over (M/N, K/M) with the statistical-dimension curve over it.

    Returns a summary (cells plotted, fraction of cells where the prediction agrees with
    the majority outcome).
    """
    records, out = _check_records(records), _check_out(out)
    records = [r for r in records if r.get("kind") == "recovery" and _is_number(r.get("success_rate"))]
    if not records:
        raise ValueError("no successful 'recovery' records to plot; run a recovery sweep (examples/phase_transition.toml) first.")
    plt = _pyplot()
    cells: dict[tuple, list[float]] = defaultdict(list)
    curve: dict[float, float] = {}
    for r in records:
        delta, rho = r["M"] / r["N"], r["K"] / r["M"]
        cells[(round(delta, 6), round(rho, 6))].append(r["success_rate"])
        if _is_number(r.get("transition_K_over_M")):
            curve[round(delta, 6)] = r["transition_K_over_M"]
    deltas = sorted({d for d, _ in cells})
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    import matplotlib.patches as patches
    from matplotlib import cm, colormaps

    cmap = colormaps["cividis"]
    # Tile the plane column by column: K/M differs between columns (K is rounded), so each
    # cell spans the midpoints to its neighbours within its own M/N column.
    x_edges = _edges(deltas)
    columns = {delta: sorted(k for d, k in cells if d == delta) for delta in deltas}
    y_edges = {delta: _edges(column) for delta, column in columns.items()}
    # Every column spans the same K/M range (clipped to [0, 1]), so the tiles leave no holes.
    y_low = max(0.0, min(edges[0] for edges in y_edges.values()))
    y_high = min(1.0, max(edges[-1] for edges in y_edges.values()))
    for i, delta in enumerate(deltas):
        edges = [y_low] + y_edges[delta][1:-1] + [y_high]
        for j, rho in enumerate(columns[delta]):
            values = cells[(delta, rho)]
            ax.add_patch(patches.Rectangle((x_edges[i], edges[j]), x_edges[i + 1] - x_edges[i], edges[j + 1] - edges[j],
                                           facecolor=cmap(sum(values) / len(values)), edgecolor="none"))
    mappable = cm.ScalarMappable(cmap=cmap)
    mappable.set_clim(0.0, 1.0)
    fig.colorbar(mappable, ax=ax, label="empirical success rate (fraction of codes recovered)")
    agree = None
    if curve:
        cd = sorted(curve)
        ax.plot(cd, [curve[d] for d in cd], color=OKABE_ITO[6], linewidth=2.2, marker="o", markersize=3,
                label="statistical dimension = M (Amelunxen et al. 2014)")
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
        votes = [((sum(v) / len(v)) >= 0.5) == (k < curve.get(d, math.inf)) for (d, k), v in cells.items() if d in curve]
        agree = sum(votes) / len(votes) if votes else None
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_low, y_high)
    ax.set_xlabel("undersampling M/N (measurements per latent, dimensionless)")
    ax.set_ylabel("sparsity K/M (nonzeros per measurement, dimensionless)")
    Ns = sorted({r["N"] for r in records})
    solvers = sorted({str(r.get("solver")) for r in records})
    ax.set_title(title or f"l1 phase transition, N = {', '.join(map(str, Ns))}, solver: {', '.join(solvers)}", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, out)
    return {"cells": len(cells), "records": len(records), "prediction_agreement": agree}


def plot_compute(records: list[dict], out, *, title: str | None = None) -> dict:
    """MCC vs inference FLOPs and vs training FLOPs, per method, with the Pareto front marked."""
    records, out = _check_records(records), _check_out(out)
    records = [r for r in records if r.get("kind") == "training" and _is_number(r.get("test_mcc"))]
    if not records:
        raise ValueError("no successful 'training' records with 'test_mcc' to plot; run a training sweep first.")
    plt = _pyplot()
    from matplotlib.ticker import LogLocator, NullFormatter

    methods = sorted({str(r.get("method")) for r in records})
    styles = series_styles(methods)
    colours = {m: styles[m][0] for m in methods}
    markers = {m: styles[m][1] for m in methods}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    fronts, handles = {}, {}
    for ax, field, label in ((axes[0], "inference_flops_per_sample", "inference cost per sample"),
                             (axes[1], "train_flops", "training cost, total")):
        usable = [r for r in records if _is_number(r.get(field)) and r[field] > 0]
        for method in methods:
            pts = [(r[field], r["test_mcc"]) for r in usable if str(r.get("method")) == method]
            if pts:
                handles[method] = ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colours[method],
                                             marker=markers[method], s=28, alpha=0.8, label=method,
                                             edgecolors=None if markers[method] in "x+" else "none")  # x is all edge
        front = pareto_front([(r[field], r["test_mcc"]) for r in usable])
        fronts[field] = len(front)
        if front:
            xs, ys = zip(*front)
            (handles["Pareto front"],) = ax.step(xs, ys, where="post", color="#000000", linewidth=1.2, linestyle="--",
                                                 label="Pareto front")
            ax.scatter(xs, ys, facecolors="none", edgecolors="#000000", s=80, linewidths=1.0)
        skipped = sorted({str(r.get("method")) for r in records} - {str(r.get("method")) for r in usable})
        if skipped:
            ax.text(0.02, 0.02, f"not shown (0 FLOPs): {', '.join(skipped)}", transform=ax.transAxes, fontsize=7,
                    color="#555555")
        ax.set_xscale("log")
        # Labels at 1, 2 and 5 x 10^k: readable on short ranges, where default minor labels collide.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{label} (FLOPs, log scale)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("MCC with the true codes, test split (dimensionless)")
    order = [m for m in methods if m in handles] + (["Pareto front"] if "Pareto front" in handles else [])
    fig.legend([handles[name] for name in order], order, loc="lower center", ncol=min(8, len(order)), fontsize=8,
               frameon=False)
    Ns = sorted({(r.get("N"), r.get("M"), r.get("K")) for r in records}, key=str)
    sizes = "; ".join(f"N = {n}, M = {m}, K = {k}" for n, m, k in Ns)
    fig.suptitle(title or f"Compute-optimal inference: MCC vs FLOPs ({sizes})", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _save_figure(fig, out)
    return {"records": len(records), "methods": methods, "pareto_points": fronts}


def plot_gap(records: list[dict], out, *, title: str | None = None) -> dict:
    """The amortisation gap vs M/N: eps*, the T2 lower bound, the best trained SAE, per-sample inference.

    Each point is the mean over the records (seeds) at that (K, M/N), with the sample
    standard deviation as error bar; one panel per K.
    """
    records, out = _check_records(records), _check_out(out)
    gap = [r for r in records if r.get("kind") == "gap" and _is_number(r.get("eps_star"))]
    if not gap:
        raise ValueError("no successful 'gap' records to plot; run a gap sweep (examples/gap.toml) first.")
    plt = _pyplot()
    series = {
        "eps_star": ("exact best ReLU encoder eps* (LP)", OKABE_ITO[5], "o", "-"),
        "gap_lower_bound": ("lower bound (T2)", OKABE_ITO[6], "v", "--"),
        "sae_worst_case": ("trained ReLU SAE, worst case", OKABE_ITO[1], "s", "-."),
        "per_sample_error": ("per-sample inference (nonneg. basis pursuit), worst sampled code", OKABE_ITO[3], "D", ":"),
    }
    by_x: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in gap:
        group = (r.get("K"), round(r["M"] / r["N"], 6))
        for name in series:
            if _is_number(r.get(name)):
                by_x[group][name].append(r[name])
    Ks = sorted({k for k, _ in by_x}, key=lambda k: (k is None, k or 0))
    # One panel per K (small multiples) so curves of different K never share a legend entry.
    fig, axes = plt.subplots(1, len(Ks), figsize=(1.0 + 5.2 * len(Ks), 4.6), sharey=True, squeeze=False)
    plotted = set()
    top = 0.0
    for ax, K in zip(axes[0], Ks):
        xs = sorted(x for k, x in by_x if k == K)
        for name, (label, colour, marker, style) in series.items():
            pts = [(x, _mean_spread(by_x[(K, x)][name])) for x in xs if by_x[(K, x)].get(name)]
            if not pts:
                continue
            plotted.add(name)
            top = max(top, max(p[1][0] + p[1][1] for p in pts))
            # Errors are nonnegative: the lower arm stops at 0.
            yerr = _nonnegative_yerr([p[1][0] for p in pts], [p[1][1] for p in pts])
            ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=yerr, color=colour,
                        marker=marker, linestyle=style, linewidth=1.8, markersize=5, capsize=2, label=label)
        ax.set_xlabel("M/N (input dimension per latent, dimensionless)")
        ax.set_title(f"K = {K}", fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("worst-case error max |f(zD) - z|_inf (code units)")
    # A little room below 0 so a zero-error curve is not hidden under the axis.
    axes[0][0].set_ylim(-0.03 * max(top, 1e-12), 1.08 * max(top, 1e-12))
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    Ns = sorted({r["N"] for r in gap})
    fig.suptitle(title or f"Amortisation gap of ReLU encoders, N = {', '.join(map(str, Ns))}", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save_figure(fig, out)
    return {"records": len(gap), "series": sorted(plotted), "K": Ks}


#: (L0 field, EV field) pairs :func:`plot_ev_l0` reads, the first a record has.
EV_L0_FIELDS = (("mean_l0", "explained_variance"), ("test_mean_l0", "test_explained_variance"))


def plot_ev_l0(records: list[dict], out, *, title: str | None = None) -> dict:
    """Explained variance against L0 (mean active latents), one colour and marker per method.

    The standard SAE trade-off plot: up and to the left is better. Each point is one record
    (a seed, a sparsity setting); points of one method are joined in L0 order.
    """
    records, out = _check_records(records), _check_out(out)
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        for l0_field, ev_field in EV_L0_FIELDS:
            if _is_number(r.get(l0_field)) and _is_number(r.get(ev_field)):
                points[str(r.get("method"))].append((r[l0_field], r[ev_field]))
                break
    if not points:
        raise ValueError("no records with explained variance and L0 to plot (fields mean_l0/explained_variance or "
                         "test_mean_l0/test_explained_variance); run a training sweep first.")
    plt = _pyplot()
    styles = series_styles(points)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for method in sorted(points):
        colour, marker = styles[method]
        xs, ys = zip(*sorted(points[method]))
        ax.plot(xs, ys, color=colour, marker=marker, linewidth=1.2, markersize=6, label=method)
    ax.set_xlabel("L0: mean active latents per row (held-out split)")
    ax.set_ylabel("explained variance, held-out split (dimensionless)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.9)
    ax.set_title(title or "Explained variance vs L0", fontsize=11)
    fig.tight_layout()
    _save_figure(fig, out)
    return {"records": sum(len(v) for v in points.values()), "methods": sorted(points)}


def plot_curves(records: list[dict], out, *, title: str | None = None) -> dict:
    """Training curves: the validation loss (solid) and training-batch loss (dotted) against the
    step, one colour per method and one line per record (seed), log loss axis.

    Reads the ``loss_curve`` field (JSON ``{"steps", "train", "val"}``) of training records.
    """
    records, out = _check_records(records), _check_out(out)
    import json

    curves = []
    for r in records:
        curve = json.loads(r.get("loss_curve") or "{}")
        if curve.get("steps"):
            curves.append((str(r.get("method")), curve))
    if not curves:
        raise ValueError("no records with a loss curve (field loss_curve) to plot; run a training sweep with steps > 0.")
    plt = _pyplot()
    styles = series_styles(method for method, _ in curves)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    labelled = set()
    for method, curve in curves:
        colour, marker = styles[method]
        for name, style in (("val", "-"), ("train", ":")):
            pts = [(s, v) for s, v in zip(curve["steps"], curve.get(name, [])) if _is_number(v) and v > 0]
            if pts:
                label = f"{method} ({'validation' if name == 'val' else 'training batch'})"
                ax.plot(*zip(*pts), color=colour, linestyle=style, marker=marker if name == "val" else None,
                        markersize=4, linewidth=1.2, label=None if label in labelled else label)
                labelled.add(label)
    ax.set_yscale("log")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, framealpha=0.9)
    ax.set_title(title or "Training curves", fontsize=11)
    fig.tight_layout()
    _save_figure(fig, out)
    return {"records": len(curves), "methods": sorted({m for m, _ in curves})}


_PLOTS = {"compute": plot_compute, "phase": plot_phase, "gap": plot_gap, "ev_l0": plot_ev_l0, "curves": plot_curves}


def plot(store_or_records, kind: str, out, **filters) -> dict:
    """Draw figure ``kind`` (one of :data:`PLOT_KINDS`) from a store, a store's path or records to ``out``.

    ``filters`` select records by equality, e.g. ``sweep="phase_transition"``.
    """
    if kind not in _PLOTS:
        raise ValueError(f"kind={kind!r} is not a figure; choose one of {list(PLOT_KINDS)}.")
    out = _check_out(out)
    records = _records(store_or_records, filters)
    return _PLOTS[kind](records, out)


def table(store_or_records, group_by, metrics=None, *, latex: bool = False, **filters) -> str:
    """:func:`format_table` over a store, a store's path or records, filtered by equality on ``filters``."""
    records = _records(store_or_records, filters)
    if not records:
        raise ValueError(f"no successful records match {filters or 'the store'}; run a sweep first or relax the filter.")
    return format_table(records, group_by, metrics, latex=latex)


def _records(store_or_records, filters: dict) -> list[dict]:
    """The records of a :class:`ResultStore`, of the store file at a path (opened read-only), or of a list."""
    if isinstance(store_or_records, (str, os.PathLike)):
        path = Path(store_or_records)
        if not path.exists():
            raise ValueError(f"store {str(path)!r} does not exist; pass the results file a sweep wrote "
                             f"(`gaptheory run SWEEP.toml --store {path}`).")
        with ResultStore(path, readonly=True) as store:
            return store.records(**filters)
    if isinstance(store_or_records, ResultStore):
        return store_or_records.records(**filters)
    records = _check_records(store_or_records, "store_or_records")
    return [r for r in records if all(r.get(k) == v for k, v in filters.items())]
