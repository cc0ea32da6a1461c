"""The import directions of ulvideo's layers, read from the source (lazy imports included):

- the metric modules of ulvideo.evaluate (I3D, Fréchet statistics, FVD, the video readers,
  PSNR/SSIM) import nothing else of ulvideo, so they score any model's videos;
- ulvideo.evaluate is in no import cycle: the training code, the CLI and the demo use it, it never
  imports them (what loads a checkpoint imports the pipeline, below both);
- ulvideo.errors, the one error handler of every entry point, imports nothing of ulvideo."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = {f"ulvideo.evaluate.{name}" for name in ("frechet", "fvd", "i3d", "videos", "psnr_ssim")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str | None = None) -> set[str]:
    """The ulvideo modules that `path` (module `name`) imports, at any depth, relative imports
    resolved: `from .fvd import x` in ulvideo/evaluate/k600.py is ulvideo.evaluate.fvd, and
    `from . import fvd` too."""
    name = name or module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            if node.module:
                found.add(".".join([*base, node.module]))
            else:  # `from . import fvd`: the submodules
                found |= {".".join([*base, alias.name]) for alias in node.names}
    return {m for m in found if m == "ulvideo" or m.startswith("ulvideo.")}


def unit(module: str) -> str:
    """The layer a module belongs to: its subpackage or top-level module of ulvideo."""
    return ".".join(module.split(".")[:2])


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: [files importing it]}."""
    graph = {}
    for path in sorted((ROOT / "ulvideo").rglob("*.py")):
        source = unit(module_name(path))
        for target in {unit(m) for m in imported_modules(path)} - {source}:
            graph.setdefault(source, {}).setdefault(target, []).append(str(path.relative_to(ROOT)))
    return graph


def test_metrics_import_nothing_else_of_ulvideo():
    for name in sorted(METRICS):
        path = ROOT / (name.replace(".", "/") + ".py")
        outside = imported_modules(path) - METRICS - {"ulvideo.errors"}
        assert not outside, f"{name} imports {sorted(outside)}"


def test_errors_import_nothing_of_ulvideo():
    assert imported_modules(ROOT / "ulvideo" / "errors.py") == set()


def test_evaluate_is_in_no_import_cycle():
    graph = unit_graph()
    users = {source for source, targets in graph.items() if "ulvideo.evaluate" in targets}
    assert {"ulvideo.train", "ulvideo.cli", "ulvideo.demo"} <= users  # the checker sees them
    assert "ulvideo.train" not in graph["ulvideo.evaluate"]
    for user in users:
        assert user not in graph["ulvideo.evaluate"], (
            f"ulvideo.evaluate <-> {user}: {graph['ulvideo.evaluate'][user]}"
        )


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import torch\ndef f():\n    from ..data import VideoFolder\n"
        "from .fvd import x\nfrom . import i3d\nimport ulvideo.errors\n"
    )
    assert imported_modules(module, "ulvideo.evaluate.m") == {
        "ulvideo.data",
        "ulvideo.evaluate.fvd",
        "ulvideo.evaluate.i3d",
        "ulvideo.errors",
    }
