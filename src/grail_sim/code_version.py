"""The code version of each workflow stage: the package version plus a hash of every grail_sim
file the stage's CLI can run, found by following its imports.

A rule's `code` param is this version, so upgrading grail-sim reruns exactly the stages whose code
changed and the stages below them. The files are found from the import statements (read with
`ast`, nothing is imported), so a module a stage starts to import is covered without anyone
editing a list; a hand-kept list missed the demo oracle, choice_metrics and the demo layout.
`module_imports` and `module_path` also build the package's import graph for
tests/test_import_graph.py, which keeps it free of loops.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from grail_sim.cli import COMMANDS

PACKAGE = "grail_sim"
ROOT = Path(__file__).resolve().parent

# Each stage's CLI module, where its imports are followed from: the dispatcher's own table (it
# imports them by name, so following the dispatcher's imports does not pull in every stage).
STAGE_ENTRIES = {stage: module for stage, (module, _) in COMMANDS.items()}
# Files that decide outputs without being imported: the config schema (its defaults) and the
# report templates (read as data).
DATA_FILES = {"*": ["resources/config.schema.yaml"], "report": ["report/templates"]}


def module_path(module: str) -> Path | None:
    """The file of a grail_sim module (a package's __init__.py), or None outside the package."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")[1:]
    if not parts:
        return ROOT / "__init__.py"
    for candidate in (ROOT.joinpath(*parts[:-1], parts[-1] + ".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def module_imports(path: Path, module: str) -> set[str]:
    """Every dotted name an import in `path` (the file of `module`) names, module-level or inside
    functions alike: each module imported, and `source.name` for each `from source import name`
    (`name` may be a submodule or any other name: `module_path` tells them apart)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def stage_files(stage: str) -> list[Path]:
    """The grail_sim files stage `stage` depends on, sorted: its import closure plus its data files."""
    if stage not in STAGE_ENTRIES:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_ENTRIES)}")
    seen: dict[str, Path] = {}
    pending = [PACKAGE, "grail_sim.cli", STAGE_ENTRIES[stage]]
    while pending:
        module = pending.pop()
        path = module_path(module)
        if path is None or module in seen:
            continue
        seen[module] = path
        parent = module.rsplit(".", 1)[0]
        if parent != module:
            pending.append(parent)  # importing a submodule runs its package's __init__ too
        pending.extend(module_imports(path, module))
    files = set(seen.values())
    for name in DATA_FILES["*"] + DATA_FILES.get(stage, []):
        path = ROOT / name
        files.update(sorted(path.rglob("*")) if path.is_dir() else [path])
    return sorted(f for f in files if f.is_file())


def code_version(stage: str, version: str) -> str:
    """`version+hash`: the hash covers the path and content of every file of `stage_files(stage)`."""
    digest = hashlib.sha256(version.encode())
    for path in stage_files(stage):
        digest.update(str(path.relative_to(ROOT.parent)).encode())
        digest.update(path.read_bytes())
    return f"{version}+{digest.hexdigest()[:12]}"
