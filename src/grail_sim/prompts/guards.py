"""Leak guards and input checks of the prompts stage: the interactions frame's columns and
values (`validate_frame`), the rendering of every option (`check_option_rendering`), and history
that never shows a video the session watched later (`check_future_history`, judged against the
session's order as its rows tell it, `_SessionOrder`).
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


class _SessionOrder:
    """What a session watched at each position, as its rows tell it.

    A row at step k says three things about its session: it watched `current_video_id` at
    position k, chose `gold_video_id` for position k + 1 and, when its history holds k items
    (the full history Contract 1 describes), watched `history[i]` at position i. Currents and
    golds are the rows' own subject, so where they name a position they decide it; a position
    no surviving row is about (its step was dropped by the clean stage) is known only from the
    histories of the session's other rows. Because the order comes from what the rows say, not
    from which rows survived, a re-watch of a video whose first step was dropped is still seen
    as a re-watch.
    """

    def __init__(self, steps: list[int], currents: list[str], golds: list[str], histories: list[list[str]]):
        self.anchors: dict[int, set[str]] = {}
        self.claims: dict[int, dict[int, str]] = {}  # position -> {row number: id its history puts there}
        for row, (step, current, gold, ids) in enumerate(zip(steps, currents, golds, histories)):
            self.anchors.setdefault(step, set()).add(current)
            self.anchors.setdefault(step + 1, set()).add(gold)
            if len(ids) == step:
                for position, vid in enumerate(ids):
                    if vid:
                        self.claims.setdefault(position, {})[row] = vid

    def at(self, position: int, reader: int) -> set[str]:
        """Ids watched at `position` by the evidence of every row but `reader`'s own history (a
        row's history cannot vouch for itself)."""
        anchored = self.anchors.get(position)
        if anchored:
            return anchored
        return {vid for row, vid in self.claims.get(position, {}).items() if row != reader}

    def positions(self) -> set[int]:
        return set(self.anchors) | set(self.claims)


def _future_videos(order: _SessionOrder, row: int, step: int, ids: list[str]) -> list[str]:
    """History items of the row at `step` that the session watched only after the current video.

    An item at index i of a full history stands at position i: when the session's other
    evidence names a different video there, the item is a leak if that video was watched later
    (at a position after `step`) and at no position up to `step`. A shorter history cannot be
    aligned to positions, so its items are checked only against earlier and later watches.
    The current video (position `step`) is not a leak: the prompt shows it anyway.
    """
    earlier: set[str] = set()
    later: set[str] = set()
    for position in order.positions():
        (earlier if position <= step else later).update(order.at(position, row))
    full = len(ids) == step
    leaked = []
    for index, vid in enumerate(ids):
        if not vid or vid in earlier or vid not in later:
            continue
        if full and not order.at(index, row):
            continue  # nothing else tells what was watched at its position: a re-watch, not a leak
        leaked.append(vid)
    return leaked


def check_future_history(frame) -> dict:
    """No history shows a video the session watched only after the row's own step.

    Contract 1 history is the chronological list of videos watched before the current one, so a
    row at step k holds at most k items, each watched before position k. Sessions re-watch videos
    and the clean stage drops steps, so "watched before" is judged against the session's order as
    all its rows tell it (`_SessionOrder`), never against the surviving rows alone.
    """
    violations: list[str] = []
    checked = 0
    for _, group in frame.groupby("session_id", sort=False):
        ordered = group.assign(_step=group["step_index"].astype(int)).sort_values("_step", kind="stable")
        steps = ordered["_step"].tolist()
        histories = [[str(item.get("id") or "") for item in history] for history in ordered["_history"]]
        order = _SessionOrder(steps, ordered["current_video_id"].astype(str).tolist(),
                              ordered["gold_video_id"].astype(str).tolist(), histories)
        for row, (row_id, step, ids) in enumerate(zip(ordered["row_id"], steps, histories)):
            checked += 1
            if len(ids) > step:
                violations.append(f"{row_id}: {len(ids)} history items before step {step}")
                continue
            leaked = _future_videos(order, row, step, ids)
            if leaked:
                violations.append(f"{row_id}: history holds later video(s) {leaked[:3]}")
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
