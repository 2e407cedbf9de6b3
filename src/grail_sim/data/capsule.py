"""Readers for the CodeOcean capsule 5416997 layout: sessions, recommendation trees, surveys.

Kept apart from `clean.py` so the session parser can be property-tested on its own. Nothing here
drops a record silently: every function that discards something increments a named counter.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from grail_sim.errors import CapsuleError

_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_RECS_KEY = re.compile(r"([0-9]+)-recs")
_STEP_KEY = re.compile(r"step[_-]?([0-9]+)", re.IGNORECASE)
_ISO_DURATION = re.compile(r"P(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?")
MISSING_STRINGS = frozenset({"", "na", "n/a", "nan", "none", "null"})




def canonical_video_id(raw: Any) -> str | None:
    """The 11-character YouTube id at the start of a logged id (`abcdefghijk&t=3s` -> `abcdefghijk`)."""
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    return raw[:11] if _VIDEO_ID.match(raw) else None


def display_order_step(key: Any) -> int | None:
    """0-based step index a `displayOrders` key denotes, or None for an unrecognised key.

    `"N-recs"`, `N` and `"N"` name the slate from which the N-th video of `vids` (1-based) was
    chosen, so step i (choosing vids[i + 1]) is N = i + 2. `"stepN"` names step N directly.
    """
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        number = key
    elif isinstance(key, str):
        text = key.strip()
        if (match := _STEP_KEY.fullmatch(text)) is not None:
            return int(match.group(1))
        if (match := _RECS_KEY.fullmatch(text)) is not None:
            number = int(match.group(1))
        elif text.isascii() and text.isdigit():  # not "¹", which isdigit() accepts and int() rejects
            number = int(text)
        else:
            return None
    else:
        return None
    return number - 2 if number >= 2 else None


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_STRINGS


def to_float(value: Any) -> float:
    """A number or NaN (never raises: survey exports mix numbers, blanks and `NA`)."""
    if is_missing(value) or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def duration_seconds(value: Any) -> float:
    """Seconds from a number or an ISO-8601 duration (`PT4M13S`), NaN when neither."""
    number = to_float(value)
    if not math.isnan(number):
        return number
    if isinstance(value, str) and (match := _ISO_DURATION.fullmatch(value.strip())) and any(match.groups()):
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return math.nan


@dataclass
class ParsedStep:
    step_index: int
    current_id: str
    gold_id: str
    slate: list[str] | None  # displayed slate (canonical ids), None when none was logged


@dataclass
class ParsedSession:
    session_id: str
    urlid: str
    topic: str
    vids: list[str]
    steps: list[ParsedStep]
    watched_s: list[float]
    total_s: list[float]
    started_s: float = math.nan  # the session's start (epoch seconds, from startTime in ms); NaN when unknown
    counters: Counter = field(default_factory=Counter)


class SessionDrop(Exception):
    """A session that cannot yield rows; `reason` is the stats counter it increments."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _times_seconds(value: Any, raw_vids: list[str], vids: list[str], name: str, counters: Counter) -> list[float]:
    """Per-position seconds from ms values given as a dict keyed by video id or a list aligned with vids."""
    if value is None:
        return [math.nan] * len(vids)
    if isinstance(value, list):
        if len(value) != len(vids):
            counters[f"{name}_length_mismatch"] += 1
        return [to_float(value[k]) / 1000 if k < len(value) else math.nan for k in range(len(vids))]
    if isinstance(value, Mapping):
        out = []
        for raw, vid in zip(raw_vids, vids):
            found = value.get(raw, value.get(vid))
            out.append(to_float(found) / 1000)
        return out
    counters[f"{name}_unreadable"] += 1
    return [math.nan] * len(vids)


def parse_session(obj: Any) -> ParsedSession:
    """One element of sessions.json -> steps; raises SessionDrop with a counter name."""
    if not isinstance(obj, Mapping):
        raise SessionDrop("session_not_an_object", type(obj).__name__)
    session_id = obj.get("sessionID")
    if is_missing(session_id):
        raise SessionDrop("session_missing_id")
    session_id = str(session_id).strip()
    raw_vids = obj.get("vids")
    if not isinstance(raw_vids, list):
        raise SessionDrop("session_missing_vids", session_id)
    vids = [canonical_video_id(v) for v in raw_vids]
    if any(v is None for v in vids):
        raise SessionDrop("session_invalid_video_id", f"{session_id}: {raw_vids[vids.index(None)]!r}")
    if len(vids) < 2:
        raise SessionDrop("session_too_short", session_id)
    counters: Counter = Counter()
    slates: dict[int, list[str]] = {}
    orders = obj.get("displayOrders") or {}
    if not isinstance(orders, Mapping):
        raise SessionDrop("session_malformed_display_orders", session_id)
    for key, value in orders.items():
        step = display_order_step(key)
        if step is None or step >= len(vids) - 1:
            counters["display_order_keys_unused"] += 1
            continue
        if not isinstance(value, list):
            raise SessionDrop("session_malformed_display_orders", f"{session_id}: key {key!r}")
        slate: list[str] = []
        for item in value:
            vid = canonical_video_id(item.get("id") if isinstance(item, Mapping) else item)
            if vid is None:
                counters["slate_items_invalid_id"] += 1
            elif vid in slate:
                counters["slate_items_duplicate"] += 1
            else:
                slate.append(vid)
        if step in slates and slates[step] != slate:
            raise SessionDrop("session_conflicting_display_orders", f"{session_id}: key {key!r}")
        slates[step] = slate
    steps = [ParsedStep(i, vids[i], vids[i + 1], slates.get(i)) for i in range(len(vids) - 1)]
    urlid = obj.get("urlid")
    return ParsedSession(
        session_id=session_id,
        urlid="" if is_missing(urlid) else str(urlid).strip(),
        topic="" if is_missing(obj.get("topicId")) else str(obj.get("topicId")),
        vids=vids,
        steps=steps,
        watched_s=_times_seconds(obj.get("vidWatchTimes"), raw_vids, vids, "watch_times", counters),
        total_s=_times_seconds(obj.get("vidTotalLengths"), raw_vids, vids, "total_lengths", counters),
        started_s=to_float(obj.get("startTime")) / 1000,
        counters=counters,
    )


def issue_from_topic(topic: str) -> str | None:
    """`topicId` is free text in the real logs: the issue is whichever of "gun"/"wage" it names."""
    text = topic.lower()
    is_gun, is_wage = "gun" in text, "wage" in text
    if is_gun == is_wage:
        return None
    return "gun_control" if is_gun else "minimum_wage"


def load_sessions(path: Path) -> list:
    if not path.is_file():
        raise CapsuleError(f"sessions file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise CapsuleError(f"{path}: malformed JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, list):
        raise CapsuleError(f"{path}: expected a JSON array of session objects, got {type(data).__name__}")
    return data


# --- video metadata -------------------------------------------------------------------------

@dataclass
class VideoMeta:
    title: str = ""
    channel: str = ""
    duration_s: float = math.nan
    view_count: float = math.nan
    like_count: float = math.nan
    comment_count: float = math.nan


_TREE_REQUIRED = ("originId", "originTitle", "originChannel", "originDuration")
_TREE_COUNTS = {"view_count": "originViewCount", "like_count": "originLikeCount", "comment_count": "originCommentCount"}
_SUPPLEMENTAL_ID = ("originId", "videoId", "video_id", "id")
_SUPPLEMENTAL_FIELDS = {"title": ("title", "originTitle", "videoTitle"),
                        "channel": ("channelTitle", "channel", "originChannel"),
                        "duration_s": ("duration", "originDuration", "duration_s")}


def _read_csv(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise CapsuleError(f"{path}: malformed CSV ({str(err).splitlines()[0]})") from None


def load_trees(data_dir: Path, counters: Counter) -> tuple[dict[str, VideoMeta], dict[str, list[str]]]:
    """Video metadata and each origin video's recommendation row from `recommendation trees/`."""
    folder = data_dir / "recommendation trees"
    if not folder.is_dir():
        raise CapsuleError(f"recommendation trees folder not found: {folder}")
    meta: dict[str, VideoMeta] = {}
    recs: dict[str, list[str]] = {}
    files = sorted(folder.glob("trees_*/*.csv"))
    if not files:
        raise CapsuleError(f"{folder}: no trees_gun/*.csv or trees_wage/*.csv files")
    for path in files:
        frame = _read_csv(path)
        missing = [c for c in _TREE_REQUIRED if c not in frame.columns]
        if missing:
            raise CapsuleError(f"{path}: missing column(s) {', '.join(missing)}")
        rec_columns = sorted((c for c in frame.columns if re.fullmatch(r"rec\d+", c)), key=lambda c: int(c[3:]))
        for row in frame.itertuples(index=False):
            row = row._asdict()
            vid = canonical_video_id(row["originId"])
            if vid is None:
                counters["tree_rows_invalid_origin_id"] += 1
                continue
            if vid not in meta:
                meta[vid] = VideoMeta(
                    title=row["originTitle"].strip(), channel=row["originChannel"].strip(),
                    duration_s=duration_seconds(row["originDuration"]),
                    **{key: to_float(row.get(col)) for key, col in _TREE_COUNTS.items()})
            row_recs = [canonical_video_id(row[c]) for c in rec_columns]
            if vid not in recs:
                recs[vid] = list(dict.fromkeys(r for r in row_recs if r))
        counters["tree_files"] += 1
    supplemental = data_dir / "supplemental" / "metadata and ratings"
    for path in sorted(supplemental.glob("*.csv")) if supplemental.is_dir() else []:
        frame = _read_csv(path)
        id_column = next((c for c in _SUPPLEMENTAL_ID if c in frame.columns), None)
        if id_column is None:
            raise CapsuleError(f"{path}: no video id column (one of {', '.join(_SUPPLEMENTAL_ID)})")
        columns = {key: next((c for c in names if c in frame.columns), None) for key, names in _SUPPLEMENTAL_FIELDS.items()}
        for row in frame.to_dict("records"):
            vid = canonical_video_id(row[id_column])
            if vid is None:
                continue
            entry = meta.setdefault(vid, VideoMeta())
            if not entry.title and columns["title"]:
                entry.title = row[columns["title"]].strip()
            if not entry.channel and columns["channel"]:
                entry.channel = row[columns["channel"]].strip()
            if math.isnan(entry.duration_s) and columns["duration_s"]:
                entry.duration_s = duration_seconds(row[columns["duration_s"]])
        counters["supplemental_metadata_files"] += 1
    return meta, recs


# --- surveys and the participant allow-lists ------------------------------------------------

def find_survey_root(root: Path) -> Path:
    """The `intermediate data` folder, wherever the capsule keeps it relative to `root` or `root/data`."""
    candidates = [root / "results" / "intermediate data", root / "intermediate data"]
    if root.name == "data":
        candidates += [root.parent / "results" / "intermediate data", root.parent / "intermediate data"]
    else:
        candidates += [root / "data" / "results" / "intermediate data", root / "data" / "intermediate data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise CapsuleError("survey folder not found; looked for: " + ", ".join(str(c) for c in candidates))


def find_data_dir(root: Path) -> Path:
    if not root.is_dir():
        raise CapsuleError(f"capsule folder not found: {root}")
    if (root / "platform session data").is_dir():
        return root
    if (root / "data" / "platform session data").is_dir():
        return root / "data"
    raise CapsuleError(f"{root}: neither it nor its data/ folder holds 'platform session data/'")


def _require(frame, columns: Iterable[str], path: Path, what: str) -> None:
    missing = [c for c in columns if c and c not in frame.columns]
    if missing:
        raise CapsuleError(f"{path}: missing column(s) {', '.join(missing)} ({what})")


def _missing(series):
    # astype(bool): `map` on an empty frame's column returns object dtype, whose sum is "".
    return series.map(is_missing).astype(bool)


def _nonmissing(series):
    return ~_missing(series)


def allowed_survey_rows(survey_root: Path, study: str, spec: Mapping[str, Any], counters: Counter):
    """The published allow-list of one study: (allowed survey rows, every join value in the survey).

    The frame holds string columns, one row per participant; the set lets the caller tell a
    session filtered out by the allow-list from one whose join key no survey row has.

    Filters, each counted under `allow_list.<study>.<filter>`: attention checks, minimum survey
    time and pre-study index range (on the wave-1 screener when the study has one, else on the
    survey), control arm, missing `pro`/`anti`, then the earliest row per participant key.
    """
    prefix = f"allow_list.{study}"
    survey, all_join_values = _read_survey(survey_root, study, spec, counters, prefix)
    checked, checked_path = _screener(survey_root, study, spec, survey)
    passed = _quality_checks(checked, checked_path, study, spec, counters, prefix)
    survey = _keep_passed(survey, checked, passed, counters, prefix)
    survey = _keep_treated_with_seeds(survey, counters, prefix)
    survey = _earliest_row_per_participant(survey, spec.get("order_column"), counters, prefix)
    counters[f"{prefix}.allowed_participants"] = len(survey)
    return survey.reset_index(drop=True), all_join_values


def _read_survey(survey_root: Path, study: str, spec: Mapping[str, Any], counters: Counter, prefix: str):
    """The study's survey with a stripped `_key` column, rows without a participant key dropped."""
    survey_path = survey_root / spec["survey"]
    if not survey_path.is_file():
        raise CapsuleError(f"{study}: survey file not found: {survey_path}")
    survey = _read_csv(survey_path)
    key = spec["participant_key"]
    join = spec.get("session_join_key", "urlid")
    _require(survey, [key, join, "treatment_arm", "pro", "anti"], survey_path, f"clean.studies.{study}")
    counters[f"{prefix}.survey_rows"] = len(survey)
    all_join_values = {v.strip() for v in survey[join] if not is_missing(v)}
    survey = survey.assign(_key=survey[key].str.strip())
    blank = _missing(survey["_key"])
    counters[f"{prefix}.missing_participant_key"] = int(blank.sum())
    return survey[~blank], all_join_values


def _screener(survey_root: Path, study: str, spec: Mapping[str, Any], survey):
    """The frame the quality checks run on, and its path: the wave-1 screener, else the survey itself."""
    if not spec.get("screener"):
        return survey, survey_root / spec["survey"]
    key = spec["participant_key"]
    checked_path = survey_root / spec["screener"]
    if not checked_path.is_file():
        raise CapsuleError(f"{study}: wave-1 screener file not found: {checked_path}")
    checked = _read_csv(checked_path)
    _require(checked, [key], checked_path, f"clean.studies.{study}.participant_key")
    return checked.assign(_key=checked[key].str.strip()), checked_path


def _quality_checks(checked, checked_path: Path, study: str, spec: Mapping[str, Any], counters: Counter, prefix: str):
    """Which rows pass the attention checks, minimum survey time and pre-study index range.

    Each counter holds the rows that pass every earlier check and fail this one, so the counters
    add up to the rows removed.
    """
    import pandas as pd

    passed = pd.Series(True, index=checked.index)
    for column, expected in (spec.get("attention_checks") or {}).items():
        _require(checked, [column], checked_path, f"clean.studies.{study}.attention_checks")
        ok = checked[column].str.strip() == expected
        counters[f"{prefix}.failed_{column}"] = int((passed & ~ok).sum())
        passed &= ok
    if spec.get("min_survey_time_s") is not None:
        _require(checked, ["survey_time"], checked_path, f"clean.studies.{study}.min_survey_time_s")
        ok = pd.to_numeric(checked["survey_time"], errors="coerce") >= spec["min_survey_time_s"]
        counters[f"{prefix}.survey_time_too_short"] = int((passed & ~ok).sum())
        passed &= ok
    if spec.get("opinion_range") is not None:
        column = spec["opinion_before"]
        _require(checked, [column], checked_path, f"clean.studies.{study}.opinion_before")
        low, high = spec["opinion_range"]
        ok = pd.to_numeric(checked[column], errors="coerce").between(low, high, inclusive="both")
        counters[f"{prefix}.opinion_out_of_range"] = int((passed & ~ok).sum())
        passed &= ok
    return passed


def _keep_passed(survey, checked, passed, counters: Counter, prefix: str):
    """The survey rows whose participant passed the checks (on the survey, or on the screener by key)."""
    if checked is survey:
        return survey[passed]
    keep = set(checked.loc[passed, "_key"])
    in_screener = survey["_key"].isin(keep)
    counters[f"{prefix}.failed_screener"] = int((~in_screener).sum())
    survey = survey[in_screener]
    # Wave-1 answers missing from the main survey are taken from the screener (the pre-study
    # columns are identical in both exports where both have them).
    extra = [c for c in checked.columns if c not in survey.columns and c != "_key"]
    if extra:
        first = checked[passed].drop_duplicates("_key")[["_key", *extra]]
        survey = survey.merge(first, on="_key", how="left")
        survey[extra] = survey[extra].fillna("")
    return survey


def _keep_treated_with_seeds(survey, counters: Counter, prefix: str):
    """Drop the control arm, rows without an arm, and rows without both seed videos (`pro`, `anti`)."""
    arm = survey["treatment_arm"].str.strip()
    control = arm.str.lower().eq("control")
    counters[f"{prefix}.control_arm"] = int(control.sum())
    survey = survey[~control]
    no_arm = _missing(survey["treatment_arm"])
    counters[f"{prefix}.missing_treatment_arm"] = int(no_arm.sum())
    survey = survey[~no_arm]
    seeds_ok = _nonmissing(survey["pro"]) & _nonmissing(survey["anti"])
    counters[f"{prefix}.missing_pro_or_anti"] = int((~seeds_ok).sum())
    return survey[seeds_ok]


def _earliest_row_per_participant(survey, order_column: str | None, counters: Counter, prefix: str):
    """One row per participant key: the earliest by `order_column` (a retake must not replace the first)."""
    import pandas as pd

    if order_column and order_column in survey.columns:
        order = pd.to_datetime(survey[order_column], errors="coerce", utc=True)
        # mergesort is stable: rows with the same (or no) time keep their file order.
        survey = survey.assign(_order=order).sort_values(["_order"], kind="mergesort", na_position="last")
    before = len(survey)
    survey = survey.drop_duplicates("_key", keep="first")
    counters[f"{prefix}.duplicate_participant_rows"] = before - len(survey)
    return survey.drop(columns=[c for c in ("_order",) if c in survey.columns])
