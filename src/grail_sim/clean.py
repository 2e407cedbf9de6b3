"""The clean stage: the raw capsule (or a pre-cleaned dataset) -> one row per (session, step).

Output: Contract 1 of docs/DESIGN.md (`interactions.parquet`) and `stats.json` with every counter.
Rules that the earlier reference broke and this module enforces:
- the slate is the one displayed at that step (`displayOrders`), never extended with the clicked
  video; a step whose chosen video is not in its slate is dropped and counted;
- profiles hold allow-listed wave-1 columns only; a configured column that looks post-treatment
  is a configuration error;
- every dropped session, step or survey row is counted under a named reason.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping

from grail_sim.capsule import (
    CapsuleError,
    SessionDrop,
    VideoMeta,
    allowed_survey_rows,
    find_data_dir,
    find_survey_root,
    is_missing,
    issue_from_topic,
    load_sessions,
    load_trees,
    parse_session,
    to_float,
)
from grail_sim.io import atomic_path, write_json
from grail_sim.issues import STUDIES

log = logging.getLogger(__name__)

CONTRACT_COLUMNS = [
    "row_id", "session_id", "participant_id", "issue", "participant_study", "treatment_arm", "step_index",
    "current_video_id", "current_video_title", "current_video_channel", "current_video_duration_s",
    "history", "current_watched_s", "current_total_s", "slate_items", "slate_source", "n_options",
    "gold_video_id", "gold_index", "profile", "opinion_before", "opinion_after", "split",
]
SPLITS = ("train", "validation", "test")

# Mirrors the `clean:` section of config/config.yaml (tests/test_clean.py keeps the two equal), so
# `grail-sim clean` also runs outside Snakemake. --config-json overrides it key by key.
DEFAULT_CONFIG: dict[str, Any] = {
    "min_steps": 1,
    "split_seed": 42,
    "split_fractions": {"train": 0.8, "validation": 0.1, "test": 0.1},
    "post_treatment_patterns": ["_w2$", "_w3$", "_2$", "^post_", "_post$", "_after$"],
    "studies": {
        "study1": {
            "survey": "gun control (issue 1)/guncontrol_qualtrics_w123_clean.csv",
            "screener": "gun control (issue 1)/guncontrol_qualtrics_w1_clean.csv",
            "participant_key": "worker_id",
            "session_join_key": "urlid",
            "order_column": "start_time2",
            "opinion_before": "gun_index",
            "opinion_after": "gun_index_2",
            "higher_is_conservative": True,
            "attention_checks": {"q87": "Quick and easy", "q89": "wikiHow"},
            "min_survey_time_s": 120,
            "opinion_range": [0.05, 0.95],
            "profile_columns": ["age", "q26", "q29", "q31", "college", "pid1", "ideo1", "pol_interest",
                                "freq_youtube", "gun_own", "gun_priority", "gun_importance", "gun_index"],
        },
        "study2": {
            "survey": "minimum wage (issue 2)/qualtrics_w12_clean.csv",
            "screener": None,
            "participant_key": "worker_id",
            "session_join_key": "urlid",
            "order_column": "start_time2",
            "opinion_before": "mw_index_w1",
            "opinion_after": "mw_index_w2",
            "higher_is_conservative": True,
            "attention_checks": {"q87": "Quick and easy", "q89": "wikiHow"},
            "min_survey_time_s": 120,
            "opinion_range": [0.025, 0.975],
            "profile_columns": ["age", "q26", "q29", "q31", "college", "pid1", "ideo1", "pol_interest",
                                "freq_youtube", "minwage15_w1", "minwage_importance_w1", "mw_index_w1"],
        },
        "study3": {
            "survey": "minimum wage (issue 2)/yg_w12_clean.csv",
            "screener": None,
            "participant_key": "caseid",
            "session_join_key": "urlid",
            "order_column": "starttime",
            "opinion_before": "mw_index_w1",
            "opinion_after": "mw_index_w2",
            "higher_is_conservative": True,
            "attention_checks": {},
            "min_survey_time_s": None,
            "opinion_range": None,
            "profile_columns": ["age", "gender", "race", "income", "educ", "pid", "ideo", "pol_interest",
                                "freq_youtube", "minwage15_w1", "mw_index_w1"],
        },
    },
}


class CleanConfigError(ValueError):
    """A `clean:` configuration that would produce wrong rows; the message names the key."""


def _merge(base: dict, override: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key not in {"attention_checks"}:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_config(override: Mapping | None = None) -> dict:
    """Defaults overlaid with `override`, then checked: fractions, study names, post-treatment columns."""
    config = _merge(DEFAULT_CONFIG, override or {})
    fractions = config["split_fractions"]
    if set(fractions) != set(SPLITS) or any(not (0 <= float(v) <= 1) for v in fractions.values()):
        raise CleanConfigError(f"clean.split_fractions must give train, validation, test in [0, 1]; got {fractions}")
    if abs(sum(float(v) for v in fractions.values()) - 1) > 1e-9:
        raise CleanConfigError(f"clean.split_fractions must sum to 1; got {fractions}")
    unknown = set(config["studies"]) - set(STUDIES)
    if unknown:
        raise CleanConfigError(f"clean.studies: unknown study {sorted(unknown)}; valid: {sorted(STUDIES)}")
    patterns = [re.compile(p) for p in config["post_treatment_patterns"]]
    for study, spec in config["studies"].items():
        for column in spec.get("profile_columns", []):
            for pattern in patterns:
                if pattern.search(column):
                    raise CleanConfigError(
                        f"clean.studies.{study}.profile_columns: {column!r} matches post-treatment pattern "
                        f"{pattern.pattern!r}; profiles may hold pre-treatment (wave-1) columns only")
    return config


def participant_hash(study: str, key: str) -> str:
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


def _meta_json(vid: str, meta: Mapping[str, VideoMeta]) -> dict:
    entry = meta.get(vid)
    if entry is None:
        return {"id": vid, "title": None, "channel": None, "duration_s": None,
                "view_count": None, "like_count": None, "comment_count": None}
    return {"id": vid, "title": entry.title or None, "channel": entry.channel or None,
            "duration_s": _json_number(entry.duration_s), "view_count": _json_number(entry.view_count),
            "like_count": _json_number(entry.like_count), "comment_count": _json_number(entry.comment_count)}


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _opinion(row: Mapping, column: str | None, higher_is_conservative: bool) -> float:
    if not column or column not in row:
        return math.nan
    value = to_float(row[column])
    return value if math.isnan(value) or higher_is_conservative else 1.0 - value


def clean_capsule(capsule: str | Path, config: Mapping | None = None) -> tuple[list[dict], dict]:
    """Rows (Contract 1, without `split`) and the stats of one capsule."""
    config = resolve_config(config)
    started = time.perf_counter()
    root = Path(capsule)
    data_dir = find_data_dir(root)
    survey_root = find_survey_root(root)
    counters: Counter = Counter()
    drops: Counter = Counter()

    allowed: dict[str, dict[str, tuple[str, dict]]] = defaultdict(dict)  # issue -> urlid -> (study, row)
    surveyed: dict[str, set[str]] = defaultdict(set)  # issue -> every urlid any survey row has
    ambiguous: set[tuple[str, str]] = set()
    allow_counters: Counter = Counter()
    profile_columns_missing: dict[str, list[str]] = {}
    for study, spec in config["studies"].items():
        issue = STUDIES[study]
        frame, join_values = allowed_survey_rows(survey_root, study, spec, allow_counters)
        surveyed[issue] |= join_values
        absent = [c for c in spec.get("profile_columns", []) if c not in frame.columns]
        if absent:
            profile_columns_missing[study] = absent
            log.warning("%s: profile column(s) not in the survey: %s", study, ", ".join(absent))
        join = spec.get("session_join_key", "urlid")
        for row in frame.to_dict("records"):
            urlid = str(row[join]).strip()
            if is_missing(urlid):
                allow_counters[f"allow_list.{study}.missing_join_key"] += 1
                continue
            if urlid in allowed[issue]:
                ambiguous.add((issue, urlid))
            allowed[issue][urlid] = (study, row)
    log.info("allow-lists: %s", {s: allow_counters[f"allow_list.{s}.allowed_participants"] for s in config["studies"]})

    meta, tree_recs = load_trees(data_dir, counters)
    sessions_path = data_dir / "platform session data" / "sessions.json"
    raw_sessions = load_sessions(sessions_path)
    counters["sessions_read"] = len(raw_sessions)
    log.info("read %d sessions from %s, metadata for %d videos", len(raw_sessions), sessions_path, len(meta))

    rows: list[dict] = []
    seen_sessions: set[str] = set()
    sessions_by_participant: Counter = Counter()
    unknown_videos: set[str] = set()
    min_steps = int(config["min_steps"])
    for number, obj in enumerate(raw_sessions):
        if number and number % 5000 == 0:
            log.info("sessions %d/%d, rows so far %d", number, len(raw_sessions), len(rows))
        try:
            session = parse_session(obj)
        except SessionDrop as drop:
            drops[drop.reason] += 1
            continue
        counters.update(session.counters)
        if session.session_id in seen_sessions:
            drops["session_duplicate_id"] += 1
            continue
        seen_sessions.add(session.session_id)
        issue = issue_from_topic(session.topic)
        if issue is None:
            drops["session_unknown_topic"] += 1
            continue
        if not session.urlid:
            drops["session_missing_urlid"] += 1
            continue
        if (issue, session.urlid) in ambiguous:
            drops["session_ambiguous_urlid"] += 1
            continue
        match = allowed[issue].get(session.urlid)
        if match is None:
            if session.urlid in surveyed[issue]:
                reason = "session_filtered_by_allow_list"
            elif any(session.urlid in values for other, values in surveyed.items() if other != issue):
                reason = "session_topic_disagrees_with_survey"
            else:
                reason = "session_not_in_surveys"
            drops[reason] += 1
            continue
        study, survey_row = match
        spec = config["studies"][study]
        participant_key = str(survey_row["_key"])
        participant_id = participant_hash(study, participant_key)
        profile = {c: str(survey_row[c]).strip() for c in spec.get("profile_columns", [])
                   if c in survey_row and not is_missing(survey_row[c])}
        profile_json = json.dumps(profile, ensure_ascii=False, sort_keys=True)
        higher = bool(spec.get("higher_is_conservative", True))
        before = _opinion(survey_row, spec.get("opinion_before"), higher)
        after = _opinion(survey_row, spec.get("opinion_after"), higher)

        history: list[dict] = []
        session_rows: list[dict] = []
        for step in session.steps:
            if step.slate is not None:
                slate, source = step.slate, "displayed"
            elif step.current_id in tree_recs:
                slate, source = tree_recs[step.current_id], "tree"
            else:
                slate, source = None, ""
            position = step.step_index
            current_meta = meta.get(step.current_id)
            if current_meta is None:
                unknown_videos.add(step.current_id)
            if slate is None:
                drops["step_no_slate"] += 1
            elif not slate:
                drops["step_empty_slate"] += 1
            elif step.gold_id not in slate:
                drops["step_gold_not_in_slate"] += 1
            else:
                unknown_videos.update(v for v in slate if v not in meta)
                session_rows.append({
                    "row_id": f"{session.session_id}:{position}",
                    "session_id": session.session_id,
                    "participant_id": participant_id,
                    "issue": issue,
                    "participant_study": study,
                    "treatment_arm": str(survey_row["treatment_arm"]).strip(),
                    "step_index": position,
                    "current_video_id": step.current_id,
                    "current_video_title": current_meta.title if current_meta else "",
                    "current_video_channel": current_meta.channel if current_meta else "",
                    "current_video_duration_s": current_meta.duration_s if current_meta else math.nan,
                    # Only videos before the current one: the future of the session never leaks in.
                    "history": json.dumps(history, ensure_ascii=False),
                    "current_watched_s": session.watched_s[position],
                    "current_total_s": session.total_s[position],
                    "slate_items": json.dumps([_meta_json(v, meta) for v in slate], ensure_ascii=False),
                    "slate_source": source,
                    "n_options": len(slate),
                    "gold_video_id": step.gold_id,
                    "gold_index": slate.index(step.gold_id) + 1,
                    "profile": profile_json,
                    "opinion_before": before,
                    "opinion_after": after,
                })
            history = history + [{
                "id": step.current_id,
                "title": current_meta.title if current_meta else None,
                "channel": current_meta.channel if current_meta else None,
                "watched_s": _json_number(session.watched_s[position]),
                "total_s": _json_number(session.total_s[position]),
            }]
        if len(session_rows) < min_steps:
            drops["session_too_few_usable_steps"] += 1
            drops["step_in_dropped_session"] += len(session_rows)
            continue
        rows.extend(session_rows)
        sessions_by_participant[participant_id] += 1

    counters["sessions_kept"] = sum(sessions_by_participant.values())
    counters["participants_with_several_sessions"] = sum(1 for n in sessions_by_participant.values() if n > 1)
    counters["videos_without_metadata"] = len(unknown_videos)
    stats = {
        "source": "capsule",
        "input": str(root),
        "sessions_read": counters["sessions_read"],
        "drops": dict(sorted(drops.items())),
        "allow_list": _nest(allow_counters),
        "profile_columns_missing": profile_columns_missing,
        "counters": dict(sorted(counters.items())),
        "elapsed_s_parse": round(time.perf_counter() - started, 3),
    }
    return rows, stats


def _nest(counters: Mapping[str, int]) -> dict:
    out: dict[str, dict] = defaultdict(dict)
    for key, value in sorted(counters.items()):
        _, study, name = key.split(".", 2)
        out[study][name] = int(value)
    return dict(out)


# --- pre-cleaned datasets -------------------------------------------------------------------

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
    frames = []
    for split_name, split in loaded.items():
        frame = split.to_pandas()
        frame["_source_split"] = split_name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


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
        slate = record["slate_items"]
        if isinstance(slate, str):
            try:
                slate = json.loads(slate)
            except json.JSONDecodeError:
                drops["row_malformed_slate_items"] += 1
                continue
        if hasattr(slate, "tolist"):
            slate = slate.tolist()
        if not isinstance(slate, list) or not slate:
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
            "_source_split": _SPLIT_ALIASES.get(str(record.get("split") or record["_source_split"]).lower()),
        })
    stats = {"source": "dataset", "input": path_or_name, "sessions_read": 0, "drops": dict(sorted(drops.items())),
             "allow_list": {}, "profile_columns_missing": {}, "counters": dict(sorted(counters.items()))}
    return rows, stats


# --- output -----------------------------------------------------------------------------------

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
    for column in ("current_video_duration_s", "current_watched_s", "current_total_s", "opinion_before", "opinion_after"):
        frame[column] = frame[column].astype("float64")
    split_leaks = frame.groupby("participant_id")["split"].nunique()
    if (split_leaks > 1).any():
        raise CleanConfigError(f"participants in two splits: {list(split_leaks[split_leaks > 1].index[:5])}")
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


def write_outputs(frame, stats: dict, out: str | Path, stats_path: str | Path) -> None:
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(stats_path, stats)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--capsule", help="capsule root or its data/ folder (CodeOcean 5416997 layout)")
    source.add_argument("--dataset", help="pre-cleaned dataset: parquet/json/csv file, a folder, or a hub name")
    parser.add_argument("--columns", default="{}",
                        help='JSON map {contract_column: dataset_column} for --dataset (e.g. \'{"gold_index": "answer"}\')')
    parser.add_argument("--out", required=True, help="interactions parquet to write")
    parser.add_argument("--stats", required=True, help="stats JSON to write")
    parser.add_argument("--config-json", default="{}", help="the `clean:` config section as JSON (overrides defaults)")


def _json_arg(text: str, name: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"grail-sim clean: {name} is not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise SystemExit(f"grail-sim clean: {name} must be a JSON object")
    return value


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        config = resolve_config(_json_arg(args.config_json, "--config-json"))
        if args.capsule is not None:
            if not args.capsule.strip():
                raise CapsuleError("--capsule is empty; set data.capsule_dir in config/config.yaml")
            rows, stats = clean_capsule(args.capsule, config)
        else:
            if not args.dataset.strip():
                raise CapsuleError("--dataset is empty; set data.dataset.path in config/config.yaml")
            rows, stats = clean_dataset(args.dataset, _json_arg(args.columns, "--columns"), config)
    except (CapsuleError, CleanConfigError) as err:
        raise SystemExit(f"grail-sim clean: {err}") from None
    if not rows:
        raise SystemExit(f"grail-sim clean: no rows survived cleaning; drops: {stats['drops']}")
    frame, stats = finalise(rows, stats, config)
    stats["elapsed_s"] = round(time.perf_counter() - started, 3)
    write_outputs(frame, stats, args.out, args.stats)
    log.info("wrote %d rows (%d participants) to %s; drops %s", stats["rows"], stats["participants"], args.out, stats["drops"])
    return 0
