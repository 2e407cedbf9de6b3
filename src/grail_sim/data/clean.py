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

import copy
import json
import logging
import math
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping

from grail_sim.data.capsule import (
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
from grail_sim.data.contract import _nest, participant_hash
from grail_sim.errors import CleanConfigError
from grail_sim.issues import STUDIES
from grail_sim.rows import SPLITS

log = logging.getLogger(__name__)


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
