"""Training recipes: TRL `GRPOConfig` fields plus grail-sim's own keys, loaded from YAML with
`--set key=value` overrides; an unknown key fails naming it and the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

from grail_sim.errors import RecipeError

TRAINERS = ("grpo", "grail", "maxent")


SECRET_KEYS = ("hub_token", "push_to_hub_token")


# This script's own recipe keys and their defaults; everything else must be a GRPOConfig field.
SCRIPT_DEFAULTS: dict[str, Any] = {
    "trainer": None,  # label recorded in outputs: grpo / grail / maxent (default: the recipe's file stem)
    "dtype": "float32",  # policy weights; float32 on CPU, bfloat16 on GPU
    "rewards": ["answer_accuracy", "format"],
    "train_split": "train",
    "max_train_rows": None,  # cap on training rows (after a seeded shuffle)
    "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05,
             "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    "warmup_sft": {"enabled": False, "steps": 40, "batch_size": 8, "learning_rate": 1e-3,
                   "think_template": "Option {index} fits this viewer.", "max_prompt_tokens": 1024,
                   "balance_positions": False},
    "gail": None,  # GRAIL: see grail_sim.discriminator.GailSettings
    "heldout_rows": 0,  # >0: greedy accuracy on this many validation rows before and after training
    # GPU nodes, `use_vllm: true` + `vllm_mode: server`: see grail_sim.vllm_server.
    "accelerate_config": None,  # e.g. config/accelerate/ddp.yaml, zero2.yaml, zero3.yaml
    "vllm_server": {"timeout_s": 900, "gpu_memory_utilization": 0.9, "dtype": "auto", "max_model_len": None,
                    "extra_args": [], "log": None},
}


SCRIPT_KEYS = tuple(SCRIPT_DEFAULTS)


SECTION_KEYS = {
    "lora": {"enabled", "r", "alpha", "dropout", "target_modules"},
    "warmup_sft": {"enabled", "steps", "batch_size", "learning_rate", "think_template", "max_prompt_tokens",
                   "balance_positions"},
    "vllm_server": {"timeout_s", "gpu_memory_utilization", "dtype", "max_model_len", "extra_args", "log"},
}


def _grpo_fields() -> dict[str, dataclasses.Field]:
    from trl import GRPOConfig

    return {f.name: f for f in dataclasses.fields(GRPOConfig) if f.init}


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` (dotted keys reach nested sections: `gail.weight=0.5`); the value is YAML."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RecipeError(f"--set {text!r}: empty key")
    return key, yaml.safe_load(raw) if raw.strip() else None


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None,
                max_steps: int | None = None) -> tuple[dict, dict]:
    """Recipe file + overrides -> (script arguments, GRPOConfig keyword arguments).

    Unknown keys fail naming the key and file; nested sections (`lora`, `warmup_sft`, `gail`) are
    merged over the defaults.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys to values")
    for text in overrides or []:
        key, value = parse_override(text)
        target = recipe
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise RecipeError(f"--set {text!r}: {part!r} is not a section")
        target[parts[-1]] = value
    if max_steps is not None:
        recipe["max_steps"] = int(max_steps)

    grpo_fields = _grpo_fields()
    unknown = sorted(key for key in recipe if key not in SCRIPT_DEFAULTS and key not in grpo_fields)
    if unknown:
        raise RecipeError(
            f"unknown key(s) {unknown} in recipe {path}: a key must be one of this script's "
            f"({', '.join(SCRIPT_KEYS)}) or a TRL GRPOConfig field"
        )
    script = json.loads(json.dumps(SCRIPT_DEFAULTS))
    for key, value in recipe.items():
        if key not in SCRIPT_DEFAULTS:
            continue
        if key in SECTION_KEYS:
            allowed = SECTION_KEYS[key]
            value = value or {}
            if not isinstance(value, dict):
                raise RecipeError(f"recipe {path}: {key!r} must be a mapping")
            extra = sorted(set(value) - allowed)
            if extra:
                raise RecipeError(f"unknown key(s) {extra} in section {key!r} of recipe {path}; valid: {sorted(allowed)}")
            script[key].update(value)
        else:
            script[key] = value
    if script["trainer"] is None:
        script["trainer"] = path.stem
    grpo = {key: value for key, value in recipe.items() if key in grpo_fields}
    if "output_dir" in grpo:
        raise RecipeError(f"recipe {path}: output_dir comes from --out, remove it from the recipe")
    if isinstance(script["rewards"], str):
        script["rewards"] = [script["rewards"]]
    return script, grpo


def redact(mapping: dict) -> dict:
    return {key: ("***" if key in SECRET_KEYS and value else value) for key, value in mapping.items()}
