"""Reading a recipe and its overrides into TRL's classes, once, with `TrlParser` (as open-r1 reads
`TrlParser((ScriptArguments, GRPOConfig, ModelConfig))`).

One value has three places to be set, and the later wins:

    1. the recipe file (`--config recipe.yaml`, with its `base:` chain)
    2. the workflow config: `train.overrides` (and the environment variables GAIL_WEIGHT, ...
       that `grail_sim.config` puts there), then `train.max_steps`
    3. the command line: TRL's `--key value` flags (`--per_device_train_batch_size 2`)

Layers 1 and 2 become the parser's defaults (TRL's `set_defaults_with_config`), so the command line
wins as argparse makes it. Under them sit the run defaults of this machine (`run_defaults`: CPU
flags, a log line every step). The other spellings of a command-line value are the same flags
written differently: `--set key=value`, a bare `key=value` and the seed launchers' Hydra form
`training.key=value` / `model.key=value`; `--recipe FILE` is `--config FILE`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from trl import TrlParser

from grail_sim.errors import RecipeError
from grail_sim.io import yaml_load
from grail_sim.training.arguments import argument_classes, known_fields, trl_class
from grail_sim.training.recipe import SFT, check_trainer, merged, prefix_owner, read_recipe

LOG = logging.getLogger(__name__)

# The seed launchers' Hydra groups: `training.learning_rate=1e-5` and `model.lora_r=8` are this
# project's `learning_rate` and `lora_r`.
HYDRA_GROUPS = ("training.", "model.")
ASSIGNMENT = re.compile(r"^[A-Za-z_][\w.]*=")
SECRET_KEYS = ("hub_token", "push_to_hub_token")


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: TRL's three argument objects and the values that were set (any layer)."""

    path: str | None
    script: Any  # arguments.DataArguments
    config: Any  # arguments.GrpoRecipe or arguments.SftRecipe (TRL's GRPOConfig / SFTConfig)
    model: Any  # arguments.PolicyModelConfig (TRL's ModelConfig)
    values: dict  # every key set by the recipe, an override or the command line, as resolved

    @property
    def trainer(self) -> str:
        return self.config.trainer

    @property
    def source(self) -> str:
        return f"recipe {self.path}" if self.path else "the command line"


class RecipeParser(TrlParser):
    """TrlParser whose defaults are a recipe's `base:` chain and the workflow's overrides, and whose
    argparse errors are RecipeErrors (one line, exit 2) instead of a usage dump."""

    def __init__(self, trainer: str, recipe_path: str | None, recipe: Mapping[str, Any],
                 overrides: Mapping[str, Any], run_defaults: Mapping[str, Any]):
        super().__init__(argument_classes(trainer), prog="grail-sim train", allow_abbrev=False)
        self.recipe_path = recipe_path
        self.recipe = dict(recipe)  # the file with its base: chain (recipe.read_recipe)
        self.overrides = dict(overrides)
        self.run_defaults = dict(run_defaults)
        self.values: dict = {}

    def set_defaults_with_config(self, **own: Any) -> list[str]:
        # TRL hands over the --config file's own keys (and has set its `env:`); the file's bases
        # apply under them, the run defaults under those, the workflow's overrides over them.
        recipe = self.recipe
        self.values = merged(recipe, self.overrides)
        unknown = sorted(set(self.values) - {action.dest for action in self._actions})
        if unknown:
            where = [f"recipe {self.recipe_path}" for key in unknown if key in recipe][:1] or ["train.overrides"]
            raise RecipeError(f"unknown key(s) {unknown} in {where[0]}: a key is a field of TRL's "
                              f"{', '.join(trl_class(kind).__name__ for kind in self.dataclass_types)} or one of "
                              "grail-sim's (grail-sim train --help)")
        self._check_choices(recipe)
        return super().set_defaults_with_config(**merged(self.run_defaults, self.values))

    def _check_choices(self, recipe: Mapping[str, Any]) -> None:
        """argparse checks a flag's value against the field's choices, never a default: the file's
        and the overrides' values (defaults here) are checked the same way."""
        for action in self._actions:
            value = self.values.get(action.dest)
            if action.choices and action.dest in self.values and value not in action.choices \
                    and str(value) not in {str(choice) for choice in action.choices}:
                where = f"recipe {self.recipe_path}" if action.dest in recipe else "train.overrides"
                raise RecipeError(f"{action.dest} in {where} must be one of "
                                  f"{', '.join(str(choice) for choice in action.choices)}, got {value!r}")

    def parse_recipe_arguments(self, argv: list[str]) -> tuple:
        if "--config" not in argv:
            self.set_defaults_with_config()  # the overrides and run defaults apply without a file too
        try:
            return self.parse_args_and_config(argv)
        except RecipeError:
            raise
        except (TypeError, ValueError) as err:
            message = " ".join(str(err).split())
            if message.startswith("Some specified arguments are not used"):  # HfArgumentParser's words
                raise RecipeError(f"unknown argument(s): {message.split(': ', 1)[-1]}") from None
            # A value TRL's own __post_init__ rejects: one line now, before any model loads.
            raise RecipeError(f"TRL's {self._rejecting_class(err)} rejects it: {message}") from None

    def _rejecting_class(self, err: BaseException) -> str:
        """The TRL class whose __post_init__ raised `err` (the training config when none is found)."""
        for frame, _ in traceback.walk_tb(err.__traceback__):
            owner = frame.f_locals.get("self")
            for kind in self.dataclass_types:
                if isinstance(owner, kind):
                    return trl_class(kind).__name__
        return trl_class(self.dataclass_types[1]).__name__

    def error(self, message: str):  # argparse's, for a bad flag or value
        raise RecipeError(message)


def parse_recipe(argv: Sequence[str], overrides: Mapping[str, Any] | None = None, *,
                 defaults: Callable[[str], Mapping[str, Any]] | None = None) -> Recipe:
    """The recipe that `argv` (TRL's command line: `--config FILE` and flags) names, with the
    workflow's `overrides` (layer 2: those the recipe's trainer reads, `overrides_for`) under the
    command line, and `defaults(trainer)` (the run's defaults on this machine, `run.run_defaults`)
    under the file.

    A bad key or value fails with a RecipeError naming it and the recipe file."""
    argv = _renamed_config(list(argv))
    recipe_path = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    file_values = read_recipe(recipe_path) if recipe_path else {}
    trainer = _trainer(argv, overrides or {}, file_values, recipe_path)
    overrides = overrides_for(trainer, overrides or {}, recipe_path or "the command line")
    parser = RecipeParser(trainer, recipe_path, file_values, overrides, defaults(trainer) if defaults else {})
    source = f"recipe {recipe_path}" if recipe_path else "the command line"
    try:
        argv = command_line(argv, parser)
        script, config, model = parser.parse_recipe_arguments(argv)
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None
    flags = _flag_keys(argv, parser)
    _check_owned_keys(trainer, [*merged(file_values, overrides), *flags], source)
    recipe = Recipe(recipe_path, script, config, model, {})
    values = {key: _plain(_value(recipe, key)) for key in sorted({*parser.values, *flags})}
    recipe = dataclasses.replace(recipe, values=values)
    _check_across(recipe, source)
    return recipe


def _renamed_config(argv: list[str]) -> list[str]:
    """`--recipe FILE` (the workflow's rules before TRL's spelling) as `--config FILE`."""
    return ["--config" if token == "--recipe" else token for token in argv]


def _trainer(argv: list[str], overrides: Mapping[str, Any], recipe: Mapping[str, Any], path: str | None) -> str:
    """The trainer the recipe runs, read before the parser is built (it picks GRPOConfig or SFTConfig):
    the command line's, else the overrides', else the file's."""
    trainer = recipe.get("trainer")
    trainer = overrides.get("trainer", trainer)
    for index, token in enumerate(argv):
        if token == "--trainer" and index + 1 < len(argv):
            trainer = argv[index + 1]
        elif token.startswith("--trainer="):
            trainer = token.split("=", 1)[1]
        elif ASSIGNMENT.match(token) and _hydra_key(token.split("=", 1)[0]) == "trainer":
            trainer = token.split("=", 1)[1]
    return check_trainer(trainer, f"recipe {path}" if path else "the command line (--trainer)")


def command_line(argv: list[str], parser: RecipeParser) -> list[str]:
    """`argv` with each assignment (`--set key=value`, a bare `key=value`, `training.key=value`) as
    the flag it spells (`--key value`; a YAML list value as several words)."""
    out: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--set":
            out += assignment_flags(next(tokens, ""))
        elif token.startswith("--set="):
            out += assignment_flags(token[len("--set="):])
        elif ASSIGNMENT.match(token) and not _takes_value(out[-1] if out else "", parser):
            out += assignment_flags(token)
        else:
            out.append(token)
    return out


def assignment_flags(text: str) -> list[str]:
    """`key=value` as TRL's flag words: `["--key", "value"]`."""
    if "=" not in text:
        raise RecipeError(f"{text!r} is not an override: write KEY=VALUE (for example learning_rate=1e-5)")
    key, raw = text.split("=", 1)
    key = _hydra_key(key.strip())
    if not key:
        raise RecipeError(f"{text!r}: empty key")
    if "." in key:
        raise RecipeError(f"{text!r}: recipe keys are flat, one field each (gail_weight, lora_r, "
                          "vllm_server_log; grail-sim train --help lists them)")
    value = yaml_load(raw) if raw.strip().startswith("[") else raw
    return [f"--{key}", *([str(item) for item in value] if isinstance(value, list) else [raw])]


def _hydra_key(key: str) -> str:
    for group in HYDRA_GROUPS:
        if key.startswith(group):
            return key[len(group):]
    return key


def _flag_action(token: str, parser: RecipeParser):
    """The parser's action of a flag word (`--lr_scheduler_type`, `--max-steps=3`), or None."""
    return parser._option_string_actions.get(token.split("=", 1)[0]) if token.startswith("--") else None


def _takes_value(token: str, parser: RecipeParser) -> bool:
    """Whether `token` is a flag whose next word is its value (a bare `a=b` after it is that value)."""
    action = _flag_action(token, parser)
    return action is not None and "=" not in token and action.nargs not in (0, "?")


def _flag_keys(argv: list[str], parser: RecipeParser) -> list[str]:
    """The fields the command line sets."""
    actions = [_flag_action(token, parser) for token in argv]
    return [action.dest for action in actions if action is not None and action.dest != "help"]


def _check_owned_keys(trainer: str, keys: list[str], source: str) -> None:
    """A `gail_*` key outside a grail recipe, or a `maxent_*` one outside maxent, is a mistake."""
    stray = sorted({key for key in keys if prefix_owner(key) not in (None, trainer)})
    if stray:
        raise RecipeError(f"{source}: {stray} apply to trainer {prefix_owner(stray[0])!r} only (this recipe's trainer "
                          f"is {trainer!r})")


def _check_across(recipe: Recipe, source: str) -> None:
    """The checks that span two of TRL's objects."""
    if recipe.model.reasoning_vocab_size:
        if recipe.trainer == SFT:
            raise RecipeError(f"{source}: reasoning_vocab_size applies to the RL trainers only")
        if recipe.config.use_vllm:
            raise RecipeError(f"{source}: reasoning_vocab_size needs use_vllm: false (vLLM's sampler cannot apply "
                              "the logits processor that keeps reasoning ids inside <think>)")
    missing = [flag for flag, value in (("--dataset", recipe.script.dataset_name or recipe.script.dataset_mixture),
                                        ("--model", recipe.model.model_name_or_path),
                                        ("--out", recipe.config.output_dir)) if not value]
    if missing:
        raise RecipeError(f"{source}: {', '.join(missing)} required")


def _value(recipe: Recipe, key: str) -> Any:
    for part in (recipe.config, recipe.model, recipe.script):
        if hasattr(part, key):
            return getattr(part, key)
    return None


def _plain(value: Any) -> Any:
    """A value as YAML and JSON write it (TRL turns some strings into enums)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def redact(values: Mapping[str, Any]) -> dict:
    return {key: ("***" if key in SECRET_KEYS and value else value) for key, value in values.items()}


def overrides_read_by(path, overrides: Mapping[str, Any]) -> dict:
    """The workflow's `overrides` that the recipe at `path` reads (`overrides_for` its trainer). The
    workflow passes each training job only these, so setting a key reruns exactly the trainers that
    read it."""
    return overrides_for(check_trainer(read_recipe(path).get("trainer"), f"recipe {path}"), overrides, path)


def overrides_for(trainer: str, overrides: Mapping[str, Any], where) -> dict:
    """`overrides` less the keys `trainer` does not read: one config trains every trainer, so a key
    only another has (`num_generations` is GRPO's, `completion_only_loss` SFT's, `gail_weight`
    grail's) is left out of this one's, with a log line. A key no trainer knows is kept, and fails
    naming itself and the recipe."""
    own = known_fields(trainer)
    every = set().union(*(known_fields(name) for name in (SFT, "grpo")))
    kept = {}
    for key, value in overrides.items():
        if (key not in own and key in every) or prefix_owner(key) not in (None, trainer):
            LOG.info("train.overrides %s skipped for %s: trainer %s does not read it", key, where, trainer)
            continue
        kept[key] = value
    return kept
