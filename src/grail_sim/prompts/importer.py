"""Import an external chat-prompt dataset (the ../shared/real JSONL format) into Contract 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from grail_sim import io
from grail_sim.errors import PromptError
from grail_sim.issues import issue_name
from grail_sim.prompts.build import dataset_features, write_dataset_dict
from grail_sim.prompts.settings import PromptSettings
from grail_sim.rows import finite, opinion_direction


def import_jsonl(path: str | Path, settings: PromptSettings, *, our_system_prompt: bool = False) -> list[dict]:
    """Rows of the reference's evaluation format as Contract-2 rows (task inferred per row).

    `settings.direction_tolerance` derives a missing opinion direction. With `our_system_prompt`,
    each row's system message is replaced by our system prompt for its task and issue (the
    reference's opinion prompt states a 1-7 scale for a 0-1 index); the user message is kept
    verbatim.
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
        if our_system_prompt:
            try:
                issue = issue_name(str(record.get("issue")))
            except ValueError as err:
                raise PromptError(f"{where}: {err}") from None
            system = settings.system_prompt("opinion" if is_opinion else "next_video", issue)
            row["prompt"] = [{"role": "system", "content": system}] + [m for m in row["prompt"] if m["role"] != "system"]
        row["id"] = str(record.get("id", f"{Path(path).stem}:{number}"))
        if is_opinion:
            before, after = finite(row.pop("before", None)), finite(row.pop("after", None))
            row.update(gold_index=0, n_options=0, task="opinion",
                       opinion_before=before if before is not None else float("nan"),
                       opinion_after=after if after is not None else float("nan"))
            direction = row.pop("direction", None) or opinion_direction(before, after, settings.direction_tolerance)
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
