"""The house's shape: imports run one way (cli -> hyperrep -> features -> train -> specs ->
models / data -> archive -> errors), with no import circle, and commands that train nothing start
without torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("modelzoo", "hyperrep", "cli")

# lowest first; a module may import its own layer or lower ones, never a higher one
LAYERS = [
    ("modelzoo.errors", "modelzoo.runtime"),
    ("modelzoo.archive", "modelzoo.randomness"),
    ("modelzoo.models", "modelzoo.data"),
    ("modelzoo.specs",),
    ("modelzoo.train",),
    ("modelzoo.zoo", "modelzoo.generate", "modelzoo.backends", "modelzoo.sparsify",
     "modelzoo.importers", "modelzoo.hub"),
    ("hyperrep",),
    ("cli",),
]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                         for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES and m != name}


def layer_of(name: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{name} belongs to no layer; add it to LAYERS")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()
            if name != "modelzoo"}  # the package's lazy facade (importlib on first use)


def test_every_import_runs_down_the_layers():
    upward = [f"{a} -> {b}" for a, deps in graph().items() for b in deps
              if b != "modelzoo" and layer_of(b) > layer_of(a)]
    assert upward == []


def test_modelzoo_never_imports_hyperrep_or_cli():
    assert [(a, b) for a, deps in graph().items() for b in deps
            if a.startswith("modelzoo") and b.startswith(("hyperrep", "cli"))] == []


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_archive_package_imports_no_torch_at_module_level():
    for name, path in modules().items():
        if not name.startswith("modelzoo.archive"):
            continue
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + \
            [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] == "torch"], name


def test_raw_manifest_keys_are_read_only_in_the_archive_package():
    """No ``manifest[...]`` / ``manifest.get(...)`` / ``.data[...]`` outside modelzoo.archive."""
    offenders = []
    for name, path in modules().items():
        if name.startswith("modelzoo.archive"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Subscript):
                target = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "get":
                target = node.func.value
            if target is not None and "manifest" in ast.unparse(target):
                offenders.append(f"{name}: {ast.unparse(node)}")
    assert offenders == []


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing torch fails."""
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None\n" + code],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_commands_that_train_nothing_start_without_torch(tetris_zoo):
    result = run_without_torch(
        "import cli.zoo, cli.hyperrep, modelzoo.archive, modelzoo.hub\n"
        "from typer.testing import CliRunner\n"
        "runner = CliRunner()\n"
        f"for args in (['--help'], ['info', {str(tetris_zoo)!r}], ['validate', {str(tetris_zoo)!r}]):\n"
        "    out = runner.invoke(cli.zoo.app, args)\n"
        "    assert out.exit_code == 0, (args, out.output, out.exception)\n"
        "assert runner.invoke(cli.hyperrep.app, ['--help']).exit_code == 0\n")
    assert result.returncode == 0, result.stderr[-2000:]

