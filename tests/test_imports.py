"""The package import graph: `evaluation/` is pure metrics and never imports `ulvideo`, and no two
packages import each other (the glue that loads checkpoints lives in ulvideo.evaluate)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ulvideo", "evaluation")


def imported_packages(path: Path, package: str) -> set[str]:
    """Top-level first-party packages that `path` imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found & set(PACKAGES)


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> {imported package: [files importing it]}."""
    graph = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for target in imported_packages(path, package) - {package}:
                graph[package].setdefault(target, []).append(str(path.relative_to(ROOT)))
    return graph


def test_evaluation_imports_nothing_from_ulvideo():
    assert package_graph()["evaluation"] == {}


def test_no_import_cycle_between_packages():
    graph = package_graph()
    assert "evaluation" in graph["ulvideo"]  # ulvideo builds on the metrics, not the other way
    for a in PACKAGES:
        for b in graph[a]:
            assert a not in graph[b], f"{a} <-> {b}: {graph[a][b][:3]} and {graph[b][a][:3]}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ulvideo.data import VideoFolder\nfrom .fvd import x\n")
    assert imported_packages(module, "evaluation") == {"ulvideo", "evaluation"}
