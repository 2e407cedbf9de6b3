"""Training recipe files: the registered trainers, a recipe's `base:` chain, and which keys a trainer
reads. Light on purpose: the workflow's planning imports it (every Slurm job parses the Snakefile),
so TRL's classes (`grail_sim.training.arguments`) and the parser (`grail_sim.training.parser`) load
only where a recipe is parsed.

A recipe is a flat YAML mapping of fields of TRL's `ScriptArguments`, `ModelConfig` and `GRPOConfig`
(or `SFTConfig` for `trainer: sft`), as subclassed in `grail_sim.training.arguments`; `grail-sim
train --help` lists grail-sim's own. It may name a parent in `base:`, a path relative to the file:
the parent's values apply first, the file's over them (a mapping value merges key by key).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from grail_sim.errors import RecipeError
from grail_sim.io import read_yaml_mapping

SFT = "sft"
GRAIL = "grail"
MAXENT = "maxent"
# The registered trainers: a recipe's `trainer` must name one (docs/extending.md adds another).
TRAINERS = {
    SFT: "behaviour cloning of the human choice with TRL's SFTTrainer",
    "grpo": "TRL's GRPO on the recipe's reward functions",
    GRAIL: "GRPO plus GRAIL's online discriminator reward (the gail_* fields)",
    MAXENT: "the MaxEnt-GRPO objective (grail_sim.training.trainers.MaxEntGRPOTrainer; the maxent_* fields)",
    "grpo-entropy": "GRPO with TRL's entropy bonus (entropy_coef)",
}
# Fields only one trainer reads: setting one in another trainer's recipe fails naming it, and the
# workflow passes a `train.overrides` key with the prefix to that trainer's jobs only.
TRAINER_PREFIXES = {"gail_": GRAIL, "maxent_": MAXENT}
BASE_KEY = "base"  # a recipe file's parent recipe, a path relative to the file


def recipe_chain(path: str | os.PathLike) -> list[Path]:
    """The recipe file and the files it inherits from through `base:`, the file first."""
    chain = [Path(path)]
    while True:
        parent = read_yaml_mapping(chain[-1], what="recipe", error=RecipeError).get(BASE_KEY)
        if parent is None:
            return chain
        parent_path = (chain[-1].parent / str(parent)).resolve()
        if parent_path in [p.resolve() for p in chain]:
            raise RecipeError(f"recipe {path}: {BASE_KEY}: {parent} makes a loop ({' -> '.join(map(str, chain))})")
        chain.append(parent_path)


def merged(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict:
    """`child` over `base`: a mapping in both merges key by key, any other value replaces."""
    out = dict(base)
    for key, value in child.items():
        out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else value
    return out


def read_recipe(path: str | os.PathLike) -> dict:
    """A recipe with what it inherits: its bases' values, then its own over them (`base:` removed)."""
    recipe: dict = {}
    for link in reversed(recipe_chain(path)):
        recipe = merged(recipe, read_yaml_mapping(link, what="recipe", error=RecipeError))
    recipe.pop(BASE_KEY, None)
    return recipe


def check_trainer(trainer: Any, source: str) -> str:
    """`trainer` when it names a registered trainer; else a RecipeError naming `source` and the choices."""
    if trainer not in TRAINERS:
        problem = "has no trainer: key" if trainer is None else f"names trainer {trainer!r}"
        raise RecipeError(f"{source} {problem}; one of {', '.join(TRAINERS)} is required")
    return str(trainer)


def prefix_owner(key: str) -> str | None:
    """The one trainer that reads `key` (`gail_weight`: grail), or None for a key any trainer may read."""
    return next((trainer for prefix, trainer in TRAINER_PREFIXES.items() if key.startswith(prefix)), None)
