
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.report import (
    OKABE_ITO,
    format_table,
    metric_names,
    pareto_front,
    plot,
    plot_compute,
    plot_gap,
    plot_phase,
    summarize,
    table,
    tabulate,
)
from gaptheory.experiments.store import ResultStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _records():
    out = []
    for method, cost, base in (("sae", 10.0, 0.6), ("fista", 1000.0, 0.9), ("mlp", 50.0, 0.55)):
        for seed in range(3):
            out.append({"kind": "training", "method": method, "seed": seed, "N": 16, "M": 8, "K": 3,
                        "test_mcc": base + 0.01 * seed, "inference_flops_per_sample": cost * (1 + seed),
                        "train_flops": 1e6 / cost, "metrics": "test_mcc,inference_flops_per_sample,train_flops"})
    return out


def test_summarize_gives_mean_and_sample_std_over_seeds():
    rows = summarize(_records(), ["method"], ["test_mcc"])
    by_method = {row["method"]: row for row in rows}
    assert by_method["sae"]["n"] == 3
    # a mean and a sample std (ddof=1) of three numbers: a few roundings each
    rounding = 8 * np.finfo(float).eps
    assert by_method["sae"]["test_mcc"] == pytest.approx(0.61, rel=rounding)
    # the deviations (0.01) of numbers near 0.6 carry their rounding: 60 times larger relatively
    assert by_method["sae"]["test_mcc_spread"] == pytest.approx(0.01, rel=100 * rounding)  # 0.60, 0.61, 0.62


def test_metric_names_come_from_the_records_declaration():
    assert metric_names(_records()) == ["test_mcc", "inference_flops_per_sample", "train_flops"]


def test_markdown_table_has_one_row_per_group():
    text = format_table(_records(), ["method"], ["test_mcc"])
    lines = text.splitlines()
    assert lines[0] == "| method | n | test_mcc |" and len(lines) == 2 + 3
    assert "| fista | 3 | 0.91 ± 0.01 |" in lines


def test_latex_table_uses_booktabs_and_escapes_underscores():
    text = format_table(_records(), ["method"], ["inference_flops_per_sample"], latex=True)
    assert r"\toprule" in text and r"\midrule" in text and r"\bottomrule" in text
    assert r"inference\_flops\_per\_sample" in text and r"\pm" in text
    assert text.count(r"\\") == 4  # header + three rows


def test_missing_metric_shows_a_dash():
    assert "| x | 1 | - |" in format_table([{"g": "x", "y": "text"}], ["g"], ["y"])


@settings(max_examples=60)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1)), min_size=1, max_size=30))
def test_pareto_front_is_exactly_the_undominated_points(points):
    front = pareto_front(points)

    def dominated(p):
        return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)

    assert all(not dominated(p) for p in front)
    for p in points:  # every other point is matched or beaten by a front point
        assert any(q[0] <= p[0] and q[1] >= p[1] for q in front)
    costs = [p[0] for p in front]
    scores = [p[1] for p in front]
    assert costs == sorted(costs) and all(a < b for a, b in zip(scores, scores[1:]))


def test_compute_plot_is_a_png_with_a_front_in_each_panel(tmp_path):
    out = tmp_path / "compute.png"
    summary = plot_compute(_records(), out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert summary["methods"] == ["fista", "mlp", "sae"]
    # inference: cheap sae (0.60-0.62) then dearer fista beats it; training: fista is cheapest and best
    assert summary["pareto_points"] == {"inference_flops_per_sample": 6, "train_flops": 1}


def test_phase_plot_reports_agreement_with_the_curve(tmp_path):
    records = []
    for M in (10, 20, 30):
        for K in (1, 5, 9):
            records.append({"kind": "recovery", "N": 40, "M": M, "K": K, "solver": "basis_pursuit",
                            "success_rate": 1.0 if K / M < 0.3 else 0.0, "transition_K_over_M": 0.3})
    summary = plot_phase(records, tmp_path / "phase.png")
    assert summary["cells"] == 9 and summary["prediction_agreement"] == 1.0
    assert (tmp_path / "phase.png").read_bytes()[:8] == PNG_MAGIC


def test_gap_plot_draws_every_series_present(tmp_path):
    gap = [{"kind": "gap", "N": 16, "M": M, "K": 3, "seed": s, "eps_star": 0.3 - 0.01 * M,
            "gap_lower_bound": 0.1, "per_sample_error": 0.0, "sae_worst_case": 0.4} for M in (4, 8, 12) for s in (0, 1)]
    summary = plot_gap(gap + _records(), tmp_path / "gap.png")
    assert summary["series"] == ["eps_star", "gap_lower_bound", "per_sample_error", "sae_worst_case"]
    assert (tmp_path / "gap.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("function", [plot_compute, plot_phase, plot_gap])
def test_plots_refuse_empty_input_with_a_hint(tmp_path, function):
    with pytest.raises(ValueError, match="run a"):
        function([], tmp_path / "x.png")


def test_table_and_plot_read_from_a_store(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        for i, record in enumerate(_records()):
            store.put({**record, "key": f"k{i}", "status": "ok"})
        assert table(store, ["method"], ["test_mcc"], method="sae").count("\n") == 2
        assert plot(store, "compute", tmp_path / "c.png")["records"] == 9
        with pytest.raises(ValueError, match="not a figure"):
            plot(store, "pie", tmp_path / "c.png")
        with pytest.raises(ValueError, match="no successful records"):
            table(store, ["method"], method="nope")


def test_a_store_path_is_read_like_the_store(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        for i, record in enumerate(_records()):
            store.put({**record, "key": f"k{i}", "status": "ok"})
        expected = table(store, ["method"], ["test_mcc"])
    assert table(tmp_path / "r.db", ["method"], ["test_mcc"]) == table(str(tmp_path / "r.db"), "method", "test_mcc") \
        == expected


def test_an_unknown_field_is_refused_with_the_ones_available():
    with pytest.raises(ValueError, match=r"metrics: 'tset_mcc' .*available: K, M, N, inference_flops_per_sample, "
                                         r"test_mcc, train_flops\.$"):
        summarize(_records(), ["method"], ["tset_mcc"])
    with pytest.raises(ValueError, match=r"group_by: 'mthod' .*available: .*method"):
        format_table(_records(), ["mthod"])
    with pytest.raises(TypeError, match="metrics must be field names"):
        summarize(_records(), ["method"], [1])


@pytest.mark.parametrize("suffix", ["", ".pdf", ".svg"])
def test_a_figure_is_written_to_exactly_the_path_given_in_its_suffix_format(tmp_path, suffix):
    out = tmp_path / f"figure{suffix}"
    plot_compute(_records(), out)
    head = out.read_bytes()[:8]
    assert {"": head == PNG_MAGIC, ".pdf": head.startswith(b"%PDF"), ".svg": b"<svg" in out.read_bytes()[:2000]}[suffix]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_an_unknown_figure_format_is_refused_before_drawing(tmp_path):
    with pytest.raises(ValueError, match=r"unknown figure format '\.txt'"):
        plot_compute(_records(), tmp_path / "f.txt")
    assert not list(tmp_path.iterdir())


def test_tabulate_aligns_text_columns_to_their_widest_cell():
    lines = tabulate(["name", "us"], [["omp", 1.5], ["lasso_long", 12345]], align="lr").splitlines()
    assert lines == ["name           us", "----------  -----", "omp           1.5", "lasso_long  12345"]
    assert tabulate(["a", "b"], []).splitlines() == ["a  b", "-  -"]  # a header alone is a table


def test_tabulate_markdown_escapes_pipes_and_marks_right_aligned_columns():
    text = tabulate(["a|b", "x"], [["1|2", 3]], style="markdown", align="lr")
    assert text.splitlines() == [r"| a\|b | x |", "| --- | ---: |", r"| 1\|2 | 3 |"]


def test_tabulate_latex_escapes_text_and_sets_numbers_in_math_mode():
    text = tabulate(["test_mcc", "value"], [["a_b & c", "0.91 ± 0.01"], ["-", "-1.5e-03"], ["50%", "12%"]],
                    style="latex", align="lr", caption="N = 16, 5% done")
    assert r"\caption{N = 16, 5\% done}" in text and r"\begin{tabular}{lr}" in text
    assert r"test\_mcc & value \\" in text
    assert r"a\_b \& c & $0.91 \pm 0.01$ \\" in text
    assert r"-- & $-1.5e-03$ \\" in text and r"$50\%$ & $12\%$ \\" in text


@pytest.mark.parametrize("call, match", [
    (lambda: tabulate(["a", "b"], [[1]]), r"rows\[0\] has 1 cells for 2 columns"),
    (lambda: tabulate(["a"], [[1]], align="c"), "align='c'"),
    (lambda: tabulate(["a"], [[1]], style="html"), "style='html'"),
])
def test_tabulate_refuses_ragged_rows_and_unknown_options(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_palette_is_okabe_ito():
    assert len(OKABE_ITO) == 8 and OKABE_ITO[1] == "#E69F00" and all(c.startswith("#") for c in OKABE_ITO)


def test_series_styles_give_every_method_its_own_colour_and_marker():
    from gaptheory.report import series_styles

    methods = ["sae", "sae_topk", "sae_jumprelu", "sae_ito", "mlp_32", "mlp_256", "mlp_1024", "sparse_coding",
               "best_subset", "sae (24000 steps)"]
    styles = series_styles(methods)
    assert len({c for c, _ in styles.values()}) == len(methods)
    assert len({m for _, m in styles.values()}) == len(methods)
    with pytest.raises(ValueError, match="distinct colours"):
        series_styles([f"m{i}" for i in range(13)])


def test_nonnegative_error_bars_stop_at_zero():
    from gaptheory.report import _nonnegative_yerr

    lower, upper = _nonnegative_yerr([0.05, 1.0], [0.2, 0.3])
    assert lower == [0.05, 0.3] and upper == [0.2, 0.3]


def test_every_plot_kind_draws_and_ev_l0_reads_training_records(tmp_path):
    from gaptheory.report import _PLOTS, PLOT_KINDS, plot

    assert set(_PLOTS) == set(PLOT_KINDS)
    records = [{"kind": "training", "method": m, "test_mean_l0": l0, "test_explained_variance": ev}
               for m, l0, ev in (("sae", 3.0, 0.8), ("sae", 5.0, 0.9), ("mlp_256", 4.0, 0.95))]
    out = tmp_path / "ev.png"
    summary = plot(records, "ev_l0", out)
    assert summary == {"records": 3, "methods": ["mlp_256", "sae"]}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="explained variance and L0"):
        plot([{"method": "sae"}], "ev_l0", out)
