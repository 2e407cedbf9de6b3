"""The import graph of src/grail_sim has no loops, and modules import no private names of others.

The graph is read from the source with `ast` (code_version's parser: nothing is imported), so an
import inside a function counts like one at the top: a lazy import still makes the importer depend
on the module it names, and a loop through it is still a loop of modules that need one another.
"""

from __future__ import annotations

from pathlib import Path

from grail_sim import code_version

# Private names are checked in the training package (checked_for_private_names) and where an import
# loop of issue #27 was broken: the modules of those loops and the ones their code moved to. Elsewhere private names are still imported across modules
# (evaluation.metrics' participant helpers, prompts.render's text helpers, data.contract._nest,
# report.model_report's helpers); each wants to become public where it is shared, and then its
# modules can join this set.
PRIVATE_NAMES_CHECKED = {
    "grail_sim.answers",
    "grail_sim.model.cache",
    "grail_sim.model.embedded",
    "grail_sim.model.loading",
    "grail_sim.model.reasoning_vocab",
    "grail_sim.prompts.math_import",
    "grail_sim.prompts.math_task",
}


def checked_for_private_names(module: str) -> bool:
    return module in PRIVATE_NAMES_CHECKED or module.startswith("grail_sim.training")


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name, a package by its __init__.py."""
    modules = {}
    for path in sorted(code_version.ROOT.rglob("*.py")):
        parts = path.relative_to(code_version.ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def packages_above(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module and the grail_sim modules it depends on through its imports.

    Importing grail_sim.x.y runs grail_sim/x/__init__.py first, so the importer depends on the
    packages above the module it names too, except the packages above the importer itself: Python
    has started those before the importer runs (a package's __init__ importing its own submodules
    makes no loop).
    """
    graph = {}
    for module, path in modules.items():
        own_packages = set(packages_above(module))
        named = {name for name in code_version.module_imports(path, module) if name in modules}
        graph[module] = {needed for name in named for needed in (name, *packages_above(name))
                         if needed not in own_packages and needed != module}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` depends on, directly or through others (itself only through a loop)."""
    seen: set[str] = set()
    pending = list(graph[start])
    while pending:
        module = pending.pop()
        if module not in seen:
            seen.add(module)
            pending.extend(graph[module])
    return seen


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each loop as its modules, sorted: the modules that all depend on one another."""
    reach = {module: reachable(graph, module) for module in graph}
    loops = {frozenset(other for other in reach[module] if module in reach[other])
             for module in graph if module in reach[module]}
    return sorted(sorted(loop) for loop in loops)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(modules: dict[str, Path]) -> list[tuple[str, str]]:
    """(importer, `module._name`) for each private name a module imports from another grail_sim module."""
    found = []
    for module, path in modules.items():
        for name in code_version.module_imports(path, module):
            source, _, last = name.rpartition(".")
            if source in modules and source != module and name not in modules and is_private(last):
                found.append((module, name))
    return sorted(found)


def test_the_graph_follows_lazy_and_submodule_imports_and_finds_loops():
    graph = import_graph(package_modules())
    assert "grail_sim.evaluation.vllm_engine" in graph["grail_sim.training.run"]  # imported inside a function
    assert "grail_sim.training.rewards" in graph["grail_sim.training.main"]  # `from grail_sim.training import rewards`
    assert "grail_sim.evaluation" in graph["grail_sim.training.run"]  # the package of the module it names
    assert "grail_sim.training" not in graph["grail_sim.training.main"]  # its own package
    assert import_loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}) == [["a", "b", "c"], ["e"]]


def test_src_grail_sim_has_no_import_loop():
    graph = import_graph(package_modules())
    loops = import_loops(graph)
    assert not loops, "import loops (each module -> the modules of its loop it imports):\n" + "\n".join(
        "  " + "; ".join(f"{module} -> {', '.join(sorted(graph[module] & set(loop)))}" for module in loop)
        for loop in loops)


def test_the_model_package_does_not_reach_up_into_training():
    graph = import_graph(package_modules())
    upward = {(module, needed) for module, needs in graph.items() if module.startswith("grail_sim.model.")
              for needed in needs if needed.startswith("grail_sim.training")}
    assert not upward, f"model/ imports training/ (move what it needs down to model/): {sorted(upward)}"


def test_no_module_imports_a_private_name_of_another():
    found = [(module, name) for module, name in private_imports(package_modules())
             if checked_for_private_names(module) or checked_for_private_names(name.rpartition(".")[0])]
    assert not found, "private names imported across modules (make them public where they are shared):\n" + \
        "\n".join(f"  {module} imports {name}" for module, name in found)
