"""The one answer format: its parser, shared by the rewards and the evaluation, and its writer,
shared by the supervised targets (sft, the warm-up) and the think-forced scoring.

Next-video answers: `<think>...</think><answer>N</answer>` with N in 1..n_options.
Opinion answers: `<think>...</think><answer>0.42</answer>`, a post-study index on the 0-1 scale,
or `<answer>increase</answer>` (one of `DIRECTIONS`) when the prompt asks for the direction.
An answer that is missing, out of range or not a bare number parses to None, never to a fallback.
"""

from __future__ import annotations

import math
import re

_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL | re.IGNORECASE)
_INTEGER = re.compile(r"^[+]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_DIRECTION = re.compile(r"^(increase|decrease|no[ _-]change)$", re.IGNORECASE)

# The one tuple of direction labels: the prompts ask for them, `rows.opinion_direction` returns them
# and the metrics count them. `no_change` is spelled with an underscore everywhere.
DIRECTIONS = ("increase", "decrease", "no_change")


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


def parse_direction(text: str) -> str | None:
    """The direction label in the last `<answer>`: one of `DIRECTIONS`, or None.

    Case is ignored, and "no change" / "no-change" are read as `no_change`: they are spellings of
    the label the prompt asks for, not other words. Synonyms ("unchanged", "up", "same"), inflections
    ("increased") and extra text ("increase." or "I think increase") are refused like a malformed
    number is, so the parse rate measures whether the policy followed the instruction; an unparsed
    answer is never replaced by a default direction.
    """
    answer = answer_text(text)
    if answer is None:
        return None
    found = _DIRECTION.match(answer)
    if not found:
        return None
    label = found.group(1).lower()
    return "no_change" if label.startswith("no") else label


# The fields a think template may use, with the value a template is checked against.
THINK_FIELDS = {"index": 1, "title": "", "short_title": "", "channel": ""}


def think_text(template: str, index: int, item: dict | None) -> str:
    """A think template filled for one option: `{index}` (1-based), `{title}`, `{short_title}` (its
    first 5 words) and `{channel}` from the option's slate item (empty when unknown)."""
    item = item or {}
    title = str(item.get("title") or "").strip()
    return template.format(index=int(index), title=title, short_title=" ".join(title.split()[:5]),
                           channel=str(item.get("channel") or "").strip())


def think_template_problem(template: str) -> str | None:
    """Why `template` cannot be filled by `think_text` (an unknown field or bad braces), or None."""
    try:
        template.format(**THINK_FIELDS)
    except (KeyError, IndexError, ValueError) as err:
        return (f"think_template {template!r} uses an unknown field or bad braces ({err}); "
                f"fields: {', '.join(THINK_FIELDS)}")
    return None


def reply(think: str, answer: str) -> str:
    """The whole reply the prompts ask for: `<think>{think}</think><answer>{answer}</answer>`."""
    return f"<think>{think}</think><answer>{answer}</answer>"
