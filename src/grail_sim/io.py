"""Atomic outputs and line-numbered JSONL, shared by every stage.

Nothing is ever half-written: each writer puts its bytes in a temporary sibling and renames it
over the target, which is atomic on POSIX filesystems (also on a cluster's shared filesystem,
where a killed job must not leave a truncated file that Snakemake would take as done).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from grail_sim.errors import JsonlError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _tmp_sibling(path: Path, is_dir: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp/mkdtemp create private (0600/0700) entries; outputs on a shared cluster filesystem
    # must get the ordinary permissions the user's umask gives.
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces `path`, on failure it is removed."""
    target = Path(path)
    tmp = _tmp_sibling(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces directory `path` whole."""
    target = Path(path)
    tmp = _tmp_sibling(target, is_dir=True)
    try:
        yield tmp
        if target.exists():
            old = _tmp_sibling(target, is_dir=True)
            old.rmdir()
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, default=_json_default) + "\n")
            count += 1
    return count




def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Stream JSON objects; a corrupt line fails with `file:line`. Blank lines are skipped."""
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise JsonlError(f"{path}:{number}: corrupt JSON line ({err.msg})") from None
            if not isinstance(row, dict):
                raise JsonlError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield row


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash for provenance (a folder hashes its files in sorted order)."""
    import hashlib

    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def read_json_file(path: str | os.PathLike, *, what: str, error: type[Exception], hint: str = "") -> Any:
    """A JSON file's content; a missing or corrupt file raises `error` naming `what`, the file and
    the line (plus `hint`, for example the command that writes the file)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist{hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(f"{path}:{err.lineno}: corrupt JSON in {what} ({err.msg})") from None


def yaml_load(text: str) -> Any:
    """YAML as users write it: PyYAML's safe loader, except that `2e-5` and `1E6` are numbers.

    PyYAML follows YAML 1.1, where a float needs a dot (`2.0e-5`), so `learning_rate: 2e-5` would
    reach the optimizer as the string "2e-5" and fail deep inside torch. YAML 1.2 (and every other
    loader users know) reads it as a float; recipes, configs and `--set` values are read that way."""
    import yaml

    return yaml.load(text, Loader=_number_aware_loader())  # a SafeLoader subclass: no object construction


@functools.lru_cache(maxsize=1)
def _number_aware_loader():
    import re

    import yaml

    class NumberAwareLoader(yaml.SafeLoader):
        pass

    # Own copies of the resolver lists: add_implicit_resolver would append to SafeLoader's shared ones.
    NumberAwareLoader.yaml_implicit_resolvers = {key: list(value) for key, value in
                                                 yaml.SafeLoader.yaml_implicit_resolvers.items()}
    NumberAwareLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return NumberAwareLoader


def read_yaml_mapping(path: str | os.PathLike, *, what: str, error: type[Exception]) -> dict:
    """A YAML file that must hold a mapping (a config file, a recipe); `error` names `what` and the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        data = yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise error(f"{what} {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data
