"""Data flows one way: a module imports only modules listed before it (STYLE.md 2(f))."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gaptheory"

#: The layers, bottom to top. A new module must be placed here.
LAYERS = [
    "__init__", "_validation", "_device", "_io", "instances", "solvers", "bounds", "gap", "metrics", "flops",
    "encoders", "training", "activations", "interpret", "store", "experiments", "report", "bench", "verify",
    "cli", "__main__",
]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("gaptheory"):
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gaptheory."):
                    found.add(alias.name.split(".")[1])
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_point_only_downward(module):
    assert module in LAYERS, f"gaptheory/{module}.py is not placed in LAYERS of tests/test_layering.py"
    rank = LAYERS.index(module)
    for imported in _imported_modules(PACKAGE / f"{module}.py"):
        if imported == "__version__":
            continue
        assert imported in LAYERS, f"{module} imports unknown gaptheory module {imported}"
        assert LAYERS.index(imported) < rank or imported == "__init__", (
            f"gaptheory.{module} imports gaptheory.{imported}, which sits above it; data flows "
            "instances -> solvers/encoders -> metrics -> store -> report"
        )


def test_report_reads_only_the_store():
    imported = _imported_modules(PACKAGE / "report.py") if (PACKAGE / "report.py").exists() else set()
    assert imported <= {"store", "_validation", "__init__", "__version__"}, imported
