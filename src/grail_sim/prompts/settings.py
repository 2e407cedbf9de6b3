"""Prompt settings: the system-prompt templates, the profile phrase table and the rendering limits of one build.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from grail_sim.config import resolve_section
from grail_sim.errors import PromptError
from grail_sim.prompts.profiles import ProfileTable, load_profile_table

LOG = logging.getLogger(__name__)








REPO_ROOT = Path(__file__).resolve().parents[3]



@dataclass(frozen=True)
class PromptSettings:
    """Everything that decides a prompt's text. Build it with `load_settings`."""

    profile_table: ProfileTable
    system_templates: Mapping[str, str]  # "next_video", "opinion_index", "opinion_direction": Jinja2
    # The values below have their defaults and help in the config schema (`prompts:` section).
    max_history: int  # most recent prior watches shown; 0 = full history
    show_ids: bool
    max_prompt_tokens: int
    opinion_target: str  # index or direction
    direction_tolerance: float
    max_missing_metadata_gap: float
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


def load_settings(section: Mapping[str, Any] | None = None) -> PromptSettings:
    """Settings from the config's `prompts:` section, validated against the schema with its
    defaults filled (`grail_sim.config`); environment overrides are applied where the config is
    resolved, not here. The effective values are recorded in stats.json."""
    section = resolve_section("prompts", section)
    templates, sources = {}, {}
    for key, path in section["system_prompts"].items():
        resolved = _resolve(path)
        if not resolved.is_file():
            raise PromptError(f"prompts.system_prompts.{key}: file not found: {path}")
        templates[key] = resolved.read_text(encoding="utf-8")
        sources[key] = str(path)
    sources["profile_fields"] = str(section["profile_fields"])
    return PromptSettings(
        profile_table=load_profile_table(_resolve(section["profile_fields"])),
        system_templates=templates,
        max_history=section["max_history"],
        show_ids=section["show_ids"],
        max_prompt_tokens=section["max_prompt_tokens"],
        opinion_target=section["opinion_target"],
        direction_tolerance=section["direction_tolerance"],
        max_missing_metadata_gap=section["max_missing_metadata_gap"],
        sources=sources,
    )


TokenCounter = Callable[[list[list[dict]]], list[int]]


COUNT_BATCH = 256  # prompts per tokenizer call: the fast tokenizer batches in Rust


def tokenizer_counter(tokenizer_dir: str | Path) -> TokenCounter:
    """Prompt tokens as the model sees them: chat template plus generation prompt.

    The folder is checked now and the tokenizer loaded at the first count, so that a build's
    input checks (columns, rows) fail before the seconds a tokenizer takes to load.
    """
    if not Path(tokenizer_dir).is_dir():
        raise PromptError(f"tokenizer folder not found: {tokenizer_dir} (a model folder, e.g. results/models/base)")

    @functools.lru_cache(maxsize=1)
    def load():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        return tokenizer, bool(getattr(tokenizer, "chat_template", None))

    def count(batch: list[list[dict]]) -> list[int]:
        tokenizer, has_template = load()
        if has_template:
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        else:
            texts = ["\n\n".join(msg["content"] for msg in m) for m in batch]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count
