"""The prompts stage: leak-free chat-prompt datasets for next-video choice and opinion shift.

`build_next_video_messages` and `build_opinion_messages` are the one prompt builder: the dataset
build, training, evaluation and reports all render prompts through them, so what the model sees in
training is exactly what it sees in evaluation.

Commands:
  grail-sim prompts build  --interactions PARQUET --issue gun_control --tokenizer DIR --out-dir DIR
  grail-sim prompts show   --issue gun_control --n 3 [--task next_video] [--prompts-dir results/prompts]
  grail-sim prompts import --jsonl FILE --out DIR
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from grail_sim import io
from grail_sim.issues import issue_name
from grail_sim.profiles import ProfileTable, load_profile_table, render_profile

LOG = logging.getLogger("grail_sim.prompts")

TASKS = ("next_video", "opinion")
SPLITS = ("train", "validation", "test")
OPINION_TARGETS = ("index", "direction")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROMPT_DIR = Path("config/prompts")

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

# Contract 1 columns this stage reads (docs/DESIGN.md).
REQUIRED_COLUMNS = (
    "row_id", "session_id", "participant_id", "issue", "participant_study", "treatment_arm",
    "step_index", "current_video_id", "current_video_title", "current_video_channel",
    "current_video_duration_s", "history", "slate_items", "slate_source", "n_options",
    "gold_video_id", "gold_index", "profile", "opinion_before", "opinion_after", "split",
)


class PromptError(ValueError):
    """Bad input or a failed leak guard; the message names the file, column, split or row."""


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class PromptSettings:
    """Everything that decides a prompt's text. Build it with `load_settings`."""

    profile_table: ProfileTable
    system_templates: Mapping[str, str]  # "next_video", "opinion_index", "opinion_direction": Jinja2
    max_history: int = 12  # most recent prior watches shown; 0 = full history
    show_ids: bool = False
    max_prompt_tokens: int = 1024
    opinion_target: str = "index"
    direction_tolerance: float = 1e-6
    max_missing_metadata_gap: float = 0.25
    sources: Mapping[str, str] = field(default_factory=dict)

    def system_prompt(self, task: str, issue: str) -> str:
        key = task if task == "next_video" else f"opinion_{self.opinion_target}"
        scale = tuple(sorted(self.profile_table.scale(issue).items()))
        return _render_system(self.system_templates[key], self.sources.get(key, key), issue, scale)

    def describe(self) -> dict:
        return {
            "max_history": self.max_history, "show_ids": self.show_ids,
            "max_prompt_tokens": self.max_prompt_tokens, "opinion_target": self.opinion_target,
            "direction_tolerance": self.direction_tolerance,
            "max_missing_metadata_gap": self.max_missing_metadata_gap, "sources": dict(self.sources),
        }


@functools.lru_cache(maxsize=64)
def _render_system(template: str, source: str, issue: str, scale: tuple) -> str:
    """Compiling a Jinja2 template costs about a millisecond: once per template and issue, not per row."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    try:
        return env.from_string(template).render(issue=issue, **dict(scale)).strip()
    except jinja2.TemplateError as err:
        raise PromptError(f"system prompt template {source}: {err}") from None


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    fallback = REPO_ROOT / path
    return fallback if fallback.exists() else path


def load_settings(
    section: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
) -> PromptSettings:
    """Settings from the config's `prompts:` section (all keys optional), then the environment.

    `GRAIL_MAX_HISTORY` and `GRAIL_SHOW_IDS=1` win over the config, as in the earlier reference,
    so a cluster job can change them without editing config; the effective values are logged and
    recorded in stats.json.
    """
    section = dict(section or {})
    env = os.environ if env is None else env
    templates = {
        "next_video": DEFAULT_PROMPT_DIR / "next_video_system.j2",
        "opinion_index": DEFAULT_PROMPT_DIR / "opinion_index_system.j2",
        "opinion_direction": DEFAULT_PROMPT_DIR / "opinion_direction_system.j2",
    }
    for key, value in (section.get("system_prompts") or {}).items():
        if key not in templates:
            raise PromptError(f"prompts.system_prompts: unknown task {key!r}; valid: {sorted(templates)}")
        templates[key] = Path(value)
    texts, sources = {}, {}
    for key, path in templates.items():
        resolved = _resolve(path)
        if not resolved.is_file():
            raise PromptError(f"prompts.system_prompts.{key}: file not found: {path}")
        texts[key] = resolved.read_text(encoding="utf-8")
        sources[key] = str(path)
    table_path = section.get("profile_fields", DEFAULT_PROMPT_DIR / "profile_fields.yaml")
    sources["profile_fields"] = str(table_path)
    max_history = int(section.get("max_history", 12))
    show_ids = bool(section.get("show_ids", False))
    if env.get("GRAIL_MAX_HISTORY", "").strip():
        try:
            max_history = int(env["GRAIL_MAX_HISTORY"])
        except ValueError:
            raise PromptError(f"GRAIL_MAX_HISTORY must be an integer, got {env['GRAIL_MAX_HISTORY']!r}") from None
        LOG.info("GRAIL_MAX_HISTORY=%d overrides prompts.max_history", max_history)
    if env.get("GRAIL_SHOW_IDS", "").strip():
        show_ids = env["GRAIL_SHOW_IDS"].strip().lower() in {"1", "true", "yes"}
        LOG.info("GRAIL_SHOW_IDS=%s overrides prompts.show_ids", env["GRAIL_SHOW_IDS"])
    if max_history < 0:
        raise PromptError(f"prompts.max_history must be >= 0 (0 = full history), got {max_history}")
    target = str(section.get("opinion_target", "index"))
    if target not in OPINION_TARGETS:
        raise PromptError(f"prompts.opinion_target must be one of {OPINION_TARGETS}, got {target!r}")
    max_tokens = int(section.get("max_prompt_tokens", 1024))
    if max_tokens < 1:
        raise PromptError(f"prompts.max_prompt_tokens must be positive, got {max_tokens}")
    return PromptSettings(
        profile_table=load_profile_table(_resolve(table_path)),
        system_templates=texts,
        max_history=max_history,
        show_ids=show_ids,
        max_prompt_tokens=max_tokens,
        opinion_target=target,
        direction_tolerance=float(section.get("direction_tolerance", 1e-6)),
        max_missing_metadata_gap=float(section.get("max_missing_metadata_gap", 0.25)),
        sources=sources,
    )


# --------------------------------------------------------------------------------------------
# Rendering: the one prompt builder


def _json_list(value: Any, column: str, row_id: str) -> list:
    """A list column's value: JSON text decoded, empty text or None as [], anything else refused."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as err:
            raise PromptError(f"row {row_id}: column {column!r} is not valid JSON ({err.msg})") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise PromptError(f"row {row_id}: column {column!r} must be a JSON list, got {type(value).__name__}")
    return value


def _as_list(value: Any, column: str, row_id: str) -> list:
    if hasattr(value, "tolist"):  # a list column read from parquet arrives as an array
        value = value.tolist()
    return [item if isinstance(item, Mapping) else {} for item in _json_list(value, column, row_id)]


def _as_profile(value: Any, row_id: str) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise PromptError(f"row {row_id}: column 'profile' is not valid JSON ({err.msg})") from None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PromptError(f"row {row_id}: column 'profile' must be a JSON object, got {type(value).__name__}")
    return dict(value)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


def format_length(seconds: Any) -> str:
    """`m:ss` (or `h:mm:ss`), `unknown` when missing."""
    value = _finite(seconds)
    if value is None or value < 0:
        return UNKNOWN_LENGTH
    total = int(round(value))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _seconds(value: Any) -> str:
    number = _finite(value)
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
        _as_profile(row.get("profile"), row_id), settings.profile_table,
        issue=issue_name(str(row.get("issue"))), opinion_before=_finite(row.get("opinion_before")), row_id=row_id,
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
    before = _finite(row.get("opinion_before"))
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


def opinion_direction(before: float | None, after: float | None, tolerance: float = 1e-6) -> str:
    """`increase` / `decrease` / `no_change`; `unknown` when either index is missing."""
    if before is None or after is None:
        return "unknown"
    if after - before > tolerance:
        return "increase"
    if before - after > tolerance:
        return "decrease"
    return "no_change"


# --------------------------------------------------------------------------------------------
# Token counting and truncation

TokenCounter = Callable[[list[list[dict]]], list[int]]
COUNT_BATCH = 256  # prompts per tokenizer call: the fast tokenizer batches in Rust


def tokenizer_counter(tokenizer_dir: str | Path) -> TokenCounter:
    """Prompt tokens as the model sees them: chat template plus generation prompt."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    has_template = bool(getattr(tokenizer, "chat_template", None))

    def count(batch: list[list[dict]]) -> list[int]:
        if has_template:
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        else:
            texts = ["\n\n".join(msg["content"] for msg in m) for m in batch]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count


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


# --------------------------------------------------------------------------------------------
# Leak guards

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


# --------------------------------------------------------------------------------------------
# The build


def _drop_reason(row: Mapping[str, Any], slate: list, raw_slate_len: int) -> str | None:
    if raw_slate_len == 0:
        return "no_usable_slate"
    if any(not _text(item.get("title")) and not _text(item.get("id")) for item in slate) or len(slate) != raw_slate_len:
        return "slate_item_without_title_or_id"
    n_options = _finite(row.get("n_options"))
    if n_options is None or int(n_options) != len(slate):
        return "n_options_mismatch"
    gold = _finite(row.get("gold_index"))
    if gold is None or not 1 <= int(gold) <= len(slate):
        return "gold_not_in_slate"
    if _text(slate[int(gold) - 1].get("id")) != _text(row.get("gold_video_id")):
        return "gold_not_in_slate"
    return None


def _parse_slate(value: Any, row_id: str) -> tuple[list, int]:
    """Items as mappings, and how many entries the raw JSON held (non-objects are not usable)."""
    value = _json_list(value, "slate_items", row_id)
    return [item for item in value if isinstance(item, Mapping)], len(value)


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


def _position_stats(golds: list[int], n_options: list[int], train_most_frequent: int | None) -> dict:
    if not golds:
        return {"rows": 0}
    counts = Counter(golds)
    most_frequent, freq = max(sorted(counts.items()), key=lambda kv: kv[1])
    stats = {
        "rows": len(golds),
        "gold_position_counts": {str(k): counts[k] for k in sorted(counts)},
        "n_options_counts": {str(k): v for k, v in sorted(Counter(n_options).items())},
        "baselines": {
            "most_frequent_index": most_frequent,
            "most_frequent_index_accuracy": freq / len(golds),
            "always_last_accuracy": sum(g == n for g, n in zip(golds, n_options)) / len(golds),
            "random_expected_accuracy": sum(1.0 / n for n in n_options) / len(golds),
        },
    }
    if train_most_frequent is not None:
        stats["baselines"]["train_most_frequent_index"] = train_most_frequent
        stats["baselines"]["train_most_frequent_index_accuracy"] = (
            sum(g == train_most_frequent for g in golds) / len(golds)
        )
    return stats


def _token_stats(tokens: list[int]) -> dict:
    if not tokens:
        return {"rows": 0}
    ordered = sorted(tokens)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"rows": len(tokens), "mean": sum(tokens) / len(tokens), "p95": p95, "max": ordered[-1]}


def _dataset_row(task: str, row: Mapping[str, Any], messages: list[dict], tokens: int, shown: list,
                 settings: PromptSettings) -> dict:
    before, after = _finite(row.get("opinion_before")), _finite(row.get("opinion_after"))
    direction = opinion_direction(before, after, settings.direction_tolerance)
    profile = _profile_text(row, settings)
    common = {
        "prompt": messages, "viewer_profile": profile, "history": json.dumps(shown, default=_json_safe),
        "issue": str(row["issue"]), "participant_study": str(row["participant_study"]),
        "participant_id": str(row["participant_id"]), "session_id": str(row["session_id"]),
        "treatment_arm": _text(row.get("treatment_arm")), "step_index": int(row["step_index"]),
        "opinion_before": before if before is not None else float("nan"),
        "opinion_after": after if after is not None else float("nan"),
        "opinion_direction": direction, "prompt_tokens": int(tokens), "task": task,
    }
    if task == "next_video":
        gold = int(row["gold_index"])
        return {"id": str(row["row_id"]), **common, "gold_index": gold, "n_options": int(row["n_options"]),
                "slate_items": row["slate_items"] if isinstance(row["slate_items"], str) else json.dumps(row["slate_items"]),
                "gold_id": _text(row["gold_video_id"]), "slate_source": _text(row.get("slate_source")),
                "answer": str(gold)}
    answer = f"{after:.3f}" if settings.opinion_target == "index" else direction
    return {"id": f"{row['participant_study']}:{row['participant_id']}", **common, "gold_index": 0,
            "n_options": 0, "slate_items": "[]", "gold_id": "", "slate_source": "", "answer": answer}


def _json_safe(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return None


def _nan_to_none(item: Mapping[str, Any]) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in item.items()}


def build_issue(frame, issue: str, settings: PromptSettings, count: TokenCounter, *,
                source: str = "interactions", progress_every: int = 2000) -> tuple[dict, dict]:
    """Rows per task and split, and the stats. Fails with PromptError on a leak or bad input."""
    issue = issue_name(issue)
    rows = validate_frame(frame, issue, source)
    drops: Counter = Counter()
    kept, records = [], []
    for record in rows.to_dict("records"):
        record["history"] = record.pop("_history")
        records.append(record)
        slate, raw_len = _parse_slate(record["slate_items"], str(record["row_id"]))
        reason = _drop_reason(record, slate, raw_len)
        if reason:
            drops[reason] += 1
            continue
        kept.append(record)
    LOG.info("%s: %d rows read, %d kept, dropped %s", issue, len(rows), len(kept), dict(drops) or "none")

    future = check_future_history(rows)
    LOG.info("leak guard future_history: %d rows checked, %d violations", future["rows_checked"], future["violations"])
    if future["violations"]:
        raise PromptError(f"leak guard failed: future video in history ({future['violations']} rows), e.g. "
                          + "; ".join(future["examples"]))

    # The opinion context needs no usable slate, so a participant whose last step lost its slate
    # still counts: every row of the clean table competes for "last step".
    last_rows: dict[tuple, dict] = {}
    for record in records:
        key = (record["participant_study"], record["participant_id"])
        previous = last_rows.get(key)
        if previous is None or (record["session_id"], int(record["step_index"])) > (
                previous["session_id"], int(previous["step_index"])):
            last_rows[key] = record
    opinion_drops: Counter = Counter()
    opinion_rows = []
    for record in last_rows.values():
        if _finite(record.get("opinion_before")) is None or _finite(record.get("opinion_after")) is None:
            opinion_drops["opinion_missing"] += 1
        else:
            opinion_rows.append(record)

    out: dict[str, dict[str, list]] = {task: {split: [] for split in SPLITS} for task in TASKS}
    truncation = {task: Counter() for task in TASKS}
    for task, records in (("next_video", kept), ("opinion", opinion_rows)):
        rendered: list[list[dict]] = []
        counted: list[int] = []
        for done, record in enumerate(records, start=1):
            rendered.append(BUILDERS[task](record, settings))
            if len(rendered) - len(counted) >= COUNT_BATCH or done == len(records):
                counted += count(rendered[len(counted):])
            if progress_every and done % progress_every == 0:
                LOG.info("%s/%s: rendered and counted %d/%d rows", issue, task, done, len(records))
        for record, messages, tokens in zip(records, rendered, counted):
            messages, tokens, cut, over = render_within_budget(task, record, settings, count, (messages, tokens))
            full = len(_shown_for(task, record, settings, None))
            shown = [_nan_to_none(item) for item in _shown_for(task, record, settings, full - cut)]
            truncation[task]["rows_history_cut_for_tokens"] += int(cut > 0)
            truncation[task]["history_items_cut_for_tokens"] += cut
            truncation[task]["rows_over_limit_after_cutting_history"] += int(over)
            all_items = len(opinion_watch_sequence(record)) if task == "opinion" else len(record["history"])
            truncation[task]["rows_history_cut_by_max_history"] += int(full < all_items)
            out[task][str(record["split"])].append(_dataset_row(task, record, messages, tokens, shown, settings))

    for task in TASKS:
        for split in SPLITS:
            if not out[task][split]:
                raise PromptError(f"{issue}/{task}: split {split!r} is empty after filtering "
                                  f"(next_video drops: {dict(drops)}, opinion drops: {dict(opinion_drops)})")

    option_guard = check_option_rendering(r for split in SPLITS for r in out["next_video"][split])
    LOG.info("leak guard option_rendering: %d rows checked, %d violations, gold/other missing-metadata rate %.3f/%.3f",
             option_guard["rows_checked"], option_guard["violations"],
             option_guard["gold_missing_metadata_rate"], option_guard["other_missing_metadata_rate"])
    if option_guard["violations"]:
        raise PromptError("leak guard failed: options rendered with different fields: "
                          + "; ".join(option_guard["examples"]))
    if option_guard["missing_metadata_gap"] > settings.max_missing_metadata_gap:
        raise PromptError(
            f"leak guard failed: the gold option lacks metadata in {option_guard['gold_missing_metadata_rate']:.1%} "
            f"of rows against {option_guard['other_missing_metadata_rate']:.1%} for other options (gap above "
            f"prompts.max_missing_metadata_gap={settings.max_missing_metadata_gap}): the gold is recognisable")
    profile_keys = sorted({k for r in kept for k in _as_profile(r.get("profile"), str(r["row_id"]))})
    LOG.info("leak guard post_treatment: %d profile keys, all in the pre-treatment allow-list %s",
             len(profile_keys), settings.profile_table.source)

    train_golds = [r["gold_index"] for r in out["next_video"]["train"]]
    train_most_frequent = max(sorted(Counter(train_golds).items()), key=lambda kv: kv[1])[0]
    stats = {
        "issue": issue,
        "settings": settings.describe(),
        "rows_read": len(rows),
        "next_video": {
            "rows_kept": len(kept), "drops": dict(drops),
            "splits": {s: _position_stats([r["gold_index"] for r in out["next_video"][s]],
                                          [r["n_options"] for r in out["next_video"][s]], train_most_frequent)
                       for s in SPLITS},
            "prompt_tokens": {s: _token_stats([r["prompt_tokens"] for r in out["next_video"][s]]) for s in SPLITS},
            "truncation": dict(truncation["next_video"]),
        },
        "opinion": {
            "participants": len(last_rows), "rows_kept": len(opinion_rows), "drops": dict(opinion_drops),
            "splits": {s: {"rows": len(out["opinion"][s]),
                           "direction_counts": dict(Counter(r["opinion_direction"] for r in out["opinion"][s]))}
                       for s in SPLITS},
            "prompt_tokens": {s: _token_stats([r["prompt_tokens"] for r in out["opinion"][s]]) for s in SPLITS},
            "truncation": dict(truncation["opinion"]),
        },
        "leak_guards": {
            "option_rendering": {**option_guard, "passed": True},
            "post_treatment": {"profile_keys": profile_keys, "allow_list": settings.profile_table.source,
                               "violations": 0, "passed": True},
            "future_history": {**future, "passed": True},
        },
    }
    return out, stats


# --------------------------------------------------------------------------------------------
# Datasets on disk


def dataset_features(extra: Mapping[str, Any] | None = None):
    from datasets import Features, List, Value

    features = {
        "id": Value("string"),
        "prompt": List({"role": Value("string"), "content": Value("string")}),
        "gold_index": Value("int64"), "n_options": Value("int64"), "slate_items": Value("string"),
        "viewer_profile": Value("string"), "history": Value("string"), "issue": Value("string"),
        "participant_study": Value("string"), "participant_id": Value("string"),
        "opinion_before": Value("float64"), "opinion_after": Value("float64"),
        "opinion_direction": Value("string"), "gold_id": Value("string"),
    }
    features.update(extra or {})
    return Features(features)


BUILD_EXTRA_FEATURES = {
    "session_id": "string", "treatment_arm": "string", "step_index": "int64", "prompt_tokens": "int64",
    "task": "string", "slate_source": "string", "answer": "string",
}


def write_dataset_dict(splits: Mapping[str, list[dict]], out_dir: str | Path, features) -> None:
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # per-shard bars would flood the rule's log; we log counts instead
    dataset = DatasetDict({
        name: Dataset.from_list([{k: row.get(k) for k in features} for row in rows], features=features)
        for name, rows in splits.items()
    })
    with io.atomic_dir(out_dir) as tmp:
        dataset.save_to_disk(str(tmp))


def write_build(out: Mapping[str, Mapping[str, list]], stats: Mapping, out_dir: str | Path) -> None:
    from datasets import Value

    features = dataset_features({k: Value(v) for k, v in BUILD_EXTRA_FEATURES.items()})
    out_dir = Path(out_dir)
    for task in TASKS:
        write_dataset_dict(out[task], out_dir / task, features)
    io.write_json(out_dir / "stats.json", stats)


# --------------------------------------------------------------------------------------------
# Import of an external chat-prompt dataset (../shared/real/*.jsonl)


def import_jsonl(path: str | Path, settings: PromptSettings | None = None) -> list[dict]:
    """Rows of the reference's evaluation format as Contract-2 rows (task inferred per row).

    With `settings`, each row's system message is replaced by our system prompt for its task and
    issue (the reference's opinion prompt states a 1-7 scale for a 0-1 index); the user message
    is kept verbatim.
    """
    rows = []
    for number, record in enumerate(io.read_jsonl(path), start=1):
        where = f"{path}:{number}"
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise PromptError(f"{where}: 'messages' must be a non-empty list of {{role, content}} strings")
        is_opinion = "before" in record or "after" in record
        row = {k: v for k, v in record.items() if k != "messages"}
        row["prompt"] = [{"role": m["role"], "content": m["content"]} for m in messages]
        if settings is not None:
            try:
                issue = issue_name(str(record.get("issue")))
            except ValueError as err:
                raise PromptError(f"{where}: {err}") from None
            system = settings.system_prompt("opinion" if is_opinion else "next_video", issue)
            row["prompt"] = [{"role": "system", "content": system}] + [m for m in row["prompt"] if m["role"] != "system"]
        row["id"] = str(record.get("id", f"{Path(path).stem}:{number}"))
        if is_opinion:
            before, after = _finite(row.pop("before", None)), _finite(row.pop("after", None))
            row.update(gold_index=0, n_options=0, task="opinion",
                       opinion_before=before if before is not None else float("nan"),
                       opinion_after=after if after is not None else float("nan"))
            direction = row.pop("direction", None) or opinion_direction(before, after)
            row["opinion_direction"] = str(direction)
            row["answer"] = f"{after:.3f}" if after is not None else ""
        else:
            gold, n_options = record.get("gold_index"), record.get("n_options")
            if not isinstance(gold, int) or not isinstance(n_options, int) or not 1 <= gold <= n_options:
                raise PromptError(f"{where}: needs integer 'gold_index' in 1..'n_options' "
                                  f"(got gold_index={gold!r}, n_options={n_options!r})")
            row.update(task="next_video", opinion_before=float("nan"), opinion_after=float("nan"),
                       opinion_direction="unknown", answer=str(gold))
        for key, empty in (("slate_items", "[]"), ("viewer_profile", ""), ("history", "[]"), ("issue", ""),
                           ("participant_study", ""), ("participant_id", ""), ("gold_id", "")):
            value = row.get(key)
            row[key] = empty if value is None else (value if isinstance(value, str) else json.dumps(value))
        rows.append(row)
    if not rows:
        raise PromptError(f"{path}: no rows")
    return rows


def write_import(rows: list[dict], out_dir: str | Path) -> None:
    from datasets import Value

    required = dataset_features()
    extra = {}
    for row in rows:
        for key, value in row.items():
            if key in required or key in extra or value is None:
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                extra[key] = Value("int64")
            elif isinstance(value, float):
                extra[key] = Value("float64")
            else:  # strings, booleans and nested values (stored as JSON text)
                extra[key] = Value("string")
    for row in rows:
        for key, feature in extra.items():
            value = row.get(key)
            if feature.dtype == "string" and value is not None and not isinstance(value, str):
                row[key] = json.dumps(value)
    write_dataset_dict({"test": rows}, out_dir, dataset_features(extra))


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="action", required=True)
    build = commands.add_parser("build", help="Contract-1 parquet -> prompt datasets + stats.json")
    build.add_argument("--interactions", required=True, help="results/clean/interactions.parquet")
    build.add_argument("--issue", required=True, help="gun_control or minimum_wage (gun/wage accepted)")
    build.add_argument("--tokenizer", required=True, help="model folder whose tokenizer counts prompt tokens")
    build.add_argument("--out-dir", required=True, help="results/prompts/{issue}")
    _settings_arguments(build)

    show = commands.add_parser("show", help="print rendered prompts")
    show.add_argument("--issue", required=True)
    show.add_argument("--n", type=int, default=3)
    show.add_argument("--task", choices=TASKS, default="next_video")
    show.add_argument("--split", choices=SPLITS, default="train")
    show.add_argument("--prompts-dir", default="results/prompts")

    imp = commands.add_parser("import", help="external chat-prompt JSONL -> Contract-2 DatasetDict (test split)")
    imp.add_argument("--jsonl", required=True)
    imp.add_argument("--out", required=True)
    imp.add_argument("--our-system-prompt", action="store_true",
                     help="replace each row's system message with the configured one (user text kept)")
    _settings_arguments(imp)


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-history", type=int, help="most recent prior watches shown (0 = full history)")
    parser.add_argument("--show-ids", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--max-prompt-tokens", type=int)
    parser.add_argument("--system-next-video", help="Jinja2 system prompt for next-video choice")
    parser.add_argument("--system-opinion-index", help="Jinja2 system prompt for the opinion index")
    parser.add_argument("--system-opinion-direction", help="Jinja2 system prompt for the opinion direction")
    parser.add_argument("--profile-fields", help="column -> phrase table (the pre-treatment allow-list)")
    parser.add_argument("--opinion-target", choices=OPINION_TARGETS)
    parser.add_argument("--direction-tolerance", type=float)
    parser.add_argument("--max-missing-metadata-gap", type=float)


def settings_from_args(args: argparse.Namespace) -> PromptSettings:
    section: dict[str, Any] = {}
    for key in ("max_history", "show_ids", "max_prompt_tokens", "profile_fields", "opinion_target",
                "direction_tolerance", "max_missing_metadata_gap"):
        if getattr(args, key, None) is not None:
            section[key] = getattr(args, key)
    systems = {task: getattr(args, f"system_{task}") for task in ("next_video", "opinion_index", "opinion_direction")}
    section["system_prompts"] = {k: v for k, v in systems.items() if v}
    return load_settings(section)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "build":
            return _run_build(args)
        if args.action == "show":
            return _run_show(args)
        return _run_import(args)
    except (PromptError, ValueError, FileNotFoundError) as err:
        LOG.error("%s", err)
        return 1


def _run_build(args: argparse.Namespace) -> int:
    import pandas as pd

    settings = settings_from_args(args)
    path = Path(args.interactions)
    if not path.is_file():
        raise PromptError(f"interactions file not found: {path}")
    frame = pd.read_parquet(path)
    LOG.info("building prompts for %s from %s (%d rows), settings %s", args.issue, path, len(frame),
             json.dumps(settings.describe()))
    out, stats = build_issue(frame, args.issue, settings, tokenizer_counter(args.tokenizer), source=str(path))
    stats["tokenizer"] = str(args.tokenizer)
    stats["interactions"] = str(path)
    write_build(out, stats, args.out_dir)
    for task in TASKS:
        tokens = stats[task]["prompt_tokens"]["train"]
        LOG.info("%s: rows %s, prompt tokens train mean %.0f p95 %d max %d", task,
                 {s: len(out[task][s]) for s in SPLITS}, tokens["mean"], tokens["p95"], tokens["max"])
    LOG.info("wrote %s", args.out_dir)
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from datasets import load_from_disk

    folder = Path(args.prompts_dir) / issue_name(args.issue) / args.task
    if not folder.exists():
        raise PromptError(f"no prompt dataset at {folder}; run `grail-sim prompts build` (or snakemake) first")
    split = load_from_disk(str(folder))[args.split]
    for index in range(min(args.n, len(split))):
        row = split[index]
        print(f"=== {row['id']} ({args.task}, {args.split}) ===")
        for message in row["prompt"]:
            print(f"--- {message['role']} ---\n{message['content']}")
        gold = row.get("answer") or row["gold_index"]
        print(f"--- gold answer: {gold} ---\n")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    rows = import_jsonl(args.jsonl, settings_from_args(args) if args.our_system_prompt else None)
    write_import(rows, args.out)
    tasks = Counter(r["task"] for r in rows)
    LOG.info("imported %d rows (%s) from %s into %s (split test)", len(rows), dict(tasks), args.jsonl, args.out)
    return 0
