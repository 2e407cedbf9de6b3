"""Row helpers shared by every stage: the splits and tasks, JSON columns, finite numbers and the
direction of an opinion change. Each exists here once; stages import them rather than keep copies."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

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
    if after - before > tolerance:
        return "increase"
    if before - after > tolerance:
        return "decrease"
    return "no_change"
