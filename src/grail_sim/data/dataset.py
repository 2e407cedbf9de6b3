"""A pre-cleaned dataset (parquet / JSON(L) / CSV, a `datasets` folder or a hub name) mapped onto
Contract 1: its loader, the column mapping, the row checks (drops counted) and the split each row
is given by the dataset, if any (`finalise` assigns the rest).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Mapping

from grail_sim.data.capsule import is_missing, to_float
from grail_sim.data.clean import resolve_config
from grail_sim.data.contract import CONTRACT_COLUMNS
from grail_sim.errors import CapsuleError, CleanConfigError

_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                  "eval": "validation", "dev": "validation", "test": "test"}


_REQUIRED_DATASET_COLUMNS = ("participant_id", "issue", "slate_items", "gold_index")


def load_dataset_frame(path_or_name: str):
    """A pre-cleaned dataset as one pandas frame with a `_source_split` column.

    Local parquet / JSON(L) / CSV files and folders of them go through `datasets.load_dataset` with
    the matching builder; a `save_to_disk` folder through `load_from_disk`; anything else is taken
    as a hub dataset name (which needs network access and no HF_HUB_OFFLINE).
    """
    import datasets
    import pandas as pd

    path = Path(path_or_name)
    builders = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
    elif path.is_file():
        if path.suffix not in builders:
            raise CapsuleError(f"{path}: unsupported dataset file type {path.suffix!r} (parquet, json, jsonl, csv)")
        loaded = datasets.load_dataset(builders[path.suffix], data_files=str(path))
    elif path.is_dir():
        suffixes = {p.suffix for p in path.rglob("*") if p.suffix in builders}
        if len(suffixes) == 1 and not any(path.glob("*.py")):
            loaded = datasets.load_dataset(builders[suffixes.pop()], data_dir=str(path))
        else:
            loaded = datasets.load_dataset(str(path))
    else:
        if path_or_name.startswith((".", "/")) or path.suffix in builders:
            raise CapsuleError(f"dataset not found: {path_or_name}")
        try:
            loaded = datasets.load_dataset(path_or_name)
        except Exception as err:  # noqa: BLE001 - hub errors come in many types; name the dataset
            raise CapsuleError(f"could not load dataset {path_or_name!r} (a hub name needs network access "
                               f"and HF_HUB_OFFLINE unset): {type(err).__name__}: {err}") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    # Loaders name a lone split "train" whether or not the data named it (a single file always
    # loads so). A lone train split is therefore "no splits given": `finalise` then assigns them per
    # participant as for the capsule, instead of an empty validation and test split.
    named = list(loaded) != ["train"]
    frames = []
    for split_name, split in loaded.items():
        frame = split.to_pandas()
        frame["_source_split"] = split_name if named else None
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _given_split(record: Mapping) -> str | None:
    """The split the dataset gives a row (its `split` column, else its split's name), or None."""
    for value in (record.get("split"), record.get("_source_split")):
        if not is_missing(value):
            return _SPLIT_ALIASES.get(str(value).strip().lower())
    return None


def _slate(value) -> list | None:
    """A slate given as a list, an array (parquet) or a JSON list; None when malformed or empty."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value if isinstance(value, list) and value else None


def clean_dataset(path_or_name: str, columns: Mapping[str, str], config: Mapping | None = None) -> tuple[list[dict], dict]:
    """Map a pre-cleaned dataset's columns onto Contract 1; rows that break it are dropped and counted."""
    config = resolve_config(config)
    frame = load_dataset_frame(path_or_name)
    renamed = {source: target for target, source in columns.items()}
    unknown_targets = set(columns) - set(CONTRACT_COLUMNS)
    if unknown_targets:
        raise CleanConfigError(f"data.dataset.columns: unknown Contract 1 column(s) {sorted(unknown_targets)}")
    absent_sources = [s for s in renamed if s not in frame.columns]
    if absent_sources:
        raise CapsuleError(f"{path_or_name}: mapped column(s) {absent_sources} not in the dataset "
                           f"(columns: {sorted(frame.columns)})")
    frame = frame.rename(columns=renamed)
    missing = [c for c in _REQUIRED_DATASET_COLUMNS if c not in frame.columns]
    if missing:
        raise CapsuleError(f"{path_or_name}: required column(s) {missing} missing; map them with data.dataset.columns")
    patterns = [re.compile(p) for p in config["post_treatment_patterns"]]
    drops: Counter = Counter()
    counters: Counter = Counter(rows_read=len(frame))
    rows = []
    for number, record in enumerate(frame.to_dict("records")):
        slate = _slate(record["slate_items"])
        if slate is None:
            drops["row_malformed_slate_items"] += 1
            continue
        gold_index = to_float(record["gold_index"])
        if math.isnan(gold_index) or not (1 <= gold_index <= len(slate)) or gold_index != int(gold_index):
            drops["row_gold_index_out_of_range"] += 1
            continue
        gold_index = int(gold_index)
        slate = [item if isinstance(item, Mapping) else {"id": str(item)} for item in slate]
        profile = record.get("profile", {})
        if isinstance(profile, str):
            profile = json.loads(profile) if profile.strip() else {}
        profile = dict(profile or {})
        leaked = [k for k in profile if any(p.search(k) for p in patterns)]
        for key in leaked:
            del profile[key]
        counters["profile_keys_removed_post_treatment"] += len(leaked)
        session_id = str(record.get("session_id") or f"row{number}")
        step_value = to_float(record.get("step_index"))
        step_index = 0 if math.isnan(step_value) else int(step_value)
        history = record.get("history", "[]")
        rows.append({
            "row_id": str(record.get("row_id") or f"{session_id}:{step_index}"),
            "session_id": session_id,
            "session_start_s": to_float(record.get("session_start_s")),
            "participant_id": str(record["participant_id"]),
            "issue": str(record["issue"]),
            "participant_study": str(record.get("participant_study") or ""),
            "treatment_arm": str(record.get("treatment_arm") or ""),
            "step_index": step_index,
            "current_video_id": str(record.get("current_video_id") or ""),
            "current_video_title": str(record.get("current_video_title") or ""),
            "current_video_channel": str(record.get("current_video_channel") or ""),
            "current_video_duration_s": to_float(record.get("current_video_duration_s")),
            "history": history if isinstance(history, str) else json.dumps(list(history), default=str),
            "current_watched_s": to_float(record.get("current_watched_s")),
            "current_total_s": to_float(record.get("current_total_s")),
            "slate_items": json.dumps(slate, ensure_ascii=False, default=str),
            "slate_source": str(record.get("slate_source") or "displayed"),
            "n_options": len(slate),
            "gold_video_id": str(record.get("gold_video_id") or slate[gold_index - 1].get("id", "")),
            "gold_index": gold_index,
            "profile": json.dumps(profile, ensure_ascii=False, sort_keys=True, default=str),
            "opinion_before": to_float(record.get("opinion_before")),
            "opinion_after": to_float(record.get("opinion_after")),
            "_source_split": _given_split(record),
        })
    stats = {"source": "dataset", "input": path_or_name, "sessions_read": 0, "drops": dict(sorted(drops.items())),
             "allow_list": {}, "profile_columns_missing": {}, "counters": dict(sorted(counters.items())),
             # Whether `finalise` assigns (some) splits from clean.split_seed / split_fractions.
             "splits_assigned": any(row["_source_split"] is None for row in rows)}
    return rows, stats
