"""The package's shape (docs/DESIGN.md's module map): no import cycle between modules or between
packages, no more imports hidden inside functions than today, a short top level, no test importing a
benchmark script.

Reads the sources with `ast` only (nothing is imported), so it costs milliseconds. Imports inside
functions count like those at the top of a file: both are what a module depends on.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tumorgen"
MAX_TOP_LEVEL_MODULES = 12  # issue 11: entry points, shared plumbing and the method's pure maths
TESTS = Path(__file__).resolve().parent
# Imports of package modules inside functions: a file's header then does not show what it depends on.
# Some are on purpose (torch and MONAI stay out of `tumorgen --help`); the number may only go down.
MAX_IMPORTS_INSIDE_FUNCTIONS = 126


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package `__init__`)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _root_facade_lines(tree: ast.Module) -> set[int]:
    """Lines of the root `__init__`'s lazy `__getattr__` (`from tumorgen import TumorGen`).

    It runs only when a user asks for `tumorgen.TumorGen`; the package's own modules import nothing
    but `__version__` from the root, so its lazy re-export of the API is not their dependency.
    """
    return {line for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            for line in range(node.lineno, node.end_lineno + 1)}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level or inside functions alike."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _root_facade_lines(tree) if name == "tumorgen" else set()
        package = name if is_package else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from .x import y
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                deps.add(target)
                deps.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_among_the_packages_modules():
    cycles = import_cycles(import_graph())
    assert not cycles, "modules that import each other in a circle: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_circle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto the top level (`tumorgen.data.window` -> "synthesis")."""
    def top(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""

    folded: dict[str, set[str]] = {}
    for module, deps in graph.items():
        if top(module):
            folded.setdefault(top(module), set()).update(top(d) for d in deps if top(d) and top(d) != top(module))
    return folded


def imports_inside_functions() -> list[str]:
    """`file:line module` of every import of a package module made inside a function."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))

        def visit(node, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if in_function and isinstance(child, ast.ImportFrom) and (
                        child.level or (child.module or "").startswith("tumorgen")):
                    found.append(f"{path.relative_to(PACKAGE)}:{child.lineno} {child.module}")
                elif in_function and isinstance(child, ast.Import) and any(
                        a.name.startswith("tumorgen") for a in child.names):
                    found.append(f"{path.relative_to(PACKAGE)}:{child.lineno} {child.names[0].name}")
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

        visit(tree, False)
    return found


def test_packages_stack_with_no_loop():
    """docs/DESIGN.md's layers: data and models low, training and synthesis above them, api and the
    generators above those, augmentation, evaluation, commands and the demo on top."""
    cycles = import_cycles(package_graph(import_graph()))
    assert not cycles, "packages that reach each other in a circle: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_package_graph_folds_modules_onto_their_packages():
    graph = {"tumorgen.a.x": {"tumorgen.b"}, "tumorgen.b": {"tumorgen.a.y"}, "tumorgen.a.y": set(),
             "tumorgen.c": set()}
    assert package_graph(graph) == {"a": {"b"}, "b": {"a"}, "c": set()}
    assert import_cycles(package_graph(graph)) == [["a", "b"]]


def test_imports_inside_functions_do_not_grow():
    found = imports_inside_functions()
    assert len(found) <= MAX_IMPORTS_INSIDE_FUNCTIONS, (
        f"{len(found)} imports of package modules inside functions (at most {MAX_IMPORTS_INSIDE_FUNCTIONS}); "
        "import at the top of the file unless it keeps torch or MONAI out of a light path")


def test_no_test_imports_a_benchmark_script():
    def imports_a_script(text: str) -> bool:
        return "spec_from_file_location" in text or ("sys.path.insert" in text and "benchmarks" in text)

    offenders = [p.name for p in TESTS.glob("*.py")
                 if p != Path(__file__).resolve() and imports_a_script(p.read_text())]
    assert not offenders, f"tests that import a benchmark script (call the package, or run the script): {offenders}"


def test_top_level_holds_at_most_twelve_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top of src/tumorgen: {top}"
