"""Prompts-stage defects, each pinned by a test: the opinion task's last step (by the order the
rows carry, never the text of ids) and the future-history leak guard (judged against the
session's own order, so re-watches after a dropped step pass and planted future videos fail)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from grail_sim.errors import PromptError
from grail_sim.prompts import build as prompts_build
from grail_sim.prompts import guards as prompts_guards
from grail_sim.prompts import settings as prompts_settings

SPLITS = ("train", "validation", "test")


def word_counter(batch):
    """A real, cheap token count (whitespace words of every message)."""
    return [sum(len(m["content"].split()) for m in messages) for messages in batch]


@pytest.fixture(scope="module")
def settings():
    return prompts_settings.load_settings()


def item(vid: str) -> dict:
    return {"id": vid, "title": f"Title of {vid}", "channel": "Channel", "duration_s": 90.0,
            "view_count": 1, "like_count": 1, "comment_count": None}


def session(session_id: str, participant: str, vids: list[str], steps: list[int], *, split="train",
            after=0.5) -> list[dict]:
    """Contract-1 rows of one session that watched `vids` in order; only `steps` survive cleaning
    (the others were dropped), yet every row's history holds all videos before its step, as the
    clean stage writes it."""
    rows = []
    for step in steps:
        current, gold = vids[step], vids[step + 1]
        slate = [item(gold), item(f"decoy{session_id}{step}")]
        rows.append({
            "row_id": f"{session_id}:{step}", "session_id": session_id, "participant_id": participant,
            "issue": "gun_control", "participant_study": "study1", "treatment_arm": "pro_31",
            "step_index": step, "current_video_id": current, "current_video_title": f"Title of {current}",
            "current_video_channel": "Channel", "current_video_duration_s": 90.0,
            "history": json.dumps([{"id": v, "title": f"Title of {v}", "channel": "Channel", "watched_s": 30.0,
                                    "total_s": 90.0} for v in vids[:step]]),
            "current_watched_s": 30.0, "current_total_s": 90.0, "slate_items": json.dumps(slate),
            "slate_source": "displayed", "n_options": 2, "gold_video_id": gold, "gold_index": 1,
            "profile": json.dumps({"age": "40"}), "opinion_before": 0.4, "opinion_after": after, "split": split,
        })
    return rows


def filler() -> list[dict]:
    """One ordinary participant per split, so a build has every split."""
    rows = []
    for number, split in enumerate(SPLITS):
        vids = [f"fill{number}v{k}" for k in range(4)]
        rows += session(f"fill{number}", f"p-fill{number}", vids, [0, 1, 2], split=split)
    return rows


def frame_of(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["_history"] = [json.loads(h) for h in frame["history"]]  # as validate_frame parses it
    return frame


# The viewer of ssFKbP6GGEHv in the 8,000-participant demo capsule (seed 13): X first watched at
# step 0, re-watched at step 3; the clean stage dropped the step-0 row (its gold was off the slate).
REWATCH = ["X", "a", "b", "X", "c", "d"]


def set_history(rows: list[dict], row_id: str, ids: list[str]) -> None:
    row = next(r for r in rows if r["row_id"] == row_id)
    row["history"] = json.dumps([{"id": v, "title": f"Title of {v}", "channel": "Channel"} for v in ids])


# ------------------------------------------------------------------------------ future history


def test_rewatch_after_a_dropped_step_is_not_a_future_video():
    rows = session("s", "p1", REWATCH, [1, 2, 3, 4])
    result = prompts_guards.check_future_history(frame_of(rows))
    assert result["violations"] == 0, result["examples"]
    assert result["rows_checked"] == 4


def test_rewatch_after_a_dropped_step_builds(settings):
    rows = session("s", "p1", REWATCH, [1, 2, 3, 4]) + filler()
    _, stats = prompts_build.build_issue(pd.DataFrame(rows), "gun", settings, word_counter)
    assert stats["leak_guards"]["future_history"]["violations"] == 0
    assert stats["next_video"]["rows_kept"] == 4 + 9


def test_only_surviving_row_with_a_rewatch_passes():
    # No other row tells what was watched at position 0: the row's own history is the session's order.
    rows = session("s", "p1", REWATCH, [3])
    assert prompts_guards.check_future_history(frame_of(rows))["violations"] == 0


@pytest.mark.parametrize("row_id, planted, leaked", [
    ("s:2", ["X", "c"], "c"),  # position 1 is anchored by the step-1 row's current video (a)
    ("s:2", ["d", "a"], "d"),  # position 0 has no row of its own; the other rows' histories say X
    ("s:1", ["c"], "c"),
    ("s:4", ["X", "a", "b", "d"], "d"),  # the step-4 gold shown as already watched
])
def test_planted_future_video_fails_with_a_dropped_step(row_id, planted, leaked):
    rows = session("s", "p1", REWATCH, [1, 2, 3, 4])
    set_history(rows, row_id, planted)
    result = prompts_guards.check_future_history(frame_of(rows))
    assert result["violations"] == 1
    assert result["examples"] == [f"{row_id}: history holds later video(s) ['{leaked}']"]


def test_planted_future_video_in_a_short_history_fails():
    # A history shorter than its step (as a pre-cleaned dataset may give) cannot be aligned to
    # positions; a video the session watched only later is still a leak.
    rows = session("s", "p1", REWATCH, [1, 2, 3, 4])
    set_history(rows, "s:3", ["c"])
    result = prompts_guards.check_future_history(frame_of(rows))
    assert result["examples"] == ["s:3: history holds later video(s) ['c']"]


def test_history_longer_than_its_step_fails():
    rows = session("s", "p1", REWATCH, [1, 2, 3, 4])
    set_history(rows, "s:1", ["X", "a"])
    result = prompts_guards.check_future_history(frame_of(rows))
    assert result["examples"] == ["s:1: 2 history items before step 1"]


def test_planted_future_video_fails_the_build(settings):
    rows = session("s", "p1", REWATCH, [1, 2, 3, 4]) + filler()
    set_history(rows, "s:2", ["X", "c"])
    with pytest.raises(PromptError, match=r"future video in history \(1 rows\).*s:2: history holds later"):
        prompts_build.build_issue(pd.DataFrame(rows), "gun", settings, word_counter)


def test_current_video_in_history_is_not_a_leak():
    # A re-watch of the current video: the prompt shows the current video anyway.
    rows = session("s", "p1", ["a", "b", "a", "c"], [0, 1, 2])
    assert prompts_guards.check_future_history(frame_of(rows))["violations"] == 0


# ------------------------------------------------------------------------------ opinion last step


def test_last_step_follows_the_table_not_the_text_of_session_ids():
    # Two sessions of one participant; the table lists "s-b" first, then "s-a". Text order would
    # call "s-b" the later one.
    rows = session("s-b", "p1", ["a", "b", "c"], [0, 1]) + session("s-a", "p1", ["d", "e", "f"], [0, 1])
    last = prompts_build.last_steps(rows)
    assert last[("study1", "p1")]["row_id"] == "s-a:1"


def test_last_step_follows_the_session_start_times_over_the_table():
    # The table lists "s-late" first, but its session started later: time wins over table order.
    rows = (session("s-late", "p1", ["a", "b", "c"], [0, 1]) + session("s-early", "p1", ["d", "e", "f"], [0, 1]))
    for row in rows:
        row["session_start_s"] = 2000.0 if row["session_id"] == "s-late" else 1000.0
    assert prompts_build.last_steps(rows)[("study1", "p1")]["row_id"] == "s-late:1"


def test_last_step_falls_back_to_the_table_when_a_session_start_is_unknown():
    # One of the participant's sessions has no start: the times cannot order both, the table does.
    rows = (session("s-late", "p1", ["a", "b", "c"], [0, 1]) + session("s-early", "p1", ["d", "e", "f"], [0, 1]))
    for row in rows:
        row["session_start_s"] = 2000.0 if row["session_id"] == "s-late" else float("nan")
    assert prompts_build.last_steps(rows)[("study1", "p1")]["row_id"] == "s-early:1"


def test_last_step_within_a_session_is_the_highest_step_number():
    # Steps compared as numbers: step 10 comes after step 9 (as text "10" < "9"), whatever the row order.
    vids = [f"v{k}" for k in range(12)]
    rows = session("s", "p1", vids, [10, 9, 2])
    assert prompts_build.last_steps(rows)[("study1", "p1")]["row_id"] == "s:10"
    rows = [dict(r, step_index=str(r["step_index"])) for r in rows]
    assert prompts_build.last_steps(rows)[("study1", "p1")]["row_id"] == "s:10"


def test_opinion_row_of_a_participant_with_two_sessions(settings):
    rows = (session("s-b", "p1", ["a", "b", "c"], [0, 1], after=0.7)
            + session("s-a", "p1", ["d", "e", "f"], [0, 1], after=0.7) + filler())
    out, _ = prompts_build.build_issue(pd.DataFrame(rows), "gun", settings, word_counter)
    (opinion,) = [r for r in out["opinion"]["train"] if r["participant_id"] == "p1"]
    assert (opinion["session_id"], opinion["step_index"]) == ("s-a", 1)
    assert "CURRENT VIDEO: Title of f" in opinion["prompt"][-1]["content"]
