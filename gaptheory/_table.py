"""The one table renderer: a header and rows of cells as aligned text, Markdown or LaTeX.

It sits at the bottom of the layers so that every module that prints a table (the
interpretability report below the store, and ``report``, ``bench`` and ``verify`` above
it) renders through it; :mod:`gaptheory.report` exposes it as ``report.tabulate``.
"""

from __future__ import annotations

import re

#: Output styles of :func:`tabulate`.
STYLES = ("text", "markdown", "latex")

#: A cell LaTeX sets in math mode: a number, optionally "± spread" (e.g. ``-1.5e-03 ± 2``).
_NUMBER = r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?"
_MATH_CELL = re.compile(rf"{_NUMBER}(?: ± {_NUMBER})?")

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    r"""``text`` with LaTeX's special characters escaped.

    Examples
    --------
    >>> print(latex_escape("test_mcc & 50%"))
    test\_mcc \& 50\%
    """
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def _latex_cell(cell: str) -> str:
    if cell == "-":  # a missing value: an en dash
        return "--"
    if _MATH_CELL.fullmatch(cell):
        return "$" + cell.replace("%", r"\%").replace(" ± ", r" \pm ") + "$"
    return latex_escape(cell)


def tabulate(header, rows, *, style: str = "text", align: str | None = None, caption: str | None = None) -> str:
    r"""Render a table of ``C`` columns.

    Parameters
    ----------
    header : sequence of str of length C
        Column names.
    rows : sequence of sequences of length C
        The cells; each is shown as ``str(cell)``.
    style : {"text", "markdown", "latex"}
        ``text``: columns padded to a common width, separated by two spaces, a rule of
        dashes under the header. ``markdown``: a GitHub pipe table (``|`` in a cell is
        escaped). ``latex``: a booktabs ``table`` (``\usepackage{booktabs}``), text cells
        escaped, number cells (``1.5``, ``2 ± 0.1``) in math mode and ``-`` as ``--``.
    align : str of length C, optional
        ``l`` or ``r`` per column (default all ``l``); sets the padding side in text, the
        ``---:`` markers in Markdown and the column spec in LaTeX.
    caption : str, optional
        LaTeX only: the table's ``\caption``.

    Returns
    -------
    table : str
        Lines joined by newlines, no trailing newline.

    Examples
    --------
    >>> print(tabulate(["solver", "us"], [["omp", 12.5], ["lasso", 7]], align="lr"))
    solver    us
    ------  ----
    omp     12.5
    lasso      7
    >>> print(tabulate(["solver", "us"], [["omp", 12.5]], style="markdown", align="lr"))
    | solver | us |
    | --- | ---: |
    | omp | 12.5 |
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not a table style; choose one of {list(STYLES)}.")
    header = [str(name) for name in header]
    body = [[str(cell) for cell in row] for row in rows]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"rows[{i}] has {len(row)} cells for {len(header)} columns; give one cell per column.")
    align = "l" * len(header) if align is None else align
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r} must give 'l' or 'r' for each of the {len(header)} columns.")
    if style == "text":
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def line(cells):
            return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

        return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])
    if style == "markdown":
        def line(cells):
            return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

        rule = "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"
        return "\n".join([line(header), rule, *map(line, body)])
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(map(latex_escape, header)) + r" \\",
              r"\midrule", *(" & ".join(map(_latex_cell, row)) + r" \\" for row in body),
              r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)
