"""Import hygiene of the seqjax package.

* No import cycle among seqjax modules. The graph is read from the source
  with `ast`: every `import` / `from ... import` of a seqjax module, at module
  level or inside a function (a deferred import still runs, so it still
  closes a cycle). `from seqjax.nn import cells` is an edge to the module
  seqjax.nn.cells; `from seqjax.tasks import Task` (a name, not a module) an
  edge to the package seqjax.tasks. The parent packages that Python imports
  implicitly before a submodule are not edges: a package's __init__ that
  re-exports its submodules would otherwise make every package a cycle.
* Every top-level module (seqjax/*.py and seqjax/<package>/__init__.py)
  imports on its own in a fresh interpreter, so none depends on another
  having been imported first.
* `import seqjax.sweeps`, which every config file's get_sweep pays, and
  `import seqjax.config` load no heavy library and no registry.
"""

from __future__ import annotations

import ast
import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Container

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "seqjax"

# Groups of seqjax modules that import one another (each the frozenset of a
# cycle's modules) and are tolerated until someone removes them. Empty: any
# cycle fails the test. Shrink it, never grow it without a plan to fix.
KNOWN_CYCLES: set[frozenset[str]] = set()

# Top-level names of libraries that take seconds to import or load datasets.
HEAVY_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "grain", "torch")


# ----------------------------------------------------------------------------- the import graph


def module_files(root: str, package: str) -> dict[str, str]:
    """{dotted module name: source path} of every module of `package` under `root`."""
    files = {}
    for directory, _, names in os.walk(os.path.join(root, package)):
        for file_name in names:
            if not file_name.endswith(".py"):
                continue
            path = os.path.join(directory, file_name)
            parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from X import ...` reads from (resolving `from . import`)."""
    if not node.level:
        return node.module or ""
    anchor = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        anchor = anchor.rpartition(".")[0]
    return f"{anchor}.{node.module}" if node.module else anchor


def imported_modules(module: str, path: str, known: Container[str]) -> set[str]:
    """The modules in `known` that `module` (source at `path`) imports anywhere in its body."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = os.path.basename(path) == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, module, is_package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    found.add(submodule)
                elif base in known:
                    found.add(base)
    found.discard(module)
    return found


def import_graph(root: str, package: str) -> dict[str, set[str]]:
    """{module: the package modules it imports}."""
    files = module_files(root, package)
    return {module: imported_modules(module, path, files) for module, path in files.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Modules reachable from `start` in one or more steps (`start` itself only on a cycle)."""
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        for successor in graph[frontier.pop()]:
            if successor not in seen:
                seen.add(successor)
                frontier.append(successor)
    return seen


def cyclic_groups(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Every set of modules that reach one another (the graph's strongly
    connected components with a cycle)."""
    reach = {module: _reachable(graph, module) for module in graph}
    return {
        frozenset(other for other in reach[module] if module in reach[other])
        for module in graph
        if module in reach[module]
    }


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """[start, ..., start]: a shortest import cycle through `start` (breadth-first)."""
    parents: dict[str, str] = {}
    frontier = collections.deque([start])
    while frontier:
        node = frontier.popleft()
        for successor in sorted(graph[node]):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return path[::-1] + [start]
            if successor not in parents:
                parents[successor] = node
                frontier.append(successor)
    raise ValueError(f"{start} is on no cycle")


def describe(graph: dict[str, set[str]], group: frozenset[str]) -> str:
    return " -> ".join(shortest_cycle(graph, min(group)))


# ----------------------------------------------------------------------------- tests of the graph itself


FAKE_PACKAGE = {
    "fake/__init__.py": "from fake.a import f\n",
    "fake/a.py": "import fake.b\nimport os\n\ndef f():\n    pass\n",
    "fake/b.py": "def g():\n    from fake import c  # deferred, still an edge\n",
    "fake/c.py": "from . import a\n",
    "fake/d.py": "from fake.sub import thing\nfrom .sub.leaf import *\n",
    "fake/sub/__init__.py": "thing = 1\n",
    "fake/sub/leaf.py": "from .. import d\n",
}


@pytest.fixture
def fake_root(tmp_path):
    for name, source in FAKE_PACKAGE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    return str(tmp_path)


def test_the_graph_resolves_absolute_relative_and_deferred_imports_to_modules(fake_root):
    assert import_graph(fake_root, "fake") == {
        "fake": {"fake.a"},
        "fake.a": {"fake.b"},
        "fake.b": {"fake.c"},
        "fake.c": {"fake.a"},
        "fake.d": {"fake.sub", "fake.sub.leaf"},
        "fake.sub": set(),
        "fake.sub.leaf": {"fake.d"},
    }


def test_cycles_are_found_and_named(fake_root):
    graph = import_graph(fake_root, "fake")
    assert cyclic_groups(graph) == {
        frozenset({"fake.a", "fake.b", "fake.c"}),
        frozenset({"fake.d", "fake.sub.leaf"}),
    }
    assert describe(graph, frozenset({"fake.a", "fake.b", "fake.c"})) == "fake.a -> fake.b -> fake.c -> fake.a"
    assert cyclic_groups({"x": {"y"}, "y": set()}) == set()


# ----------------------------------------------------------------------------- seqjax


def test_seqjax_has_no_import_cycle():
    graph = import_graph(REPO, PACKAGE)
    assert "seqjax.nn.cells" in graph and "seqjax.nn.minimal" in graph["seqjax.nn.recurrent"]  # the graph is read
    found = cyclic_groups(graph)
    new = sorted(describe(graph, group) for group in found - KNOWN_CYCLES)
    assert not new, "import cycles in seqjax:\n  " + "\n  ".join(new)
    gone = sorted(" ".join(sorted(group)) for group in KNOWN_CYCLES - found)
    assert not gone, "KNOWN_CYCLES lists cycles that no longer exist; remove them:\n  " + "\n  ".join(gone)


def top_level_modules() -> list[str]:
    """seqjax, seqjax.<module> for seqjax/*.py and seqjax.<package> for seqjax/<package>/__init__.py."""
    return sorted(name for name in module_files(REPO, PACKAGE) if name.count(".") <= 1)


def _import_alone(module: str) -> tuple[str, subprocess.CompletedProcess]:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return module, result


@pytest.mark.slow
def test_every_top_level_module_imports_alone_in_a_fresh_interpreter():
    modules = top_level_modules()
    assert {"seqjax", "seqjax.config", "seqjax.sweeps", "seqjax.nn", "seqjax.tasks"} <= set(modules)
    # Two at a time: most of the cost is importing JAX and TFDS, on a machine of two cores.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_alone, modules))
    failures = [
        f"{module}:\n{textwrap.indent(result.stderr.strip()[-1500:], '    ')}"
        for module, result in results
        if result.returncode != 0
    ]
    assert not failures, "modules that fail to import in a fresh interpreter:\n" + "\n".join(failures)


def loaded_by(module: str) -> list[str]:
    """Every module in sys.modules after `import module` in a fresh interpreter."""
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "module,allowed_seqjax",
    [
        # get_sweep of every config file imports seqjax.sweeps: expanding a sweep must stay cheap.
        ("seqjax.sweeps", {"seqjax", "seqjax.config", "seqjax.sweeps"}),
        # Loading and (lazily) validating configs: the registries load only inside validate().
        ("seqjax.config", {"seqjax", "seqjax.config"}),
    ],
)
def test_light_modules_import_no_heavy_library_and_no_registry(module, allowed_seqjax):
    loaded = loaded_by(module)
    heavy = sorted({name.split(".")[0] for name in loaded} & set(HEAVY_LIBRARIES))
    assert not heavy, f"import {module} pulls in heavy modules: {heavy}"
    extra = sorted({name for name in loaded if name.split(".")[0] == PACKAGE} - allowed_seqjax)
    assert not extra, f"import {module} pulls in seqjax modules beyond {sorted(allowed_seqjax)}: {extra}"
