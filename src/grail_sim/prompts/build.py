"""Build the prompt datasets of one issue (Contract 2) and write them.

`build_issue` runs named steps: read and select the rows of each task (`_select`, with the
future-history guard), render and count prompts (`_task_rows`), then the option-rendering and
post-treatment guards; `summary.build_stats` writes down drops, gold-position baselines, token
lengths and the guards' results for stats.json. `write_build` saves the DatasetDicts.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from grail_sim import io
from grail_sim.errors import PromptError
from grail_sim.issues import issue_name
from grail_sim.prompts.guards import (
    check_future_history,
    check_option_rendering,
    validate_frame,
)
from grail_sim.prompts.render import (
    BUILDERS,
    _profile_text,
    _shown_for,
    _text,
    opinion_watch_sequence,
    render_within_budget,
)
from grail_sim.prompts.settings import COUNT_BATCH, PromptSettings, TokenCounter
from grail_sim.prompts.summary import build_stats
from grail_sim.rows import (
    SPLITS,
    TASKS,
    finite,
    json_list,
    json_object,
    opinion_direction,
)

LOG = logging.getLogger("grail_sim.prompts")


def _drop_reason(row: Mapping[str, Any], slate: list, raw_slate_len: int) -> str | None:
    """Why a row cannot be a next-video example, or None when it can; the first reason wins."""
    if raw_slate_len == 0:
        return "no_usable_slate"
    if any(not _text(item.get("title")) and not _text(item.get("id")) for item in slate) or len(slate) != raw_slate_len:
        return "slate_item_without_title_or_id"
    n_options = finite(row.get("n_options"))
    if n_options is None or int(n_options) != len(slate):
        return "n_options_mismatch"
    gold = finite(row.get("gold_index"))
    if gold is None or not 1 <= int(gold) <= len(slate):
        return "gold_not_in_slate"
    if _text(slate[int(gold) - 1].get("id")) != _text(row.get("gold_video_id")):
        return "gold_not_in_slate"
    return None


def _parse_slate(value: Any, row_id: str) -> tuple[list, int]:
    """Items as mappings, and how many entries the raw JSON held (non-objects are not usable)."""
    value = json_list(value, "slate_items", row_id)
    return [item for item in value if isinstance(item, Mapping)], len(value)


def _dataset_row(task: str, row: Mapping[str, Any], messages: list[dict], tokens: int, shown: list,
                 settings: PromptSettings) -> dict:
    """One Contract-2 row: the columns both tasks share, then the task's own."""
    before, after = finite(row.get("opinion_before")), finite(row.get("opinion_after"))
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


def prompt_row(task: str, record: Mapping[str, Any], settings: PromptSettings, count: TokenCounter | None = None) -> dict:
    """One Contract-2 row from one Contract-1 record, rendered as the build renders it: history cut
    oldest first to `settings.max_prompt_tokens` as counted by `count` (None: no token budget, only
    `max_history`). For rows made outside the build, such as the simulate stage's sessions."""
    if count is None:
        messages, tokens, cut = BUILDERS[task](record, settings), 0, 0
    else:
        messages, tokens, cut, _ = render_within_budget(task, record, settings, count)
    full = len(_shown_for(task, record, settings, None))
    shown = [_nan_to_none(item) for item in _shown_for(task, record, settings, full - cut)]
    return _dataset_row(task, record, messages, tokens, shown, settings)


def _json_safe(value: Any) -> Any:
    """numpy scalars (from parquet) as Python numbers; anything else JSON cannot hold as null."""
    if hasattr(value, "item"):
        return value.item()
    return None


def _nan_to_none(item: Mapping[str, Any]) -> dict:
    # The stored history is JSON: NaN is not valid JSON, null is what Contract 1 uses for unknown.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in item.items()}


# ------------------------------------------------------------------------------ the build's steps


@dataclass
class Selection:
    """Which rows of the clean table each task uses, and why the others were left out."""

    rows_read: int
    kept: list[dict]  # next-video rows with a usable slate and gold
    drops: Counter  # next-video rows left out, by reason
    participants: int  # participants competing for an opinion row
    opinion_rows: list[dict]  # each participant's last step, when both opinion indices are known
    opinion_drops: Counter


def _read_rows(frame, issue: str, source: str) -> tuple[Any, list[dict], list[dict], Counter]:
    """The issue's validated rows, every row as a record (history parsed), the records with a
    usable slate, and the drops counted by reason."""
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
    return rows, records, kept, drops


def _guard_future_history(rows) -> dict:
    future = check_future_history(rows)
    LOG.info("leak guard future_history: %d rows checked, %d violations", future["rows_checked"], future["violations"])
    if future["violations"]:
        raise PromptError(f"leak guard failed: future video in history ({future['violations']} rows), e.g. "
                          + "; ".join(future["examples"]))
    return future


def last_steps(records: list[dict]) -> dict[tuple, dict]:
    """(participant_study, participant_id) -> the participant's last row, `records` in table order.

    "Last" means last in time. A participant's sessions are ordered by their start
    (`session_start_s`, Contract 1, from the platform log's `startTime`) when every one of their
    sessions has one; otherwise, and between sessions that started at the same moment, by where each
    session first appears in the table, which is the platform log's order. Within a session, steps
    are ordered by their number, compared as a number. Session ids are random platform ids: their
    text order says nothing about time, and step numbers as text put 10 before 9.

    The opinion context needs no usable slate, so a participant whose last step lost its slate
    still counts: every row of the clean table competes for "last step".
    """
    session_rank: dict[str, int] = {}
    by_participant: dict[tuple, list[dict]] = {}
    for position, record in enumerate(records):
        session_rank.setdefault(str(record["session_id"]), position)
        by_participant.setdefault((record["participant_study"], record["participant_id"]), []).append(record)

    def last(rows: list[dict]) -> dict:
        starts = [finite(row.get("session_start_s")) for row in rows]
        timed = all(start is not None for start in starts)
        return max(zip(rows, starts), key=lambda pair: ((pair[1] if timed else 0.0),
                                                        session_rank[str(pair[0]["session_id"])],
                                                        int(pair[0]["step_index"])))[0]

    return {key: last(rows) for key, rows in by_participant.items()}


def _select(frame, issue: str, source: str) -> tuple[Selection, dict]:
    """The rows of each task, and the future-history guard's result (run on every row read)."""
    rows, records, kept, drops = _read_rows(frame, issue, source)
    future = _guard_future_history(rows)
    last_rows = last_steps(records)
    opinion_drops: Counter = Counter()
    opinion_rows = []
    for record in last_rows.values():
        if finite(record.get("opinion_before")) is None or finite(record.get("opinion_after")) is None:
            opinion_drops["opinion_missing"] += 1
        else:
            opinion_rows.append(record)
    selection = Selection(len(rows), kept, drops, len(last_rows), opinion_rows, opinion_drops)
    return selection, future


def _render_and_count(task: str, records: list[dict], settings: PromptSettings, count: TokenCounter,
                      label: str, progress_every: int) -> tuple[list[list[dict]], list[int]]:
    """Every record's full prompt and its token count; the tokenizer is called in batches of
    COUNT_BATCH because one call per prompt is many times slower."""
    rendered: list[list[dict]] = []
    counted: list[int] = []
    for done, record in enumerate(records, start=1):
        rendered.append(BUILDERS[task](record, settings))
        if len(rendered) - len(counted) >= COUNT_BATCH or done == len(records):
            counted += count(rendered[len(counted):])
        if progress_every and done % progress_every == 0:
            LOG.info("%s/%s: rendered and counted %d/%d rows", label, task, done, len(records))
    return rendered, counted


def _task_rows(task: str, records: list[dict], settings: PromptSettings, count: TokenCounter, *,
               label: str, progress_every: int) -> tuple[dict[str, list], Counter]:
    """The task's dataset rows per split (history cut to the token budget), and what was cut."""
    by_split: dict[str, list] = {split: [] for split in SPLITS}
    truncation: Counter = Counter()
    rendered, counted = _render_and_count(task, records, settings, count, label, progress_every)
    for record, messages, tokens in zip(records, rendered, counted):
        messages, tokens, cut, over = render_within_budget(task, record, settings, count, (messages, tokens))
        full = len(_shown_for(task, record, settings, None))
        shown = [_nan_to_none(item) for item in _shown_for(task, record, settings, full - cut)]
        truncation["rows_history_cut_for_tokens"] += int(cut > 0)
        truncation["history_items_cut_for_tokens"] += cut
        truncation["rows_over_limit_after_cutting_history"] += int(over)
        all_items = len(opinion_watch_sequence(record)) if task == "opinion" else len(record["history"])
        truncation["rows_history_cut_by_max_history"] += int(full < all_items)
        by_split[str(record["split"])].append(_dataset_row(task, record, messages, tokens, shown, settings))
    return by_split, truncation


def _require_every_split(out: Mapping[str, Mapping[str, list]], issue: str, selection: Selection) -> None:
    # Training needs train, model selection validation, the report test: an empty one is an error.
    for task in TASKS:
        for split in SPLITS:
            if not out[task][split]:
                raise PromptError(f"{issue}/{task}: split {split!r} is empty after filtering "
                                  f"(next_video drops: {dict(selection.drops)}, "
                                  f"opinion drops: {dict(selection.opinion_drops)})")


def _guard_option_rendering(out: Mapping[str, Mapping[str, list]], settings: PromptSettings) -> dict:
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
    return option_guard


def _guard_post_treatment(kept: list[dict], settings: PromptSettings) -> dict:
    """The profile keys that reached a prompt. Rendering already refused any key outside the
    pre-treatment allow-list (profiles.check_profile_keys), so reaching here means it passed."""
    profile_keys = sorted({k for r in kept for k in json_object(r.get("profile"), "profile", str(r["row_id"]))})
    LOG.info("leak guard post_treatment: %d profile keys, all in the pre-treatment allow-list %s",
             len(profile_keys), settings.profile_table.source)
    return {"profile_keys": profile_keys, "allow_list": settings.profile_table.source}


def build_issue(frame, issue: str, settings: PromptSettings, count: TokenCounter, *,
                source: str = "interactions", progress_every: int = 2000) -> tuple[dict, dict]:
    """Rows per task and split, and the stats. Fails with PromptError on a leak or bad input."""
    issue = issue_name(issue)
    selection, future = _select(frame, issue, source)
    out: dict[str, dict[str, list]] = {}
    truncation: dict[str, Counter] = {}
    for task, records in (("next_video", selection.kept), ("opinion", selection.opinion_rows)):
        out[task], truncation[task] = _task_rows(task, records, settings, count, label=issue,
                                                 progress_every=progress_every)
    _require_every_split(out, issue, selection)
    guards = {"option_rendering": _guard_option_rendering(out, settings),
              "post_treatment": _guard_post_treatment(selection.kept, settings),
              "future_history": future}
    stats = build_stats(issue=issue, settings=settings, rows_read=selection.rows_read, out=out,
                        selection=selection, truncation=truncation, guards=guards)
    return out, stats


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
