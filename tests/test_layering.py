"""Data flows one way: a module imports only modules listed before it (STYLE.md 2(f)).

A *unit* is a top-level module ``gaptheory/x.py`` or a package ``gaptheory/x/``. Every file of a
unit may import units below it; files inside one package may import each other. Static imports
(``import``, ``from ... import``, at any depth in a function) and dynamic ones
(``importlib.import_module("gaptheory.x")``, ``__import__``) are both checked.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gaptheory"

#: The layers, bottom to top. A new module or package must be placed here.
LAYERS = [
    "__init__", "_integer_matrix", "_validation", "_device", "_threads", "_io", "_table", "instances", "solvers", "bounds", "certificates", "gap",
    "metrics", "flops", "strategies", "testing", "encoders", "training", "estimators", "activations", "real",
    "interpret", "experiments", "report", "bench", "verify", "cli", "__main__",
]


def _unit_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _package_parts(path: Path) -> list[str]:
    """The dotted package that ``path`` lives in, e.g. ['gaptheory', 'solvers']."""
    return ["gaptheory", *path.relative_to(PACKAGE).parts[:-1]]


def _resolve(module: str | None, level: int, path: Path) -> str | None:
    if level == 0:
        return module
    base = _package_parts(path)
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([module] if module else []))


def _dynamic_target(node: ast.Call) -> str | None:
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name not in {"import_module", "__import__"} or not node.args:
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    if isinstance(argument, ast.JoinedStr):  # f"{__package__}.training"
        text = "".join(
            part.value if isinstance(part, ast.Constant) else "gaptheory" for part in argument.values
        )
        return text
    return "<dynamic>"


def _imported_units(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(node.module, node.level, path)
            if target == "gaptheory":
                names.extend(f"gaptheory.{alias.name}" for alias in node.names)
            elif target:
                names.append(target)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.Call):
            target = _dynamic_target(node)
            if target == "<dynamic>":
                names.append("gaptheory.<dynamic>")
            elif target:
                names.append(target)
    units = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "gaptheory" and len(parts) > 1:
            units.add(parts[1])
    return units


FILES = sorted(PACKAGE.rglob("*.py"))

@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_point_only_downward(path):
    unit = _unit_of(path)
    assert unit in LAYERS, f"gaptheory/{unit} is not placed in LAYERS of tests/test_layering.py"
    rank = LAYERS.index(unit)
    for imported in _imported_units(path):
        if imported in {"__version__", unit}:
            continue
        assert imported in LAYERS, f"{path.name} imports unknown gaptheory module {imported}"
        assert LAYERS.index(imported) < rank or imported == "__init__", (
            f"gaptheory.{unit} ({path.relative_to(PACKAGE)}) imports gaptheory.{imported}, which sits "
            "above it; data flows instances -> solvers/encoders -> metrics -> training -> experiments -> report -> cli"
        )


def test_dynamic_imports_are_seen(tmp_path):
    probe = PACKAGE / "instances.py"  # any file: only its path is used to resolve relative names
    source = "import importlib\ndef f():\n    return importlib.import_module(f'{__package__}.training')\n"
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    tree_units = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _dynamic_target(node):
            tree_units.add(_dynamic_target(node).split(".")[1])
    assert tree_units == {"training"}
    assert _unit_of(probe) == "instances"


def test_report_reads_only_the_store():
    # The report sees experiments only through their store: no solver, encoder or runner.
    report = PACKAGE / "report.py"
    paths = [report] if report.exists() else sorted((PACKAGE / "report").rglob("*.py"))
    imported = set().union(*(_imported_units(p) for p in paths)) - {"report"}
    assert imported <= {"__init__", "_validation", "_io", "_table", "experiments"}, imported
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and "experiments" in (_resolve(node.module, node.level, path) or ""):
                assert _resolve(node.module, node.level, path) == "gaptheory.experiments.store", ast.dump(node)
