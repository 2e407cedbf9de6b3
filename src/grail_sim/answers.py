"""The one parser of model outputs, shared by the rewards and the evaluation.

Next-video answers: `<think>...</think><answer>N</answer>` with N in 1..n_options.
Opinion answers: `<think>...</think><answer>0.42</answer>`, a post-study index on the 0-1 scale.
An answer that is missing, out of range or not a bare number parses to None, never to a fallback.
"""

from __future__ import annotations

import math
import re

_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL | re.IGNORECASE)
_INTEGER = re.compile(r"^[+]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def answer_text(text: str) -> str | None:
    """Content of the last `<answer>` tag, or None."""
    found = _ANSWER.findall(text or "")
    return found[-1] if found else None


def has_format(text: str) -> bool:
    """True when the whole output is `<think>...</think>` followed by `<answer>...</answer>`."""
    return bool(_FORMAT.match(text or ""))


def parse_choice(text: str, n_options: int) -> int | None:
    """The 1-based option index in `<answer>`, or None when absent, malformed or out of range."""
    answer = answer_text(text)
    if answer is None or not _INTEGER.match(answer):
        return None
    value = int(answer)
    return value if 1 <= value <= int(n_options) else None


def parse_opinion(text: str) -> float | None:
    """The predicted 0-1 index in `<answer>`, or None when absent, malformed or off the scale."""
    answer = answer_text(text)
    if answer is None or not _NUMBER.match(answer):
        return None
    value = float(answer)
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None
