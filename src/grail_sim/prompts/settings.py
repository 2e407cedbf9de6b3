"""Prompt settings: the system-prompt templates, the profile phrase table and the rendering limits of one build.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from grail_sim.errors import PromptError
from grail_sim.prompts.profiles import ProfileTable, load_profile_table

LOG = logging.getLogger(__name__)






OPINION_TARGETS = ("index", "direction")


REPO_ROOT = Path(__file__).resolve().parents[3]


DEFAULT_PROMPT_DIR = Path("config/prompts")


@dataclass(frozen=True)
class PromptSettings:
    """Everything that decides a prompt's text. Build it with `load_settings`."""

    profile_table: ProfileTable
    system_templates: Mapping[str, str]  # "next_video", "opinion_index", "opinion_direction": Jinja2
    max_history: int = 12  # most recent prior watches shown; 0 = full history
    show_ids: bool = False
    max_prompt_tokens: int = 1024
    opinion_target: str = "index"
    direction_tolerance: float = 1e-6
    max_missing_metadata_gap: float = 0.25
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


def load_settings(
    section: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
) -> PromptSettings:
    """Settings from the config's `prompts:` section (all keys optional), then the environment.

    `GRAIL_MAX_HISTORY` and `GRAIL_SHOW_IDS=1` win over the config, as in the earlier reference,
    so a cluster job can change them without editing config; the effective values are logged and
    recorded in stats.json.
    """
    section = dict(section or {})
    env = os.environ if env is None else env
    templates = {
        "next_video": DEFAULT_PROMPT_DIR / "next_video_system.j2",
        "opinion_index": DEFAULT_PROMPT_DIR / "opinion_index_system.j2",
        "opinion_direction": DEFAULT_PROMPT_DIR / "opinion_direction_system.j2",
    }
    for key, value in (section.get("system_prompts") or {}).items():
        if key not in templates:
            raise PromptError(f"prompts.system_prompts: unknown task {key!r}; valid: {sorted(templates)}")
        templates[key] = Path(value)
    texts, sources = {}, {}
    for key, path in templates.items():
        resolved = _resolve(path)
        if not resolved.is_file():
            raise PromptError(f"prompts.system_prompts.{key}: file not found: {path}")
        texts[key] = resolved.read_text(encoding="utf-8")
        sources[key] = str(path)
    table_path = section.get("profile_fields", DEFAULT_PROMPT_DIR / "profile_fields.yaml")
    sources["profile_fields"] = str(table_path)
    max_history = int(section.get("max_history", 12))
    show_ids = bool(section.get("show_ids", False))
    if env.get("GRAIL_MAX_HISTORY", "").strip():
        try:
            max_history = int(env["GRAIL_MAX_HISTORY"])
        except ValueError:
            raise PromptError(f"GRAIL_MAX_HISTORY must be an integer, got {env['GRAIL_MAX_HISTORY']!r}") from None
        LOG.info("GRAIL_MAX_HISTORY=%d overrides prompts.max_history", max_history)
    if env.get("GRAIL_SHOW_IDS", "").strip():
        show_ids = env["GRAIL_SHOW_IDS"].strip().lower() in {"1", "true", "yes"}
        LOG.info("GRAIL_SHOW_IDS=%s overrides prompts.show_ids", env["GRAIL_SHOW_IDS"])
    if max_history < 0:
        raise PromptError(f"prompts.max_history must be >= 0 (0 = full history), got {max_history}")
    target = str(section.get("opinion_target", "index"))
    if target not in OPINION_TARGETS:
        raise PromptError(f"prompts.opinion_target must be one of {OPINION_TARGETS}, got {target!r}")
    max_tokens = int(section.get("max_prompt_tokens", 1024))
    if max_tokens < 1:
        raise PromptError(f"prompts.max_prompt_tokens must be positive, got {max_tokens}")
    return PromptSettings(
        profile_table=load_profile_table(_resolve(table_path)),
        system_templates=texts,
        max_history=max_history,
        show_ids=show_ids,
        max_prompt_tokens=max_tokens,
        opinion_target=target,
        direction_tolerance=float(section.get("direction_tolerance", 1e-6)),
        max_missing_metadata_gap=float(section.get("max_missing_metadata_gap", 0.25)),
        sources=sources,
    )


TokenCounter = Callable[[list[list[dict]]], list[int]]


COUNT_BATCH = 256  # prompts per tokenizer call: the fast tokenizer batches in Rust


def tokenizer_counter(tokenizer_dir: str | Path) -> TokenCounter:
    """Prompt tokens as the model sees them: chat template plus generation prompt."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    has_template = bool(getattr(tokenizer, "chat_template", None))

    def count(batch: list[list[dict]]) -> list[int]:
        if has_template:
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        else:
            texts = ["\n\n".join(msg["content"] for msg in m) for m in batch]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count
