"""Resumable record streams: what generation and scoring write while they run.

Records stream to `{name}.partial.jsonl` (flushed and synced per batch), so memory stays flat and
a killed run resumes where it stopped: rows whose (task, id) is already there are skipped. The
partial file is only reused when `{name}.partial.json` shows the same fingerprint (model content,
prompts, settings); the finished `{name}.jsonl` appears atomically at the end, and the partial
file and its fingerprint go.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from grail_sim import io

log = logging.getLogger(__name__)


class RecordStream:
    def __init__(self, out_dir: Path, name: str, fingerprint: dict[str, Any]):
        self.partial = out_dir / f"{name}.partial.jsonl"
        self.meta = out_dir / f"{name}.partial.json"
        self.final = out_dir / f"{name}.jsonl"
        previous = json.loads(self.meta.read_text()) if self.meta.exists() else None
        if self.partial.exists() and previous != fingerprint:
            log.warning("discarding %s: it was made with another model, prompts or settings", self.partial)
            self.partial.unlink()
        out_dir.mkdir(parents=True, exist_ok=True)
        io.write_json(self.meta, fingerprint)

    def done_ids(self) -> set[tuple[str, str]]:
        """(task, id) pairs already on disk; a corrupt line fails naming file and line."""
        if not self.partial.exists():
            return set()
        return {(row.get("task"), row.get("id")) for row in io.read_jsonl(self.partial)}

    def records(self, tasks: Sequence[str]) -> dict[str, list[dict]]:
        """The records on disk by task (rows of tasks not asked for are left out)."""
        out: dict[str, list[dict]] = {task: [] for task in tasks}
        if self.partial.exists():
            for row in io.read_jsonl(self.partial):
                if row.get("task") in out:
                    out[row["task"]].append(row)
        return out

    def finish(self, records: Iterator[dict]) -> int:
        """Write the final file atomically, then drop the partial file and its fingerprint."""
        count = io.write_jsonl(self.final, records)
        self.partial.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)
        return count


def progress_bar(total: int, description: str, unit: str = "prompt"):
    """A tqdm bar over `total` units (prompts by default), or None (then progress is logged per batch)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm ships with transformers; keep working without it
        return None
    return tqdm(total=total, desc=description, unit=unit, mininterval=5.0)


def run_batches(dataset, indices: Sequence[int], *, length: Callable[[dict], int], chunk_size: int,
                work: Callable[[list[dict]], list[dict]], stream: RecordStream, progress, label: str,
                block_size: int = 512) -> tuple[float, int]:
    """Apply `work` to rows `indices` of `dataset` in length-sorted batches, appending its records
    to the stream; returns (seconds inside `work`, rows done).

    Rows are read a block at a time, so memory does not grow with the split. Within a block,
    similar lengths share a batch, so little compute goes to padding, and the longest come first,
    so an out-of-memory batch shows at the start of a block rather than at its end.
    """
    seconds, count = 0.0, 0
    with open(stream.partial, "a", encoding="utf-8") as handle:
        for block_start in range(0, len(indices), block_size):
            block = [dataset[i] for i in indices[block_start:block_start + block_size]]
            order = sorted(range(len(block)), key=lambda k: -length(block[k]))
            for start in range(0, len(order), chunk_size):
                batch = [block[k] for k in order[start:start + chunk_size]]
                began = time.perf_counter()
                records = work(batch)
                seconds += time.perf_counter() - began
                for record in records:
                    handle.write(json.dumps(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                count += len(batch)
                if progress is not None:
                    progress.update(len(batch))
                else:
                    log.info("%s: %d/%d rows", label, count, len(indices))
    return seconds, count
