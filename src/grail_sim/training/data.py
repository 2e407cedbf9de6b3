"""The training rows: a Contract-2 prompt dataset split with the columns the trainer needs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from grail_sim.errors import TrainingDataError

LOG = logging.getLogger(__name__)


REQUIRED_COLUMNS = ("prompt", "gold_index", "n_options")
# The math task (grail_sim.prompts.math_task) is scored against its `answer` column instead.
MATH_COLUMNS = ("prompt", "answer")


GRAIL_COLUMNS = ("slate_items",)


def load_training_data(dataset_dir: str | os.PathLike, split: str, *, need_grail: bool, max_rows: int | None,
                       seed: int):
    """The prompts stage's split, checked against Contract 2; rows without a usable gold are dropped and counted."""
    from datasets import load_from_disk

    dataset_dir = Path(dataset_dir)
    try:
        data = load_from_disk(str(dataset_dir))
    except (FileNotFoundError, ValueError) as err:
        raise TrainingDataError(f"prompt dataset {dataset_dir} does not load: {err}") from None
    if hasattr(data, "keys"):
        if split not in data:
            raise TrainingDataError(f"prompt dataset {dataset_dir} has no split {split!r}; splits: {sorted(data.keys())}")
        data = data[split]
    data = trainable_rows(data, f"prompt dataset {dataset_dir} split {split!r}", need_grail=need_grail)
    # In memory: a shuffle or filter of a dataset loaded from disk writes its cache beside the prompts,
    # which would change their content hash (the resume fingerprint) between a run and its rerun.
    return first_rows(data.shuffle(seed=seed, keep_in_memory=True), max_rows)


def first_rows(data, cap: int | None):
    """The first `cap` rows of `data` (all of them when `cap` is None or 0)."""
    return data.select(range(min(int(cap), len(data)))) if cap else data


def trainable_rows(data, where: str, *, need_grail: bool):
    """`data` checked against Contract 2's training columns, without rows whose gold index is not one
    of the options (counted in the log); `where` names the rows in errors and the log."""
    math = "task" in data.column_names and len(data) > 0 and set(data.unique("task")) == {"math"}
    required = MATH_COLUMNS if math else REQUIRED_COLUMNS + (GRAIL_COLUMNS if need_grail else ())
    missing = [column for column in required if column not in data.column_names]
    if missing:
        raise TrainingDataError(f"{where} lacks column(s) {missing}; has {data.column_names}")
    before = len(data)
    if math:
        data = data.filter(lambda row: bool(str(row["answer"] or "").strip()), keep_in_memory=True)
        reason = "without an answer"
    else:
        data = data.filter(lambda row: 1 <= int(row["gold_index"]) <= int(row["n_options"]), keep_in_memory=True)
        reason = "without a gold index in 1..n_options"
    LOG.info("training rows: %d of %d in %s (dropped %d %s)", len(data), before, where, before - len(data), reason)
    if len(data) == 0:
        raise TrainingDataError(f"{where} has no trainable rows")
    return data
