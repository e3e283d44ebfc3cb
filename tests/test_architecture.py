"""The code's structure, read as text (ast; nothing imported): the rules docs/architecture.md states.

- no import cycle between modules of ``common/`` and ``bench/`` (an import inside a function counts: it
  runs too);
- no stage importing a higher one: ``common.data`` < ``common.training``, ``common.evaluation`` <
  ``common.runs`` < the commands < ``bench``; the modules at ``common/``'s top (the definitions, the
  errors, storage) belong to no stage and every stage may import them;
- no run-folder file name spelled outside ``common/runs/folder.py`` (docstrings aside): the others ask it.

Each rule is shown failing on a tiny tree of its own, so a rule that stopped finding anything fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.runs import folder

ROOT = Path(__file__).resolve().parents[1]

#: The command-line modules: the highest stage in common/ (a thin command over the library).
COMMANDS = ("common.cli", "common.experiment", "common.score", "common.gather", "common.comparison",
            "common.demo", "common.predict")  # fmt: skip
STAGES = (("common.data", 0), ("common.training", 1), ("common.evaluation", 1), ("common.runs", 2))
#: The run folder's file names, as its module spells them.
FOLDER_NAMES = tuple(value for name, value in vars(folder).items() if name.endswith("_FILE") and isinstance(value, str))
FOLDER_MODULE = "common.runs.folder"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def stage(module: str) -> int | None:
    """0 data, 1 training and evaluation, 2 runs, 3 the commands, 4 bench; None for common's top modules."""
    if within(module, "bench"):
        return 4
    if any(within(module, command) for command in COMMANDS):
        return 3
    return next((level for package, level in STAGES if within(module, package)), None)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_tree(root: Path, folders=("common", "bench")) -> dict[str, tuple[ast.Module, bool]]:
    """Every module of ``folders``: its syntax tree, and whether it is a package's ``__init__``."""
    paths = sorted(p for f in folders if (root / f).is_dir() for p in (root / f).rglob("*.py"))
    return {module_name(root, p): (ast.parse(p.read_text(), filename=str(p)), p.name == "__init__.py") for p in paths}


def imports(module: str, tree: ast.Module, is_package: bool, known: set[str]) -> set[str]:
    """The project's modules that ``module`` imports anywhere in its code: ``from a import b`` is ``a.b`` if
    that is a module, else ``a``; ``import a.b`` is ``a.b`` (the nearest module that exists)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and not within(module, name):
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def docstrings(tree: ast.Module) -> set[int]:
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))]
    return {
        id(n.body[0].value)
        for n in nodes
        if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }


def findings(trees: dict, names: tuple[str, ...] = FOLDER_NAMES, home: str = FOLDER_MODULE) -> list[str]:
    """Every breach of the three rules in ``trees`` (:func:`read_tree`), one line each."""
    known = set(trees)
    graph = {module: imports(module, tree, package, known) for module, (tree, package) in trees.items()}
    lines = [f"import cycle: {', '.join(c)}" for c in cycles(graph)]
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = stage(module), stage(target)
            if low is not None and high is not None and high > low:
                lines.append(f"upward import: {module} imports {target}")
    for module, (tree, _) in sorted(trees.items()):
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                for name in names:
                    if module != home and (node.value == name or node.value.endswith("/" + name)):
                        lines.append(f"{name!r} spelled in {module}, not asked of {home}")
    return lines


def test_the_code_keeps_its_structure():
    assert findings(read_tree(ROOT)) == []


def test_the_run_folders_names_are_read_from_its_module():
    assert {"config.json", "results.json", "result.json", "model.keras", "splits.json"} <= set(FOLDER_NAMES)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


INIT = {"common/__init__.py": "", "common/data/__init__.py": "", "common/runs/__init__.py": ""}


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"common/data/a.py": "import os\n", "common/runs/b.py": "from common.data import a\n"}, []),
        (
            {"common/data/a.py": "def f():\n    from common.runs import b\n", "common/runs/b.py": ""},
            ["upward import: common.data.a imports common.runs.b"],
        ),
        (
            {"common/data/a.py": "import common.demo\n", "common/demo.py": ""},
            ["upward import: common.data.a imports common.demo"],
        ),
        (
            {"common/spec.py": "from common import strategies\n", "common/strategies.py": "from . import spec\n"},
            ["import cycle: common.spec, common.strategies"],
        ),
        (
            {"common/runs/b.py": "from .c import x\n", "common/runs/c.py": "def g():\n    import common.runs.b\n"},
            ["import cycle: common.runs.b, common.runs.c"],
        ),
        (
            {"common/runs/b.py": 'PATH = "run/results.json"\n'},
            ["'results.json' spelled in common.runs.b, not asked of common.runs.folder"],
        ),
        ({"common/runs/b.py": '"""Writes results.json."""\n'}, []),
        ({"common/runs/folder.py": 'RESULTS_FILE = "results.json"\n'}, []),
    ],
)
def test_each_rule_finds_its_breach(tmp_path, files, expected):
    trees = read_tree(write(tmp_path, {**INIT, **files}))
    assert findings(trees, names=("results.json",)) == expected
