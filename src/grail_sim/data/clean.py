"""The clean stage's capsule path: the resolved `clean:` configuration, and the raw capsule ->
one row per (session, step) with every drop counted. (Pre-cleaned datasets: `dataset.py`; splits
and the output files: `contract.py`; the capsule's file readers: `capsule.py`.)

Output: Contract 1 of docs/DESIGN.md (`interactions.parquet`) and `stats.json` with every counter.
Rules that the earlier reference broke and this module enforces:
- the slate is the one displayed at that step (`displayOrders`), never extended with the clicked
  video; a step whose chosen video is not in its slate is dropped and counted;
- profiles hold allow-listed wave-1 columns only; a configured column that looks post-treatment
  is a configuration error;
- every dropped session, step or survey row is counted under a named reason.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from grail_sim.config import resolve_section
from grail_sim.data.capsule import (
    ParsedSession,
    ParsedStep,
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

log = logging.getLogger(__name__)


def resolve_config(section: Mapping | None = None, *, source: str = "configuration") -> dict:
    """The `clean:` section validated against the schema (its defaults filled), then the checks a
    schema cannot express: fractions that sum to 1 and profile columns that are pre-treatment only.

    A study given in `section` replaces that study's defaults as a whole, as in Snakemake's
    `validate`, so it must name every key (a missing one fails naming it).
    """
    config = resolve_section("clean", section, source=source)
    fractions = config["split_fractions"]
    if abs(sum(float(v) for v in fractions.values()) - 1) > 1e-9:
        raise CleanConfigError(f"clean.split_fractions must sum to 1; got {fractions}")
    patterns = [re.compile(p) for p in config["post_treatment_patterns"]]
    for study, spec in config["studies"].items():
        for column in spec.get("profile_columns", []):
            for pattern in patterns:
                if pattern.search(column):
                    raise CleanConfigError(
                        f"clean.studies.{study}.profile_columns: {column!r} matches post-treatment pattern "
                        f"{pattern.pattern!r}; profiles may hold pre-treatment (wave-1) columns only")
    return config


def slate_item(vid: str, meta: Mapping[str, VideoMeta]) -> dict:
    """One `slate_items` entry: every key present (None when unknown), so all rows share one shape."""
    entry = meta.get(vid)
    if entry is None:
        return {"id": vid, "title": None, "channel": None, "duration_s": None,
                "view_count": None, "like_count": None, "comment_count": None}
    return {"id": vid, "title": entry.title or None, "channel": entry.channel or None,
            "duration_s": _json_number(entry.duration_s), "view_count": _json_number(entry.view_count),
            "like_count": _json_number(entry.like_count), "comment_count": _json_number(entry.comment_count)}


def _json_number(value: float) -> float | None:
    # JSON has no NaN: an unknown number is null.
    return None if value is None or math.isnan(value) else float(value)


def _opinion(row: Mapping, column: str | None, higher_is_conservative: bool) -> float:
    """The survey index on one scale for every study: higher = more conservative (NaN when missing)."""
    if not column or column not in row:
        return math.nan
    value = to_float(row[column])
    return value if math.isnan(value) or higher_is_conservative else 1.0 - value


@dataclass
class _AllowLists:
    """Every study's allow-list, keyed the way sessions are looked up: by issue, then join value."""

    allowed: dict[str, dict[str, tuple[str, dict]]] = field(default_factory=lambda: defaultdict(dict))
    surveyed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # every join value per issue
    ambiguous: set[tuple[str, str]] = field(default_factory=set)  # (issue, urlid) allowed in two studies
    counters: Counter = field(default_factory=Counter)
    profile_columns_missing: dict[str, list[str]] = field(default_factory=dict)


def _read_allow_lists(survey_root: Path, studies: Mapping[str, Mapping]) -> _AllowLists:
    lists = _AllowLists()
    for study, spec in studies.items():
        issue = STUDIES[study]
        frame, join_values = allowed_survey_rows(survey_root, study, spec, lists.counters)
        lists.surveyed[issue] |= join_values
        absent = [c for c in spec.get("profile_columns", []) if c not in frame.columns]
        if absent:
            lists.profile_columns_missing[study] = absent
            log.warning("%s: profile column(s) not in the survey: %s", study, ", ".join(absent))
        join = spec.get("session_join_key", "urlid")
        for row in frame.to_dict("records"):
            urlid = str(row[join]).strip()
            if is_missing(urlid):
                lists.counters[f"allow_list.{study}.missing_join_key"] += 1
                continue
            if urlid in lists.allowed[issue]:
                # Two studies' rows claim the same session: which participant it was is unknowable.
                lists.ambiguous.add((issue, urlid))
            lists.allowed[issue][urlid] = (study, row)
    log.info("allow-lists: %s", {s: lists.counters[f"allow_list.{s}.allowed_participants"] for s in studies})
    return lists


def _match_session(session: ParsedSession, lists: _AllowLists) -> tuple[str, str, dict] | str:
    """(issue, study, survey row) of an allow-listed session, else the drop reason to count."""
    issue = issue_from_topic(session.topic)
    if issue is None:
        return "session_unknown_topic"
    if not session.urlid:
        return "session_missing_urlid"
    if (issue, session.urlid) in lists.ambiguous:
        return "session_ambiguous_urlid"
    match = lists.allowed[issue].get(session.urlid)
    if match is not None:
        return (issue, *match)
    # Tell the three causes apart: each points at a different fault (filters, topic, logs).
    if session.urlid in lists.surveyed[issue]:
        return "session_filtered_by_allow_list"
    if any(session.urlid in values for other, values in lists.surveyed.items() if other != issue):
        return "session_topic_disagrees_with_survey"
    return "session_not_in_surveys"


def _participant_fields(issue: str, study: str, survey_row: Mapping, spec: Mapping) -> dict:
    """The columns every row of one participant's session shares."""
    profile = {c: str(survey_row[c]).strip() for c in spec.get("profile_columns", [])
               if c in survey_row and not is_missing(survey_row[c])}
    higher = bool(spec.get("higher_is_conservative", True))
    return {
        "participant_id": participant_hash(study, str(survey_row["_key"])),
        "issue": issue,
        "participant_study": study,
        "treatment_arm": str(survey_row["treatment_arm"]).strip(),
        "profile": json.dumps(profile, ensure_ascii=False, sort_keys=True),
        "opinion_before": _opinion(survey_row, spec.get("opinion_before"), higher),
        "opinion_after": _opinion(survey_row, spec.get("opinion_after"), higher),
    }


def _step_slate(step: ParsedStep, tree_recs: Mapping[str, list[str]]) -> tuple[list[str] | None, str]:
    """The slate shown at a step and its source: the logged one, else the tree row of the current video."""
    if step.slate is not None:
        return step.slate, "displayed"
    if step.current_id in tree_recs:
        return tree_recs[step.current_id], "tree"
    return None, ""


@dataclass
class _Videos:
    """The capsule's video metadata and recommendation rows, and the ids seen without metadata."""

    meta: dict[str, VideoMeta]
    tree_recs: dict[str, list[str]]
    unknown: set[str] = field(default_factory=set)


def _session_rows(session: ParsedSession, fields: Mapping, videos: _Videos, drops: Counter) -> list[dict]:
    """The usable steps of one allow-listed session as Contract 1 rows (without `split`)."""
    meta = videos.meta
    history: list[dict] = []
    rows: list[dict] = []
    for step in session.steps:
        slate, source = _step_slate(step, videos.tree_recs)
        position = step.step_index
        current_meta = meta.get(step.current_id)
        if current_meta is None:
            videos.unknown.add(step.current_id)
        if slate is None:
            drops["step_no_slate"] += 1
        elif not slate:
            drops["step_empty_slate"] += 1
        elif step.gold_id not in slate:
            drops["step_gold_not_in_slate"] += 1
        else:
            videos.unknown.update(v for v in slate if v not in meta)
            rows.append(_row(session, step, fields, current_meta, history, slate, source, meta))
        # A dropped step still happened: later steps see it in their history.
        history = history + [{
            "id": step.current_id,
            "title": current_meta.title if current_meta else None,
            "channel": current_meta.channel if current_meta else None,
            "watched_s": _json_number(session.watched_s[position]),
            "total_s": _json_number(session.total_s[position]),
        }]
    return rows


def _row(session: ParsedSession, step: ParsedStep, fields: Mapping, current_meta: VideoMeta | None,
         history: list[dict], slate: list[str], source: str, meta: Mapping[str, VideoMeta]) -> dict:
    position = step.step_index
    return {
        "row_id": f"{session.session_id}:{position}",
        "session_id": session.session_id,
        "session_start_s": session.started_s,
        "participant_id": fields["participant_id"],
        "issue": fields["issue"],
        "participant_study": fields["participant_study"],
        "treatment_arm": fields["treatment_arm"],
        "step_index": position,
        "current_video_id": step.current_id,
        "current_video_title": current_meta.title if current_meta else "",
        "current_video_channel": current_meta.channel if current_meta else "",
        "current_video_duration_s": current_meta.duration_s if current_meta else math.nan,
        # Only videos before the current one: the future of the session never leaks in.
        "history": json.dumps(history, ensure_ascii=False),
        "current_watched_s": session.watched_s[position],
        "current_total_s": session.total_s[position],
        "slate_items": json.dumps([slate_item(v, meta) for v in slate], ensure_ascii=False),
        "slate_source": source,
        "n_options": len(slate),
        "gold_video_id": step.gold_id,
        "gold_index": slate.index(step.gold_id) + 1,
        "profile": fields["profile"],
        "opinion_before": fields["opinion_before"],
        "opinion_after": fields["opinion_after"],
    }


def _read_videos(data_dir: Path, counters: Counter) -> tuple[_Videos, list]:
    meta, tree_recs = load_trees(data_dir, counters)
    sessions_path = data_dir / "platform session data" / "sessions.json"
    raw_sessions = load_sessions(sessions_path)
    counters["sessions_read"] = len(raw_sessions)
    log.info("read %d sessions from %s, metadata for %d videos", len(raw_sessions), sessions_path, len(meta))
    return _Videos(meta, tree_recs), raw_sessions


def clean_capsule(capsule: str | Path, config: Mapping | None = None) -> tuple[list[dict], dict]:
    """Rows (Contract 1, without `split`) and the stats of one capsule."""
    config = resolve_config(config)
    started = time.perf_counter()
    root = Path(capsule)
    data_dir = find_data_dir(root)
    lists = _read_allow_lists(find_survey_root(root), config["studies"])
    counters: Counter = Counter()
    videos, raw_sessions = _read_videos(data_dir, counters)
    drops: Counter = Counter()
    rows, sessions_by_participant = _clean_sessions(raw_sessions, lists, videos, config, counters, drops)
    counters["sessions_kept"] = sum(sessions_by_participant.values())
    counters["participants_with_several_sessions"] = sum(1 for n in sessions_by_participant.values() if n > 1)
    counters["videos_without_metadata"] = len(videos.unknown)
    stats = {
        "source": "capsule",
        "input": str(root),
        "sessions_read": counters["sessions_read"],
        "drops": dict(sorted(drops.items())),
        "allow_list": _nest(lists.counters),
        "profile_columns_missing": lists.profile_columns_missing,
        "counters": dict(sorted(counters.items())),
        "elapsed_s_parse": round(time.perf_counter() - started, 3),
    }
    return rows, stats


def _clean_sessions(raw_sessions: list, lists: _AllowLists, videos: _Videos, config: Mapping,
                    counters: Counter, drops: Counter) -> tuple[list[dict], Counter]:
    """Rows of every kept session, and the number of kept sessions per participant."""
    rows: list[dict] = []
    seen_sessions: set[str] = set()
    sessions_by_participant: Counter = Counter()
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
        match = _match_session(session, lists)
        if isinstance(match, str):
            drops[match] += 1
            continue
        issue, study, survey_row = match
        fields = _participant_fields(issue, study, survey_row, config["studies"][study])
        session_rows = _session_rows(session, fields, videos, drops)
        if len(session_rows) < min_steps:
            drops["session_too_few_usable_steps"] += 1
            drops["step_in_dropped_session"] += len(session_rows)
            continue
        rows.extend(session_rows)
        sessions_by_participant[fields["participant_id"]] += 1
    return rows, sessions_by_participant
