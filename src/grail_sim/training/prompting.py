"""Recipe overrides of how prompts reach the policy, as the seed launchers offer them:
`chat_template` (a Jinja file or inline template, set on the tokenizer) and `system_prompt` (the
system message of every training prompt, in place of the prompts stage's).

Both are recorded in OUT/final/grail_sim.json (`PROMPT_OVERRIDES_KEY`). The saved tokenizer carries
the chat template, and evaluation puts the recorded system prompt on the rows of the task the policy
was trained on (`evaluation.evaluate`), so a model is scored with the prompts it learned from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from grail_sim.errors import RecipeError
from grail_sim.model.loading import trained_system_prompt


def chat_template_text(value: str) -> tuple[str, str]:
    """(template, source): inline Jinja when `value` contains a Jinja tag, else the file it names."""
    if "{%" in value or "{{" in value:
        return value, "inline"
    path = Path(value)
    if not path.is_file():
        raise RecipeError(f"chat_template {value!r} is neither a Jinja template nor an existing file")
    return path.read_text(encoding="utf-8"), str(path)


def apply_chat_template(tokenizer, value: str | None) -> dict | None:
    """Set the recipe's chat template on `tokenizer` (checked by rendering a two-message chat); the
    record kept in provenance, or None when the recipe sets none."""
    if value is None:
        return None
    template, source = chat_template_text(value)
    tokenizer.chat_template = template
    try:
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                      tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja2 raises several types for a broken template
        raise RecipeError(f"chat_template from {source} does not render a chat: {type(err).__name__}: {err}") from None
    return {"source": source, "sha256": hashlib.sha256(template.encode("utf-8")).hexdigest()}


def prompt_overrides(config, tokenizer, start_model: str) -> dict:
    """Apply the recipe's chat template to `tokenizer`, and return what provenance records:
    {"chat_template": record or None, "system_prompt": text or None}. An RL run without its own
    system prompt keeps the one its start model (sft's adapter) was trained with."""
    record = apply_chat_template(tokenizer, config.chat_template)
    system = config.system_prompt or trained_system_prompt(start_model)
    return {"chat_template": record, "system_prompt": system}
