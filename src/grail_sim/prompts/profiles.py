"""The viewer profile paragraph, synthesised from pre-treatment survey answers.

The column -> phrase table (config/prompts/profile_fields.yaml) is data and doubles as the
allow-list of survey columns that may reach a prompt: an unlisted key, or a listed key that looks
post-treatment, fails loudly instead of leaking an outcome into the model's input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from grail_sim.errors import ProfileError

UNAVAILABLE = "Profile information is unavailable."




@dataclass(frozen=True)
class FieldRule:
    group: str
    phrase: str = "{value}"
    values: Mapping[str, str] = field(default_factory=dict)
    render: bool = True
    lower: bool = False
    number: bool = False


@dataclass(frozen=True)
class ProfileTable:
    fields: Mapping[str, FieldRule]
    groups: Mapping[str, str]
    missing_values: frozenset[str]
    post_treatment_patterns: tuple[str, ...]
    opinion_scale: Mapping[str, Mapping[str, str]]
    opinion_sentence: str
    source: str = "<inline>"

    def post_treatment_match(self, key: str) -> str | None:
        for pattern in self.post_treatment_patterns:
            if re.search(pattern, key):
                return pattern
        return None

    def scale(self, issue: str) -> Mapping[str, str]:
        if issue not in self.opinion_scale:
            raise ProfileError(f"{self.source}: opinion_scale has no entry for issue {issue!r}")
        return self.opinion_scale[issue]


def load_profile_table(path: str | Path) -> ProfileTable:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile phrase table not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return profile_table_from_dict(data, source=str(path))


def profile_table_from_dict(data: Mapping[str, Any], source: str = "<inline>") -> ProfileTable:
    for key in ("fields", "groups", "opinion_scale"):
        if not isinstance(data.get(key), Mapping):
            raise ProfileError(f"{source}: missing or non-mapping key {key!r}")
    groups = {str(k): str(v) for k, v in data["groups"].items()}
    patterns = tuple(str(p) for p in data.get("post_treatment_patterns", []))
    fields: dict[str, FieldRule] = {}
    for column, spec in data["fields"].items():
        column = str(column)
        if not isinstance(spec, Mapping):
            raise ProfileError(f"{source}: fields.{column} must be a mapping")
        unknown = set(spec) - {"group", "phrase", "values", "render", "lower", "number"}
        if unknown:
            raise ProfileError(f"{source}: fields.{column} has unknown keys {sorted(unknown)}")
        group = str(spec.get("group", ""))
        if group not in groups:
            raise ProfileError(f"{source}: fields.{column}.group {group!r} is not one of {sorted(groups)}")
        for pattern in patterns:
            if re.search(pattern, column):
                raise ProfileError(
                    f"{source}: fields.{column} looks post-treatment (matches {pattern!r}); only wave-1 "
                    "survey columns may enter a profile"
                )
        fields[column] = FieldRule(
            group=group,
            phrase=str(spec.get("phrase", "{value}")),
            values={str(k).strip().lower(): str(v) for k, v in (spec.get("values") or {}).items()},
            render=bool(spec.get("render", True)),
            lower=bool(spec.get("lower", False)),
            number=bool(spec.get("number", False)),
        )
    scale = {str(k): dict(v) for k, v in data["opinion_scale"].items() if isinstance(v, Mapping)}
    for issue, entry in scale.items():
        missing = {"topic", "low", "high"} - set(entry)
        if missing:
            raise ProfileError(f"{source}: opinion_scale.{issue} lacks {sorted(missing)}")
    sentence = str(data["opinion_scale"].get("sentence", "Pre-study {topic} index {value:.2f} (0 = {low}, 1 = {high})."))
    missing_values = frozenset(str(v).strip().lower() for v in data.get("missing_values", []))
    return ProfileTable(fields, groups, missing_values, patterns, scale, sentence, source)


def check_profile_keys(profile: Mapping[str, Any], table: ProfileTable, row_id: str) -> None:
    """Fail naming the row and key when a profile carries a column outside the allow-list."""
    for key in profile:
        pattern = table.post_treatment_match(str(key))
        if pattern is not None:
            raise ProfileError(
                f"row {row_id}: profile key {key!r} looks post-treatment (matches {pattern!r}); "
                "the clean stage must keep wave-2 answers out of `profile`"
            )
        if key not in table.fields:
            raise ProfileError(
                f"row {row_id}: profile key {key!r} is not in the pre-treatment allow-list "
                f"{table.source} (add it there only if it is a wave-1 survey column)"
            )


def _clean_value(raw: Any, rule: FieldRule, table: ProfileTable) -> str | None:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = " ".join(str(raw).split())
    if text.lower() in table.missing_values:
        return None
    if rule.number:
        try:
            number = float(text)
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        text = str(int(number)) if number.is_integer() else f"{number:g}"
    mapped = rule.values.get(text.lower())
    if mapped is not None:
        return mapped
    return text.lower() if rule.lower else text


def render_profile(
    profile: Mapping[str, Any],
    table: ProfileTable,
    *,
    issue: str,
    opinion_before: float | None = None,
    row_id: str = "?",
) -> str:
    """One paragraph: a sentence per group in table order, then the labelled pre-study index."""
    check_profile_keys(profile, table, row_id)
    phrases: dict[str, list[str]] = {group: [] for group in table.groups}
    for column, rule in table.fields.items():
        if not rule.render or column not in profile:
            continue
        value = _clean_value(profile[column], rule, table)
        if value is None:
            continue
        phrase = rule.phrase.replace("{value}", value)
        if phrase not in phrases[rule.group]:
            phrases[rule.group].append(phrase)
    sentences = [f"{table.groups[g]}: {', '.join(p)}." for g, p in phrases.items() if p]
    if opinion_before is not None and isinstance(opinion_before, (int, float)) and math.isfinite(opinion_before):
        scale = dict(table.scale(issue))
        scale.setdefault("index_name", scale["topic"])
        sentences.append(table.opinion_sentence.format(value=float(opinion_before), **scale))
    return " ".join(sentences) if sentences else UNAVAILABLE
