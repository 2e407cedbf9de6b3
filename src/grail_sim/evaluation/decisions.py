"""A next-video row read as a `Decision`: its options (each "title channel" with its metadata), the
viewer's profile, current video and history, and the gold position, for the baselines (baselines.py)
to score the same way as the policy.

Options come from `slate_items` when filled, else from the numbered lines under the OPTIONS header
of the last user message; the context before OPTIONS is cut into profile, current video and
history by its section headers (ours: PROFILE / CURRENT VIDEO / HISTORY; the imported real rows':
VIEWER / CURRENTLY WATCHING / RECENTLY WATCHED / SURVEY HIGHLIGHTS), and the `viewer_profile` and
`history` columns replace the parsed text when filled. Both routes give an option the same text
("title channel"), so a row scores the same with or without its structured columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from grail_sim.errors import EvaluationError
from grail_sim.rows import finite, json_list

FORMAT_WORDS = ("channel", "length", "long", "watched", "complete", "views", "likes", "comments", "engagement",
                "unknown", "video", "none", "available", "recently")
_OPTIONS_HEADER = re.compile(r"^[ \t]*OPTIONS:?[ \t]*$", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*(\d+)[.)]\s+(.*\S)\s*$")
_SECTIONS = (  # (section, header at the start of a line); text before any header is profile
    ("current", re.compile(r"^\s*(?:CURRENT VIDEO|CURRENTLY WATCHING)\b:?")),
    ("history", re.compile(r"^\s*(?:HISTORY|RECENTLY WATCHED)\b(?:\s*\([^)]*\))?:?")),
    ("profile", re.compile(r"^\s*(?:PROFILE|VIEWER|SURVEY HIGHLIGHTS)\b:?")),
)
_COUNT = {name: re.compile(rf"\b{name}\s+([\d,]+)") for name in ("views", "likes")}
_RIGHT = re.compile(r"\b(?:conservative|republican)s?\b")
_LEFT = re.compile(r"\b(?:liberal|democrat|democratic|progressive)s?\b")


@dataclass
class Decision:
    """One row as the choice model reads it: the viewer context and the options as text."""

    row_id: str
    n: int
    gold: int | None
    profile: str
    current: dict  # text, channel (as every history item and option)
    history: list[dict]
    options: list[dict]  # text, channel, views, likes, duration
    opinion: float | None
    ideology: float


def row_label(row: Mapping[str, Any]) -> str:
    """The row's id for error messages ("?" without one)."""
    return str(row.get("id") or "?")


def n_options(row: Mapping[str, Any]) -> int:
    """The row's option count; a row without a usable one cannot get a distribution."""
    n = finite(row.get("n_options"))
    if n is None or n < 1 or n != int(n):
        raise EvaluationError(f"row {row_label(row)}: needs a positive integer 'n_options' "
                              f"(got {row.get('n_options')!r})")
    return int(n)


def _split_meta(line: str) -> tuple[str, str, str]:
    """(title, the trailing parenthetical's content, what follows a ' — ' engagement tail).

    Titles can hold parentheses ("(Part 2)"), so the metadata is the last balanced group.
    """
    line, _, tail = line.partition(" — ")
    line = line.rstrip()
    if not line.endswith(")"):
        return line, "", tail
    depth = 0
    for i in range(len(line) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(line[i], 0)
        if depth == 0:
            return line[:i].rstrip(), line[i + 1:-1], tail
    return line, "", tail


def _channel_of(meta: str) -> str:
    """The channel named in a metadata group, in our format or the imported rows' format."""
    if "channel:" in meta:
        return meta.split("channel:", 1)[1].split(";")[0].strip()
    if re.search(r"\bfrom\s", meta):
        return re.split(r"\bfrom\s", meta)[-1].strip()
    first = re.split(r"[;,]", meta)[0].strip()
    return "" if re.match(r"^(?:watched|\d)", first) else first


def _duration_of(meta: str) -> float | None:
    clock = re.search(r"length:\s*(?:(\d+):)?(\d+):(\d\d)\b", meta)
    if clock:
        return 3600.0 * int(clock.group(1) or 0) + 60.0 * int(clock.group(2)) + int(clock.group(3))
    seconds = re.search(r"\b(\d+(?:\.\d+)?)s long\b", meta)
    return float(seconds.group(1)) if seconds else None


def parse_item(line: str) -> dict:
    """An option or history line ("title (metadata) — engagement") as the model's option fields."""
    title, meta, tail = _split_meta(line)
    channel = _channel_of(meta)
    counts = {name: pattern.search(tail) for name, pattern in _COUNT.items()}
    counts = {name: float(m.group(1).replace(",", "")) if m else None for name, m in counts.items()}
    return {"text": f"{title} {channel}".strip(), "channel": channel.lower(), **counts, "duration": _duration_of(meta)}


def _structured_item(item: Mapping[str, Any]) -> dict:
    title = " ".join(str(item.get("title") or item.get("id") or "").split())
    channel = " ".join(str(item.get("channel") or "").split())
    return {"text": f"{title} {channel}".strip(), "channel": channel.lower(), "views": finite(item.get("view_count")),
            "likes": finite(item.get("like_count")), "duration": finite(item.get("duration_s"))}


def _sections(context: str) -> dict[str, list[str]]:
    """The context's lines by section; a header's own line keeps what follows the header."""
    out, section = {"profile": [], "current": [], "history": []}, "profile"
    for line in context.splitlines():
        for name, header in _SECTIONS:
            match = header.match(line)
            if match:
                section, line = name, line[match.end():]
                break
        if line.strip():
            out[section].append(line.strip())
    return out


def _ideology(profile: str) -> float:
    """+1 conservative ... -1 liberal: the share of leaning words in the profile, 0 when none."""
    text = profile.lower()
    right, left = len(_RIGHT.findall(text)), len(_LEFT.findall(text))
    return (right - left) / (right + left) if right + left else 0.0


def _text_options(row: Mapping[str, Any], text: str) -> tuple[str, list[dict] | None]:
    """The context before OPTIONS and the numbered option lines under it (None without OPTIONS)."""
    header = list(_OPTIONS_HEADER.finditer(text))
    if not header:
        return text, None
    context, block = text[:header[-1].start()], text[header[-1].end():]
    options = []
    for line in block.lstrip("\n").splitlines():
        match = _NUMBERED.match(line)
        if not match:
            break
        if int(match.group(1)) != len(options) + 1:
            raise EvaluationError(f"row {row_label(row)}: OPTIONS line {line[:60]!r} is out of order")
        options.append(parse_item(match.group(2)))
    return context, options


def _options(row: Mapping[str, Any], text_options: list[dict] | None, n: int) -> list[dict]:
    row_id = row_label(row)
    slate = [item for item in json_list(row.get("slate_items"), "slate_items", row_id) if isinstance(item, Mapping)]
    if text_options is not None and len(text_options) != n:
        raise EvaluationError(f"row {row_id}: the OPTIONS section lists {len(text_options)} options "
                              f"but n_options is {n}")
    if slate and len(slate) != n:
        raise EvaluationError(f"row {row_id}: slate_items holds {len(slate)} options but n_options is {n}")
    if not slate and text_options is None:
        raise EvaluationError(f"row {row_id}: no slate_items and no OPTIONS section in the last user message")
    return [_structured_item(item) for item in slate] if slate else text_options


def _last_user_text(row: Mapping[str, Any]) -> str:
    messages = row.get("prompt")  # a list, or an array when the rows come from a parquet frame
    users = [m for m in (list(messages) if messages is not None else []) if isinstance(m, Mapping)
             and m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def viewer_text(row: Mapping[str, Any]) -> str:
    """The viewer's profile paragraph, or for an imported row without one the user message's
    context before its OPTIONS (where the profile is stated); opinion rows included."""
    if row.get("viewer_profile"):
        return str(row["viewer_profile"])
    return _text_options(row, _last_user_text(row))[0]


def decision(row: Mapping[str, Any]) -> Decision:
    """A row as a `Decision`: structured columns where filled, the prompt text otherwise."""
    row_id, n = row_label(row), n_options(row)
    context, text_options = _text_options(row, _last_user_text(row))
    options = _options(row, text_options, n)
    sections = _sections(context)
    profile = " ".join(str(row.get("viewer_profile") or "").split()) or " ".join(sections["profile"])
    history_json = [h for h in json_list(row.get("history"), "history", row_id) if isinstance(h, Mapping)]
    history = ([_structured_item(h) for h in history_json] if history_json
               else [parse_item(m.group(2)) for m in map(_NUMBERED.match, sections["history"]) if m])
    current = parse_item(" ".join(sections["current"])) if sections["current"] else {"text": "", "channel": ""}
    gold, opinion = finite(row.get("gold_index")), finite(row.get("opinion_before"))
    return Decision(row_id=row_id, n=n, gold=int(gold) if gold is not None else None, profile=profile,
                    current=current, history=history, options=options, opinion=opinion, ideology=_ideology(profile))


def drop_reason(row: Mapping[str, Any]) -> str | None:
    """Why a train row teaches nothing about choices (n_options < 2, gold outside 1..n), or None."""
    n, gold = finite(row.get("n_options")), finite(row.get("gold_index"))
    if n is None or n < 2:
        return "n_options_below_2"
    return "gold_outside_1_to_n" if gold is None or not 1 <= gold <= n else None
