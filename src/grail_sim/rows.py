"""Row helpers shared by every stage: the splits and tasks, JSON columns, finite numbers and the
direction of an opinion change, a prompt's system message. Each exists here once; stages import them rather than keep copies."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

from grail_sim.answers import DIRECTIONS
from grail_sim.errors import RowError

SPLITS = ("train", "validation", "test")
TASKS = ("next_video", "opinion")


def _decoded(value: Any, column: str, row_id: str, empty: Any) -> Any:
    if hasattr(value, "tolist"):  # a list column read from parquet arrives as an array
        value = value.tolist()
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else empty
        except json.JSONDecodeError as err:
            raise RowError(f"row {row_id}: column {column!r} is not valid JSON ({err.msg})") from None
    return empty if value is None else value


def json_list(value: Any, column: str, row_id: str = "?") -> list:
    """A list column's value: JSON text decoded, empty text or None as [], anything else refused."""
    value = _decoded(value, column, row_id, [])
    if not isinstance(value, list):
        raise RowError(f"row {row_id}: column {column!r} must be a JSON list, got {type(value).__name__}")
    return value


def json_object(value: Any, column: str, row_id: str = "?") -> dict:
    """An object column's value (a profile): JSON text decoded, empty text or None as {}."""
    value = _decoded(value, column, row_id, {})
    if not isinstance(value, Mapping):
        raise RowError(f"row {row_id}: column {column!r} must be a JSON object, got {type(value).__name__}")
    return dict(value)


def finite(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, not a number, NaN or infinite."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def opinion_direction(before: float | None, after: float | None, tolerance: float) -> str:
    """`increase` / `decrease` / `no_change` (|after - before| <= tolerance); `unknown` when either
    index is missing. `tolerance` is the config's `prompts.direction_tolerance`."""
    before, after = finite(before), finite(after)
    if before is None or after is None:
        return "unknown"
    increase, decrease, no_change = DIRECTIONS
    if after - before > tolerance:
        return increase
    if before - after > tolerance:
        return decrease
    return no_change


LEANINGS = ("liberal", "moderate", "conservative", "unknown")
# "ideology: somewhat conservative" (our rendered profiles) or "ideology is Moderate" (the survey
# highlights of imported real prompts); the value runs to the next comma, semicolon, period or line end.
_IDEOLOGY = re.compile(r"\bideology(?:\s*:|\s+is)\s*([^,;.\n]*)", re.IGNORECASE)
# The imported prompts' first line also says "...; democrat moderate; ...": party, then ideology.
_PARTY_IDEOLOGY = re.compile(r"\b(?:democrat|republican|independent|other party)\s+(liberal|moderate|conservative)\b",
                             re.IGNORECASE)


def viewer_leaning(profile_text: str) -> str:
    """`liberal` / `moderate` / `conservative` from the ideology a profile states, else `unknown`.

    Breakdowns by leaning ask whether a simulator serves both sides alike, so only the viewer's own
    stated ideology counts: party, issue views and watched videos are not read as a leaning. Any
    "liberal" ("very liberal", "somewhat liberal") is liberal, likewise conservative; "moderate" or
    "middle of the road" is moderate. An ideology phrase wins over the party-ideology pair; a stated
    value without a side ("haven't thought much about it") and a profile without either is unknown.
    """
    text = profile_text or ""
    stated = _IDEOLOGY.search(text)
    if stated:
        value = stated.group(1).lower()
    else:
        pair = _PARTY_IDEOLOGY.search(text)
        value = pair.group(1).lower() if pair else ""
    for leaning in ("liberal", "conservative"):
        if leaning in value:
            return leaning
    if "moderate" in value or "middle of the road" in value:
        return "moderate"
    return "unknown"


def replace_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """`messages` with `text` as the system message (replacing the first one, or put first)."""
    rest = messages[1:] if messages and messages[0].get("role") == "system" else list(messages)
    return [{"role": "system", "content": text}, *rest]


def with_system_prompt(data, text: str | None):
    """The rows of `data` with `text` as every prompt's system message (unchanged when either is None)."""
    if text is None or data is None:
        return data
    # In memory: a cache file beside the prompts would change their content hash (resume fingerprints).
    return data.map(lambda row: {"prompt": replace_system(list(row["prompt"]), text)}, keep_in_memory=True)
