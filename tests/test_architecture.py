"""The package's shape, checked on its source: modules talk through named interfaces, never
through each other's underscored names, and their imports (lazy ones included) form no
circle. Models and streams reach the core only through the engine."""
import ast
import pathlib

import pytest

import fastlstm

PACKAGE = pathlib.Path(fastlstm.__file__).resolve().parent   # the checkout's or the install's
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
assert len(MODULES) > 20, MODULES


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name):
    where = PACKAGE.parent / name.replace(".", "/")
    return where.is_dir() or any(where.parent.glob(where.name + ".*"))   # .py, or compiled


def defined_in(tree):
    """The functions, classes and methods a module defines: its own private interface."""
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def runtime_nodes(tree):
    """Every node of a module but those under ``if TYPE_CHECKING:`` (imports for annotations,
    which never run)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def imports_of(path):
    """Every fastlstm module that ``path`` imports when it runs, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (base + "." + node.module if node.module else base) if node.level \
                else node.module or ""
            if not target.startswith("fastlstm"):
                continue
            for alias in node.names:   # "from . import io" imports the module io
                sub = f"{target}.{alias.name}"
                found.add(sub if is_module(sub) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastlstm"))
    found.discard(here)
    return found


def test_no_import_circle():
    graph = {module_name(p): imports_of(p) for p in MODULES}
    # a package's __init__ re-exporting its modules is not a dependency of theirs on it
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                pytest.fail(f"import circle: {' -> '.join(path + [dep])}")
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_touches_another_modules_underscored_names():
    """Private modules (_core, _engine, _spec, ...) may be imported for their public names;
    a module's own underscored names are its own business."""
    offences = []
    for path in MODULES:
        tree = ast.parse(path.read_text(), str(path))
        own = defined_in(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                     .startswith("fastlstm")):
                offences += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")
                             and not is_module(f"{module_name(path).rpartition('.')[0]}."
                                               f"{a.name}")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.attr not in own \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self",
                                                                                     "cls")):
                offences.append(f"{path.name}:{node.lineno} reads .{node.attr}")
    assert not offences, "\n".join(offences)


def test_only_the_engine_and_runtime_call_the_core():
    callers = sorted(module_name(p) for p in MODULES if "_core" in
                     {i.rpartition(".")[2] for i in imports_of(p)})
    assert callers == ["fastlstm._engine", "fastlstm.runtime"]
