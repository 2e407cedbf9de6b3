"""Leak guards and input checks of the prompts stage: the interactions frame's columns, the
rendering of every option, and history that never shows a future video.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from grail_sim.errors import PromptError
from grail_sim.prompts.render import (
    SECTION_OPTIONS,
    UNKNOWN_CHANNEL,
    UNKNOWN_LENGTH,
    _as_list,
)
from grail_sim.rows import SPLITS

# Contract 1 columns this stage reads (docs/DESIGN.md).
REQUIRED_COLUMNS = (
    "row_id", "session_id", "participant_id", "issue", "participant_study", "treatment_arm",
    "step_index", "current_video_id", "current_video_title", "current_video_channel",
    "current_video_duration_s", "history", "slate_items", "slate_source", "n_options",
    "gold_video_id", "gold_index", "profile", "opinion_before", "opinion_after", "split",
)


_OPTION_LINE = re.compile(r"^(\d+)\. (.+) \(channel: (.+); length: ([^;()]+)\)$")


def option_lines(user_text: str) -> list[str]:
    _, _, tail = user_text.partition(f"\n{SECTION_OPTIONS}\n")
    return tail.splitlines() if tail else []


def check_option_rendering(rows: Iterable[Mapping[str, Any]]) -> dict:
    """Every option line has the same fields, and the gold's missing metadata rate matches the others'.

    The earlier reference appended the clicked video without metadata: the gold was the only option
    lacking channel and length. This guard reads the rendered text, not the input table.
    """
    checked = violations = 0
    missing = {"gold": [0, 0], "other": [0, 0]}  # [options with a placeholder, options]
    examples: list[str] = []
    for row in rows:
        lines = option_lines(row["prompt"][-1]["content"])
        checked += 1
        if len(lines) != row["n_options"]:
            violations += 1
            examples.append(f"{row['id']}: {len(lines)} option lines for n_options={row['n_options']}")
            continue
        for number, line in enumerate(lines, start=1):
            match = _OPTION_LINE.match(line)
            if not match or int(match.group(1)) != number:
                violations += 1
                examples.append(f"{row['id']}: option {number} rendered differently: {line[:80]!r}")
                continue
            label, channel, length = match.group(2), match.group(3), match.group(4)
            placeholder = label.startswith("video ") or channel == UNKNOWN_CHANNEL or length == UNKNOWN_LENGTH
            kind = "gold" if number == row["gold_index"] else "other"
            missing[kind][0] += int(placeholder)
            missing[kind][1] += 1
    rates = {k: (v[0] / v[1] if v[1] else 0.0) for k, v in missing.items()}
    return {
        "rows_checked": checked, "violations": violations, "examples": examples[:5],
        "gold_missing_metadata_rate": rates["gold"], "other_missing_metadata_rate": rates["other"],
        "missing_metadata_gap": rates["gold"] - rates["other"],
    }


def check_future_history(frame) -> dict:
    """No history holds a video first watched at or after the row's own step (Contract 1 history is
    the chronological list of videos watched before the current one)."""
    violations: list[str] = []
    checked = 0
    for session_id, group in frame.groupby("session_id", sort=False):
        ordered = group.sort_values("step_index")
        steps = ordered["step_index"].astype(int).tolist()
        currents = ordered["current_video_id"].astype(str).tolist()
        golds = ordered["gold_video_id"].astype(str).tolist()
        histories = ordered["_history"].tolist()
        for k, (step, history) in enumerate(zip(steps, histories)):
            checked += 1
            ids = [str(item.get("id") or "") for item in history]
            if len(ids) > step:
                violations.append(f"{ordered['row_id'].iloc[k]}: {len(ids)} history items before step {step}")
                continue
            past = set(currents[:k]) | set(golds[:k]) | {i for h in histories[:k] for i in (str(x.get("id") or "") for x in h)}
            future = (set(currents[k + 1:]) | set(golds[k:])) - past - {currents[k]}
            leaked = [vid for vid in ids if vid and vid in future]
            if leaked:
                violations.append(f"{ordered['row_id'].iloc[k]}: history holds later video(s) {leaked[:3]}")
    return {"rows_checked": checked, "violations": len(violations), "examples": violations[:5]}


def validate_frame(frame, issue: str, source: str = "interactions"):
    """Check Contract 1 columns and values; return the issue's rows with parsed JSON columns."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise PromptError(f"{source}: missing column(s) {missing} (Contract 1 in docs/DESIGN.md)")
    issues_present = set(frame["issue"].astype(str))
    unknown = sorted(i for i in issues_present if i not in ("gun_control", "minimum_wage"))
    if unknown:
        raise PromptError(f"{source}: column 'issue' holds unknown issue name(s) {unknown}")
    splits_present = set(frame["split"].astype(str))
    bad_splits = sorted(splits_present - set(SPLITS))
    if bad_splits:
        bad_row = frame.loc[frame["split"].astype(str).isin(bad_splits), "row_id"].iloc[0]
        raise PromptError(f"{source}: column 'split' holds {bad_splits} (row {bad_row}); valid: {list(SPLITS)}")
    rows = frame.loc[frame["issue"].astype(str) == issue].copy()
    if rows.empty:
        raise PromptError(f"{source}: no rows for issue {issue!r} (issues present: {sorted(issues_present)})")
    duplicated = rows["row_id"][rows["row_id"].duplicated()]
    if not duplicated.empty:
        raise PromptError(f"{source}: duplicate row_id {duplicated.iloc[0]!r}")
    rows["_history"] = [_as_list(v, "history", rid) for v, rid in zip(rows["history"], rows["row_id"])]
    return rows
