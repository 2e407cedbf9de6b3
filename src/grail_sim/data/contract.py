"""Contract 1 (`interactions.parquet`): its columns, participant ids, participant-level splits,
the final frame with its stats, and the writer of both outputs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from grail_sim.errors import CapsuleError
from grail_sim.io import atomic_path, write_json

CONTRACT_COLUMNS = [
    "row_id", "session_id", "session_start_s", "participant_id", "issue", "participant_study", "treatment_arm", "step_index",
    "current_video_id", "current_video_title", "current_video_channel", "current_video_duration_s",
    "history", "current_watched_s", "current_total_s", "slate_items", "slate_source", "n_options",
    "gold_video_id", "gold_index", "profile", "opinion_before", "opinion_after", "split",
]




def participant_hash(study: str, key: str) -> str:
    """A stable pseudonym: the survey key never reaches the outputs, and the study keeps equal keys
    of two panels apart."""
    return hashlib.sha256(f"{study}:{key}".encode()).hexdigest()[:16]


def assign_splits(participants_by_study: Mapping[str, list[str]], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """participant_id -> split; within each study a seeded hash order cut at the fractions.

    The order of a participant depends only on (seed, id), so adding participants to one study
    never moves participants of another.
    """
    out: dict[str, str] = {}
    for study in sorted(participants_by_study):
        ids = sorted(set(participants_by_study[study]), key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        n = len(ids)
        n_train = round(n * fractions["train"])
        n_validation = round(n * fractions["validation"])
        if n >= 3 and fractions["test"] > 0 and n_train + n_validation >= n:
            n_train = max(0, n - n_validation - 1)  # never leave a study without test participants
        for rank, pid in enumerate(ids):
            out[pid] = "train" if rank < n_train else "validation" if rank < n_train + n_validation else "test"
    return out


def _nest(counters: Mapping[str, int]) -> dict:
    """`allow_list.<study>.<name>` counters as {study: {name: count}} for stats.json."""
    out: dict[str, dict] = defaultdict(dict)
    for key, value in sorted(counters.items()):
        _, study, name = key.split(".", 2)
        out[study][name] = int(value)
    return dict(out)


def finalise(rows: list[dict], stats: dict, config: Mapping) -> tuple[Any, dict]:
    """Assign splits, order columns, and complete the stats; returns (frame, stats)."""
    import pandas as pd

    by_study: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_study[row["participant_study"]].append(row["participant_id"])
    splits = assign_splits(by_study, config["split_fractions"], int(config["split_seed"]))
    for row in rows:
        given = row.pop("_source_split", None)
        row["split"] = given or splits[row["participant_id"]]
    frame = pd.DataFrame(rows, columns=CONTRACT_COLUMNS)
    duplicated = frame["row_id"].duplicated()
    if duplicated.any():
        stats["drops"]["row_duplicate_row_id"] = int(duplicated.sum())
        frame = frame[~duplicated].reset_index(drop=True)
    frame = frame.astype({"step_index": "int64", "n_options": "int64", "gold_index": "int64"})
    for column in ("session_start_s", "current_video_duration_s", "current_watched_s", "current_total_s", "opinion_before", "opinion_after"):
        frame[column] = frame[column].astype("float64")
    _check_one_split_per_participant(frame)
    stats |= {
        "rows": len(frame),
        "participants": int(frame["participant_id"].nunique()),
        "participants_by_study": {k: int(v) for k, v in frame.groupby("participant_study")["participant_id"].nunique().items()},
        "rows_by_study": {k: int(v) for k, v in frame["participant_study"].value_counts().sort_index().items()},
        "rows_by_split": {k: int(v) for k, v in frame["split"].value_counts().sort_index().items()},
        "participants_by_split": {k: int(v) for k, v in frame.groupby("split")["participant_id"].nunique().items()},
        "slate_source_counts": {k: int(v) for k, v in frame["slate_source"].value_counts().sort_index().items()},
        "n_options_counts": {str(k): int(v) for k, v in frame["n_options"].value_counts().sort_index().items()},
        "gold_index_counts": {str(k): int(v) for k, v in frame["gold_index"].value_counts().sort_index().items()},
        "split_seed": int(config["split_seed"]),
        "split_fractions": dict(config["split_fractions"]),
    }
    return frame, stats


def _check_one_split_per_participant(frame) -> None:
    """A participant's rows in two splits would leak them from training into evaluation.

    Only a pre-cleaned dataset's own split names can do this (assigned splits are per
    participant), so it is an input error, raised as one line naming participants and splits.
    """
    splits = frame.groupby("participant_id")["split"].unique()
    leaks = splits[splits.map(len) > 1]
    if leaks.empty:
        return
    named = [f"participant {pid!r} has rows in two or more splits ({', '.join(sorted(s))})"
             for pid, s in leaks.head(5).items()]
    more = [f"{len(leaks) - 5} more participant(s) too"] if len(leaks) > 5 else []
    raise CapsuleError("; ".join(named + more) + "; a participant's rows must share one split "
                       "(check the dataset's split column or split file names)")


def write_outputs(frame, stats: dict, out: str | Path, stats_path: str | Path) -> None:
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(stats_path, stats)
