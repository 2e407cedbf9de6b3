"""The one prompt builder: `build_next_video_messages` and `build_opinion_messages`.

The dataset build, training, evaluation and reports all render prompts through these functions, so
what the model sees in training is exactly what it sees in evaluation.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from grail_sim.errors import PromptError
from grail_sim.issues import issue_name
from grail_sim.prompts.profiles import render_profile
from grail_sim.prompts.settings import PromptSettings, TokenCounter
from grail_sim.rows import finite, json_list, json_object

SECTION_PROFILE = "PROFILE:"


SECTION_HISTORY = "HISTORY (most recent first):"


SECTION_CURRENT = "CURRENT VIDEO:"


SECTION_OPTIONS = "OPTIONS:"


SECTION_OPINION = "OPINION:"


SECTIONS = {
    "next_video": (SECTION_PROFILE, SECTION_HISTORY, SECTION_CURRENT, SECTION_OPTIONS),
    "opinion": (SECTION_PROFILE, SECTION_HISTORY, SECTION_CURRENT, SECTION_OPINION),
}


NO_HISTORY = "(none)"


UNKNOWN_CHANNEL = "unknown channel"


UNKNOWN_LENGTH = "unknown"




def _as_list(value: Any, column: str, row_id: str) -> list:
    if hasattr(value, "tolist"):  # a list column read from parquet arrives as an array
        value = value.tolist()
    return [item if isinstance(item, Mapping) else {} for item in json_list(value, column, row_id)]






def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


def format_length(seconds: Any) -> str:
    """`m:ss` (or `h:mm:ss`), `unknown` when missing."""
    value = finite(seconds)
    if value is None or value < 0:
        return UNKNOWN_LENGTH
    total = int(round(value))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _seconds(value: Any) -> str:
    number = finite(value)
    return "?" if number is None or number < 0 else str(int(round(number)))


def video_label(item: Mapping[str, Any], show_ids: bool) -> str:
    """Title (id fallback), with the id in brackets when `show_ids`."""
    title, vid = _text(item.get("title")), _text(item.get("id"))
    label = title or (f"video {vid}" if vid else "untitled video")
    return f"[{vid}] {label}" if show_ids and vid and title else label


def render_option(number: int, item: Mapping[str, Any], show_ids: bool) -> str:
    """Every option carries the same three fields: title (or id), channel, length."""
    channel = _text(item.get("channel")) or UNKNOWN_CHANNEL
    return f"{number}. {video_label(item, show_ids)} (channel: {channel}; length: {format_length(item.get('duration_s'))})"


def render_history_item(number: int, item: Mapping[str, Any], show_ids: bool) -> str:
    channel = _text(item.get("channel")) or UNKNOWN_CHANNEL
    watched = f"watched {_seconds(item.get('watched_s'))}/{_seconds(item.get('total_s'))} s"
    return f"{number}. {video_label(item, show_ids)} ({channel}; {watched})"


def render_current(item: Mapping[str, Any], show_ids: bool) -> str:
    channel = _text(item.get("channel")) or UNKNOWN_CHANNEL
    return f"{video_label(item, show_ids)} (channel: {channel}; length: {format_length(item.get('duration_s'))})"


def shown_history(history: Sequence[Mapping[str, Any]], max_history: int, limit: int | None = None) -> list:
    """The chronological tail that the prompt shows: `max_history` most recent (0 = all), then `limit`."""
    items = list(history)
    if max_history > 0:
        items = items[-max_history:]
    if limit is not None:
        items = items[len(items) - limit:] if limit > 0 else []
    return items


def _history_block(history: Sequence[Mapping[str, Any]], show_ids: bool) -> str:
    if not history:
        return NO_HISTORY
    newest_first = list(reversed(history))
    return "\n".join(render_history_item(i, item, show_ids) for i, item in enumerate(newest_first, start=1))


def _profile_text(row: Mapping[str, Any], settings: PromptSettings) -> str:
    row_id = str(row.get("row_id") or row.get("id") or "?")
    return render_profile(
        json_object(row.get("profile"), "profile", row_id), settings.profile_table,
        issue=issue_name(str(row.get("issue"))), opinion_before=finite(row.get("opinion_before")), row_id=row_id,
    )


def _current_item(row: Mapping[str, Any]) -> dict:
    return {
        "id": row.get("current_video_id"), "title": row.get("current_video_title"),
        "channel": row.get("current_video_channel"), "duration_s": row.get("current_video_duration_s"),
    }


def build_next_video_messages(
    row: Mapping[str, Any], settings: PromptSettings, *, history_limit: int | None = None
) -> list[dict]:
    """System + user messages for one Contract-1 row (JSON columns as strings or parsed lists).

    `history_limit` drops further oldest watches (token-budget truncation); options are never cut.
    """
    row_id = str(row.get("row_id") or row.get("id") or "?")
    history = shown_history(_as_list(row.get("history"), "history", row_id), settings.max_history, history_limit)
    slate = _as_list(row.get("slate_items"), "slate_items", row_id)
    options = "\n".join(render_option(i, item, settings.show_ids) for i, item in enumerate(slate, start=1))
    user = "\n".join([
        f"{SECTION_PROFILE} {_profile_text(row, settings)}",
        SECTION_HISTORY,
        _history_block(history, settings.show_ids),
        f"{SECTION_CURRENT} {render_current(_current_item(row), settings.show_ids)}",
        SECTION_OPTIONS,
        options or "(no options)",
    ])
    system = settings.system_prompt("next_video", issue_name(str(row.get("issue"))))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def opinion_watch_sequence(row: Mapping[str, Any]) -> list[dict]:
    """Every video the participant watched in the study, chronological, from their last step:
    the history, the current video (with its watch time) and the video they chose last."""
    row_id = str(row.get("row_id") or row.get("id") or "?")
    watched = list(_as_list(row.get("history"), "history", row_id))
    current = _current_item(row)
    current.update(watched_s=row.get("current_watched_s"), total_s=row.get("current_total_s"))
    watched.append(current)
    return watched


def _final_choice(row: Mapping[str, Any]) -> dict:
    """The video chosen at the last step, with its slate metadata when the slate holds it."""
    row_id = str(row.get("row_id") or row.get("id") or "?")
    gold_id = _text(row.get("gold_video_id"))
    try:
        slate = _as_list(row.get("slate_items"), "slate_items", row_id)
    except PromptError:
        slate = []
    for item in slate:
        if gold_id and _text(item.get("id")) == gold_id:
            return dict(item)
    return {"id": gold_id}


def build_opinion_messages(
    row: Mapping[str, Any], settings: PromptSettings, *, history_limit: int | None = None
) -> list[dict]:
    """System + user messages for a participant's last Contract-1 row."""
    watched = shown_history(opinion_watch_sequence(row), settings.max_history, history_limit)
    before = finite(row.get("opinion_before"))
    before_text = f"{before:.2f}" if before is not None else "unknown"
    question = (
        "predict the post-study index." if settings.opinion_target == "index"
        else "predict the direction of change (increase, decrease or no_change)."
    )
    user = "\n".join([
        f"{SECTION_PROFILE} {_profile_text(row, settings)}",
        SECTION_HISTORY,
        _history_block(watched, settings.show_ids),
        f"{SECTION_CURRENT} {render_current(_final_choice(row), settings.show_ids)}",
        f"{SECTION_OPINION} pre-study index {before_text} on the 0-1 scale; {question}",
    ])
    system = settings.system_prompt("opinion", issue_name(str(row.get("issue"))))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


BUILDERS: dict[str, Callable[..., list[dict]]] = {
    "next_video": build_next_video_messages,
    "opinion": build_opinion_messages,
}




def render_within_budget(
    task: str, row: Mapping[str, Any], settings: PromptSettings, count: TokenCounter,
    first: tuple[list[dict], int] | None = None,
) -> tuple[list[dict], int, int, bool]:
    """Messages, their token count, history items dropped for the budget, and whether still over.

    Only history is cut, oldest first; options and profile are never touched. `first` is the
    already rendered and counted full prompt (the build counts those in batches).
    """
    builder = BUILDERS[task]
    messages, tokens = first if first is not None else (builder(row, settings), None)
    if tokens is None:
        tokens = count([messages])[0]
    if tokens <= settings.max_prompt_tokens:
        return messages, tokens, 0, False
    shown = len(_shown_for(task, row, settings))
    for keep in range(shown - 1, -1, -1):
        messages = builder(row, settings, history_limit=keep)
        tokens = count([messages])[0]
        if tokens <= settings.max_prompt_tokens:
            return messages, tokens, shown - keep, False
    return messages, tokens, shown, True


def _shown_for(task: str, row: Mapping[str, Any], settings: PromptSettings, limit: int | None = None) -> list:
    row_id = str(row.get("row_id") or "?")
    full = opinion_watch_sequence(row) if task == "opinion" else _as_list(row.get("history"), "history", row_id)
    return shown_history(full, settings.max_history, limit)
