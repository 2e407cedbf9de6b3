"""The one answer format: its parser, shared by the rewards and the evaluation, and its writer,
shared by the supervised targets (sft, the warm-up) and the think-forced scoring.

Next-video answers: `<think>...</think><answer>N</answer>` with N in 1..n_options.
Opinion answers: `<think>...</think><answer>0.42</answer>`, a post-study index on the 0-1 scale,
or `<answer>increase</answer>` (one of `DIRECTIONS`) when the prompt asks for the direction.
Math answers (the verifiable task): the `<answer>` content compared after `canonical_answer`, or a
`\\boxed{...}` answer (`boxed_text`) for recipes that ask for that style; a math row's worked
solution ends in `The answer is \\boxed{...}.` (`solution_text`), generated or imported alike.
An answer that is missing, out of range or not a bare number parses to None, never to a fallback.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL | re.IGNORECASE)
_INTEGER = re.compile(r"^[+]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_DIRECTION = re.compile(r"^(increase|decrease|no[ _-]change)$", re.IGNORECASE)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")
_FRACTION = re.compile(r"^([+-]?\d+)\s*/\s*(\d+)$")

# The one tuple of direction labels: the prompts ask for them, `rows.opinion_direction` returns them
# and the metrics count them. `no_change` is spelled with an underscore everywhere.
DIRECTIONS = ("increase", "decrease", "no_change")


def answer_text(text: str) -> str | None:
    """Content of the last `<answer>` tag, or None."""
    found = _ANSWER.findall(text or "")
    return found[-1] if found else None


def canonical_answer(text: str | None) -> str | None:
    """A math answer in one spelling, so that equal answers compare equal as strings.

    Numbers become their exact value, written as an integer or a reduced fraction: "1,234" -> "1234"
    (thousands separators), "7." and "7.00" -> "7" (trailing zeros), "-0" -> "0", "2/4" and "0.5" ->
    "1/2", "3.50" and "7/2" -> "7/2". Other text is lower-cased with its whitespace collapsed
    ("  Paris " -> "paris"). None or empty -> None.
    """
    if text is None:
        return None
    value = " ".join(str(text).split()).strip().rstrip(".")
    if not value:
        return None
    number = value.replace(",", "") if _THOUSANDS.match(value) else value
    fraction = _FRACTION.match(number)
    try:
        if fraction:
            exact = Fraction(int(fraction.group(1)), int(fraction.group(2)))
        elif _NUMBER.match(number):
            exact = Fraction(number)
        else:
            return value.lower()
    except (ValueError, ZeroDivisionError):
        return value.lower()
    return str(exact.numerator) if exact.denominator == 1 else f"{exact.numerator}/{exact.denominator}"


def latex_answer(text: str | None) -> str:
    """A math answer as LaTeX, for `\\boxed{}` and math-verify: its canonical form, with a fraction
    written `\\frac{a}{b}` ("" for no answer)."""
    canonical = canonical_answer(text) or ""
    fraction = _FRACTION.match(canonical)
    return f"\\frac{{{fraction.group(1)}}}{{{fraction.group(2)}}}" if fraction else canonical


# Every math solution ends in this sentence, so that its working can be told from its answer.
ANSWER_SENTENCE = " The answer is \\boxed{"


def solution_text(working: str, answer: str) -> str:
    """A math row's `solution`: the working, then `The answer is \\boxed{answer}.`"""
    return f"{working.strip()}{ANSWER_SENTENCE}{latex_answer(answer)}}}."


def boxed_text(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (nested braces allowed), or None."""
    text = text or ""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for position in range(begin, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            if depth == 0:
                return text[begin:position].strip()
            depth -= 1
    return None


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


def gold_reply(row: dict, template: str) -> str:
    """`<think>short text</think><answer>gold</answer>` for one training row: the sft target. The
    think is `template` filled for the human's choice (`think_text`, which the think-forced scoring
    fills the same way for every option)."""
    gold = int(row["gold_index"])
    item = {}
    slate = row.get("slate_items")
    if slate:
        try:
            items = json.loads(slate) if isinstance(slate, str) else slate
            item = items[gold - 1] if 0 < gold <= len(items) else {}
        except (ValueError, TypeError):
            item = {}
    return reply(think_text(template, gold, item), str(gold))
