"""Training recipes: TRL `GRPOConfig` fields plus grail-sim's own keys (`ScriptArguments`), loaded
from YAML with `key=value` overrides; an unknown key fails naming it and the file. An `sft` recipe
(`trainer: sft`, or a file named sft.yaml without a trainer key) is TRL `SFTConfig` fields plus
`SftArguments` instead.

grail-sim's keys are declared once, as dataclass fields with their default and help text (as TRL
declares `GRPOConfig`); `recipe_help()` renders them for `grail-sim train --help`. Environment
variables are read where the configuration is resolved (`grail_sim.config`), which puts the set
ones into `train.overrides`, applied before `--set` (so `--set` wins).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from grail_sim.answers import think_template_problem
from grail_sim.config import RECIPE_ENVIRONMENT
from grail_sim.errors import RecipeError
from grail_sim.io import read_yaml_mapping, yaml_load
from grail_sim.training.mixture import check_mixture
from grail_sim.training.prompting import PromptOverrides
from grail_sim.training.settings import (
    GailSettings,
    LoraSettings,
    QuantizationSettings,
    Section,
    VllmServerSettings,
    WarmupSettings,
    as_bool,
    as_float,
    as_int,
    as_text,
    as_text_list,
    helped,
)

LOG = logging.getLogger(__name__)

SFT = "sft"
MAXENT = "maxent"
GRAIL = "grail"
# The registered trainers: a recipe's `trainer` must name one (docs/extending.md adds another).
TRAINERS = {
    SFT: "behaviour cloning of the human choice with TRL's SFTTrainer",
    "grpo": "TRL's GRPO on the recipe's rewards",
    GRAIL: "GRPO plus GRAIL's online discriminator reward (needs a gail: section)",
    MAXENT: "the MaxEnt-GRPO objective (grail_sim.training.trainers.MaxEntGRPOTrainer)",
    "grpo-entropy": "GRPO with TRL's entropy bonus (entropy_coef)",
}
BASE_KEY = "base"  # a recipe file's parent recipe, a path relative to the file
DTYPES = ("float32", "bfloat16", "float16")
SECRET_KEYS = ("hub_token", "push_to_hub_token")

# Sections that a recipe switches on by having them: a dotted override of an absent one is skipped.
OPTIONAL_SECTIONS = {"gail": GailSettings}


@dataclass
class ScriptArguments(PromptOverrides):
    """grail-sim's own recipe keys; every other key of a recipe must be a TRL `GRPOConfig` field."""

    NAME = "recipe"

    trainer: str = helped("grpo", help="the registered trainer that runs the recipe: grpo, grail (needs a gail: "
                                       "section), maxent (the MaxEnt-GRPO objective) or grpo-entropy")
    dtype: str = helped("float32", help="policy weight dtype: float32 (CPU), bfloat16 or float16 (GPU)")
    rewards: list[str] = helped(factory=lambda: ["answer_accuracy", "format"],
                                help="reward functions by name (grail_sim.training.rewards); weights in "
                                     "GRPOConfig's reward_weights, normalised to sum to 1")
    train_split: str = helped("train", help="split of the prompt dataset to train on")
    max_train_rows: int | None = helped(None, help="cap on training rows after a seeded shuffle (null or 0: all)")
    lora: LoraSettings = helped(factory=LoraSettings, help="LoRA adapter (section)")
    quantization: QuantizationSettings = helped(factory=QuantizationSettings,
                                                help="4- or 8-bit loading of the base weights, QLoRA (section; GPU)")
    warmup_sft: WarmupSettings = helped(factory=WarmupSettings, help="supervised format warm-up (section)")
    gail: GailSettings | None = helped(None, help="GRAIL's online discriminator reward (section; absent: no "
                                                  "discriminator)")
    heldout_rows: int = helped(0, help=">0: greedy accuracy on this many validation rows before and after training")
    accelerate_config: str | None = helped(None, help="accelerate config of a multi-GPU run, e.g. "
                                                      "config/accelerate/ddp.yaml")
    vllm_server: VllmServerSettings = helped(factory=VllmServerSettings,
                                             help="vLLM server of `use_vllm: true` + `vllm_mode: server` (section)")
    dataset_mixture: dict | None = helped(None, help="train on a weighted mixture of datasets instead of --dataset's "
                                                     "train_split (TRL's DatasetMixtureConfig; section with datasets: "
                                                     "[{id or path, config, split, columns, weight}], seed, "
                                                     "test_split_size; docs/train.md)")
    eval_split: str = helped("validation", help="split of the prompt dataset evaluated during training (with "
                                                "do_eval: true, eval_strategy: steps and eval_steps > 0)")
    max_eval_samples: int | None = helped(None, help="cap on the rows evaluated during training, after a seeded "
                                                     "shuffle (null or 0: the whole eval_split)")
    init_kl_coeff: float | None = helped(None, help="the starting KL coefficient beta; it sets (and wins over) TRL's "
                                                    "`beta` (null: TRL's beta as the recipe gives it). MaxEnt-GRPO uses it in its "
                                                    "weights rather than as a loss term")
    kl_target: float | None = helped(None, help="target KL(policy || reference) per token: with it, beta moves "
                                                "toward the target after every optimizer step (PPO's adaptive "
                                                "controller, grail_sim.training.kl_control); needs beta > 0")
    kl_horizon: int = helped(100, help="optimizer steps of adaptive KL control: one step moves beta by at most a "
                                       "factor 1 +- 0.2 / kl_horizon")
    maxent_tau: float = helped(0.2, help="maxent: entropy temperature tau; larger spreads the weights over the "
                                         "group (tau -> infinity: uniform)")
    maxent_q_temperature: float = helped(1.0, help="maxent: T_q of the listwise target q = softmax(utility / T_q); "
                                                   "smaller ranks completions more sharply (> 0)")
    maxent_q_epsilon: float = helped(1e-6, help="maxent: floor eps mixed into q (q * (1 - eps K) + eps), so the "
                                                "target keeps full support; eps * num_generations < 1")
    maxent_length_normalize_ref: bool = helped(True, help="maxent: divide each completion's reference "
                                                          "log-probability by its token count")
    reasoning_vocab_size: int = helped(0, help="reasoning-vocabulary expansion: N > 0 adds N embedding rows that "
                                               "copy token ids 0..N-1 and may be generated only inside <think> "
                                               "(the vocabulary size duplicates it all); 0: off. HF generation "
                                               "only (use_vllm: false); grail_sim.model.reasoning_vocab")

    def __post_init__(self) -> None:
        from grail_sim.training import rewards as reward_lib

        self.trainer = as_text("trainer", self.trainer, choices=tuple(name for name in TRAINERS if name != SFT))
        self.dtype = as_text("dtype", self.dtype, choices=DTYPES)
        self.rewards = as_text_list("rewards", self.rewards)
        for name in self.rewards:
            if name == "gail":
                raise RecipeError("rewards: 'gail' is added by the gail: section, do not list it")
            try:
                reward_lib.get_reward(name)
            except KeyError as err:
                raise RecipeError(f"rewards: {err.args[0]}") from None
        self.train_split = as_text("train_split", self.train_split)
        self.max_train_rows = as_int("max_train_rows", self.max_train_rows, minimum=0, optional=True)
        self.heldout_rows = as_int("heldout_rows", self.heldout_rows, minimum=0)
        self.accelerate_config = as_text("accelerate_config", self.accelerate_config, optional=True)
        self.dataset_mixture = check_mixture(self.dataset_mixture)
        self.check_prompt_overrides()
        self.eval_split = as_text("eval_split", self.eval_split)
        self.max_eval_samples = as_int("max_eval_samples", self.max_eval_samples, minimum=0, optional=True)
        self._check_kl_and_maxent_keys()
        self.reasoning_vocab_size = as_int("reasoning_vocab_size", self.reasoning_vocab_size, minimum=0)
        build_sections(self, SECTIONS)

    def _check_kl_and_maxent_keys(self) -> None:
        if self.init_kl_coeff is not None:
            self.init_kl_coeff = as_float("init_kl_coeff", self.init_kl_coeff, minimum=0.0)
        if self.kl_target is not None:
            self.kl_target = as_float("kl_target", self.kl_target, minimum=0.0)
            if self.kl_target == 0:
                raise RecipeError("kl_target must be > 0 (null switches adaptive KL control off), got 0")
        self.kl_horizon = as_int("kl_horizon", self.kl_horizon, minimum=1)
        self.maxent_tau = as_float("maxent_tau", self.maxent_tau, minimum=0.0)
        self.maxent_q_temperature = as_float("maxent_q_temperature", self.maxent_q_temperature, minimum=0.0)
        if self.maxent_q_temperature == 0:
            raise RecipeError("maxent_q_temperature must be > 0, got 0")
        self.maxent_q_epsilon = as_float("maxent_q_epsilon", self.maxent_q_epsilon, minimum=0.0, below=1.0)
        self.maxent_length_normalize_ref = as_bool("maxent_length_normalize_ref", self.maxent_length_normalize_ref)

    def maxent_settings(self):
        from grail_sim.training.trainers import MaxEntSettings

        return MaxEntSettings(tau=self.maxent_tau, q_temperature=self.maxent_q_temperature,
                              q_epsilon=self.maxent_q_epsilon, length_normalize_ref=self.maxent_length_normalize_ref)

    def kl_controller(self, beta: float):
        """The adaptive KL controller of `kl_target` (None without one), starting at `beta`."""
        if self.kl_target is None:
            return None
        from grail_sim.training.kl_control import AdaptiveKLController

        return AdaptiveKLController(init_kl_coeff=beta, kl_target=self.kl_target, kl_horizon=self.kl_horizon)


def build_sections(arguments: Section, sections: Mapping[str, type[Section]]) -> None:
    """Turn each section field of `arguments` given as a mapping (or left None) into its typed
    section, an unknown key failing naming it; an absent OPTIONAL_SECTIONS one stays None. Then the
    check that spans two sections: quantised base weights cannot be trained themselves, QLoRA trains
    a LoRA adapter on them."""
    for name, kind in sections.items():
        value = getattr(arguments, name)
        if not isinstance(value, kind) and (value is not None or name not in OPTIONAL_SECTIONS):
            if value is not None and not isinstance(value, Mapping):
                raise RecipeError(f"{name!r} must be a mapping, got {value!r}")
            setattr(arguments, name, kind.from_mapping(value))
    lora, quantization = arguments.lora, arguments.quantization
    if quantization.enabled and not lora.enabled:
        raise RecipeError(f"quantization.bits {quantization.bits} needs lora.enabled: true (quantised weights are "
                          "frozen; QLoRA trains an adapter on them)")


SECTIONS: dict[str, type[Section]] = {"lora": LoraSettings, "quantization": QuantizationSettings,
                                      "warmup_sft": WarmupSettings, "gail": GailSettings,
                                      "vllm_server": VllmServerSettings}
SCRIPT_KEYS = tuple(f.name for f in dataclasses.fields(ScriptArguments))


@dataclass
class SftArguments(PromptOverrides):
    """grail-sim's own keys of an `sft` recipe; every other key must be a TRL `SFTConfig` field."""

    NAME = "recipe"

    trainer: str = helped(SFT, help="sft: behaviour cloning of the human choice with TRL's SFTTrainer (this "
                                    "key selects the sft recipe keys)")
    dtype: str = helped("float32", help="policy weight dtype: float32 (CPU), bfloat16 or float16 (GPU)")
    train_split: str = helped("train", help="split of the prompt dataset to train on")
    max_train_rows: int | None = helped(None, help="cap on training rows after a seeded shuffle (null or 0: all)")
    lora: LoraSettings = helped(factory=LoraSettings, help="LoRA adapter, passed to SFTTrainer as peft_config "
                                                           "(section; enabled: false = full fine-tuning)")
    quantization: QuantizationSettings = helped(factory=QuantizationSettings,
                                                help="4- or 8-bit loading of the base weights, QLoRA (section; GPU)")
    think_template: str = helped("Next: {short_title}",
                                 help="text inside <think> of the target completion; fields {index} {title} "
                                      "{short_title} (first 5 words) {channel} of the human's choice")

    def __post_init__(self) -> None:
        self.trainer = as_text("trainer", self.trainer, choices=(SFT,))
        self.dtype = as_text("dtype", self.dtype, choices=DTYPES)
        self.train_split = as_text("train_split", self.train_split)
        self.max_train_rows = as_int("max_train_rows", self.max_train_rows, minimum=0, optional=True)
        build_sections(self, {"lora": LoraSettings, "quantization": QuantizationSettings})
        self.check_prompt_overrides()
        self.think_template = as_text("think_template", self.think_template)
        problem = think_template_problem(self.think_template)
        if problem:
            raise RecipeError(problem)


SFT_KEYS = tuple(f.name for f in dataclasses.fields(SftArguments))


def _trl_fields(config_name: str) -> dict[str, dataclasses.Field]:
    import trl

    return {f.name: f for f in dataclasses.fields(getattr(trl, config_name)) if f.init}


def _recipe_kind(is_sft: bool) -> tuple[type, tuple[str, ...], str]:
    """(grail-sim's arguments class, its keys, the TRL config it sits beside) of an sft or a GRPO recipe."""
    return (SftArguments, SFT_KEYS, "SFTConfig") if is_sft else (ScriptArguments, SCRIPT_KEYS, "GRPOConfig")


def _known_keys(is_sft: bool) -> set[str]:
    """Every top-level key a recipe of this kind accepts."""
    _, keys, config_name = _recipe_kind(is_sft)
    return set(keys) | set(_trl_fields(config_name))


def recipe_trainer(recipe: Mapping[str, Any], path: Path) -> str:
    """The registered trainer a recipe names in its `trainer` key (which also selects its keys)."""
    trainer = recipe.get("trainer")
    if trainer not in TRAINERS:
        problem = "has no trainer: key" if trainer is None else f"names trainer {trainer!r}"
        raise RecipeError(f"recipe {path} {problem}; one of {', '.join(TRAINERS)} is required")
    return str(trainer)


def shared_overrides_for(path: str | os.PathLike, overrides: list[str]) -> list[str]:
    """The config's overrides for every run (`train.overrides`, environment ones) that apply to the
    recipe at `path`.

    One config trains several kinds of recipe, so a key that only another kind has (`num_generations`
    or `gail.weight` is GRPO's, `completion_only_loss` SFT's) is skipped for this one, with a log line,
    instead of failing its run. A key no kind knows is kept, and fails naming it and the recipe as
    before; `--set` overrides name one run and are not filtered.
    """
    path = Path(path)
    return _kind_filtered(_read_yaml(path), path, overrides)


def _kind_filtered(recipe: Mapping[str, Any], path: Path, overrides: list[str]) -> list[str]:
    """`overrides` less the keys only the other kind of recipe (sft or GRPO) has, each skip logged."""
    is_sft = recipe_trainer(recipe, path) == SFT
    own, other = _known_keys(is_sft), _known_keys(not is_sft)
    kept = []
    for text in overrides:
        key = parse_override(text)[0].split(".")[0]
        if key not in own and key in other:
            LOG.info("train.overrides %s skipped for %s: a %s recipe has no %r key", text, path,
                     "sft" if is_sft else "GRPO", key)
            continue
        kept.append(text)
    return kept


def overrides_read_by(path: str | os.PathLike, overrides: list[str]) -> list[str]:
    """The config overrides the recipe at `path` reads: `shared_overrides_for`'s, less the dotted
    ones of an optional section it lacks (`gail.weight` for a recipe without `gail:`). The workflow
    passes each training rule only these, so setting a key reruns exactly the trainers that read it."""
    path = Path(path)
    recipe = _read_yaml(path)
    return [text for text in _kind_filtered(recipe, path, overrides)
            if not _skipped_section(parse_override(text)[0], recipe)]


def _skipped_section(key: str, recipe: Mapping[str, Any]) -> bool:
    """Whether a dotted override reaches an optional section the recipe does not have."""
    parts = key.split(".")
    return len(parts) > 1 and parts[0] in OPTIONAL_SECTIONS and recipe.get(parts[0]) is None


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` (dotted keys reach nested sections: `gail.weight=0.5`); the value is YAML."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RecipeError(f"--set {text!r}: empty key")
    try:
        return key, yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(f"--set {text!r}: the value is not valid YAML: {err}") from None


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
    """`child` over `base`: a section (a mapping in both) merges key by key, any other value replaces."""
    out = dict(base)
    for key, value in child.items():
        out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else value
    return out


def _read_yaml(path: Path) -> dict:
    """A recipe with what it inherits: its base's values (and theirs), then its own over them."""
    recipe: dict = {}
    for link in reversed(recipe_chain(path)):
        recipe = merged(recipe, read_yaml_mapping(link, what="recipe", error=RecipeError))
    recipe.pop(BASE_KEY, None)
    return recipe


def _apply_overrides(recipe: dict, overrides: list[str], path: Path) -> None:
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if _skipped_section(key, recipe):
            LOG.info("override %s skipped: recipe %s has no %s: section (add one, or set %s={} first)",
                        text, path, parts[0], parts[0])
            continue
        target = recipe
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise RecipeError(f"--set {text!r}: {part!r} is not a section")
        target[parts[-1]] = value


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None,
                max_steps: int | None = None) -> tuple[ScriptArguments | SftArguments, dict]:
    """Recipe file + overrides -> (ScriptArguments, GRPOConfig keyword arguments), or for an `sft`
    recipe (SftArguments, SFTConfig keyword arguments).

    Unknown keys and bad values fail naming the key and the file; sections are merged over their
    defaults. Overrides apply in order (environment ones first, then --set), then `max_steps`.
    """
    path = Path(path)
    recipe = _read_yaml(path)
    _apply_overrides(recipe, list(overrides or []), path)
    if max_steps is not None:
        recipe["max_steps"] = int(max_steps)
    trainer = recipe_trainer(recipe, path)
    is_sft = trainer == SFT
    if (trainer == GRAIL) != (recipe.get("gail") is not None):
        raise RecipeError(f"recipe {path}: trainer {trainer!r} " + ("needs a gail: section (the discriminator)"
                          if trainer == GRAIL else "has a gail: section, which only trainer: grail reads"))
    kind, keys, config_name = _recipe_kind(is_sft)
    trl_fields = _trl_fields(config_name)
    unknown = sorted(key for key in recipe if key not in keys and key not in trl_fields)
    if unknown:
        raise RecipeError(
            f"unknown key(s) {unknown} in recipe {path}: a key must be one of this script's "
            f"({', '.join(keys)}) or a TRL {config_name} field"
        )
    try:
        script = kind(**{key: value for key, value in recipe.items() if key in keys})
    except RecipeError as err:
        raise RecipeError(f"recipe {path}: {err}") from None
    trl_args = {key: value for key, value in recipe.items() if key in trl_fields}
    if "output_dir" in trl_args:
        raise RecipeError(f"recipe {path}: output_dir comes from --out, remove it from the recipe")
    if not is_sft:
        _resolve_kl_coefficient(script, trl_args, recipe, path)
        _check_evaluation(trl_args, path)
        if script.reasoning_vocab_size and trl_args.get("use_vllm"):
            raise RecipeError(f"recipe {path}: reasoning_vocab_size needs use_vllm: false (vLLM's sampler cannot "
                              "apply the logits processor that keeps reasoning ids inside <think>)")
    return script, trl_args


def evaluates_during_training(trl_args: Mapping[str, Any]) -> bool:
    """Whether a run evaluates while it trains (`do_eval`, or an `eval_strategy` other than no)."""
    strategy = str(trl_args.get("eval_strategy") or "no")
    return bool(trl_args.get("do_eval")) or strategy != "no"


def _check_evaluation(trl_args: dict, path: Path) -> None:
    """Evaluation during training runs every `eval_steps` optimizer steps, or not at all: an epoch
    strategy would evaluate once in a run of a few steps, and eval_steps 0 never."""
    if not evaluates_during_training(trl_args):
        return
    strategy = str(trl_args.get("eval_strategy") or "no")
    if strategy != "steps":
        raise RecipeError(f"recipe {path}: evaluation during training needs eval_strategy: steps (got {strategy!r}, "
                          f"do_eval {trl_args.get('do_eval')!r})")
    steps = trl_args.get("eval_steps")
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not steps > 0:
        raise RecipeError(f"recipe {path}: eval_strategy: steps needs eval_steps > 0 (got {steps!r})")
    trl_args["do_eval"] = True


def _resolve_kl_coefficient(script: ScriptArguments, trl_args: dict, recipe: Mapping[str, Any], path: Path) -> None:
    """`init_kl_coeff` becomes TRL's `beta`; the keys that need a trainer or a beta they lack fail here."""
    if script.trainer != MAXENT:
        stray = sorted(key for key in recipe if key.startswith("maxent_"))
        if stray:
            raise RecipeError(f"recipe {path}: {stray} apply to trainer: {MAXENT} only (this recipe's trainer is "
                              f"{script.trainer!r})")
    if script.init_kl_coeff is not None:
        given = trl_args.get("beta")
        if given is not None and float(given) != script.init_kl_coeff:
            LOG.info("recipe %s: init_kl_coeff %s replaces beta %s", path, script.init_kl_coeff, given)
        trl_args["beta"] = script.init_kl_coeff
    if script.kl_target is not None and not float(trl_args.get("beta") or 0.0) > 0:
        raise RecipeError(f"recipe {path}: kl_target needs a starting KL coefficient > 0 (set init_kl_coeff)")


def recipe_help() -> str:
    """Every grail-sim recipe key with its default and help, for `grail-sim train --help`."""
    lines = ["recipe keys of grail-sim (YAML; override any with --set KEY=VALUE, dotted for sections):",
             f"  {BASE_KEY}: a recipe file this one inherits from (a path relative to it); its values apply first, "
             "a section merging key by key",
             "  trainer (required): " + "; ".join(f"{name}: {text}" for name, text in TRAINERS.items())]
    for item in dataclasses.fields(ScriptArguments):
        kind = SECTIONS.get(item.name)
        if kind is None:
            lines.append(_help_line(item.name, _default(item), item.metadata["help"]))
            continue
        lines.append(f"  {item.name}: {item.metadata['help']}")
        for sub in dataclasses.fields(kind):
            lines.append(_help_line(f"{item.name}.{sub.name}", _default(sub), sub.metadata["help"], indent=4))
    lines += ["", "Any TRL GRPOConfig field (learning_rate, max_steps, num_generations, reward_weights, "
              "use_vllm, ...) is accepted too; see TRL's GRPOConfig documentation. Any other key fails.",
              "", f"an sft recipe (trainer: {SFT}) has these keys instead, plus any TRL SFTConfig field "
              "(learning_rate, max_steps, max_length, completion_only_loss, ...):"]
    for item in dataclasses.fields(SftArguments):
        lines.append(_help_line(item.name, _default(item), item.metadata["help"]))
    lines += ["", "environment overrides (applied before --set, which wins; a recipe without a gail: section "
              "ignores the gail ones):"]
    lines += [f"  {variable:<18} -> {key}" for variable, key in RECIPE_ENVIRONMENT.items()]
    return "\n".join(lines)


def _default(item: dataclasses.Field) -> Any:
    if item.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = item.default_factory()  # type: ignore[misc]
        return value.as_dict() if isinstance(value, Section) else value
    return item.default


def _help_line(key: str, default: Any, text: str, indent: int = 2) -> str:
    shown = "" if isinstance(default, dict) else f" (default: {json.dumps(default)})"
    return f"{' ' * indent}{key}{shown}: {text}"


def redact(mapping: dict) -> dict:
    return {key: ("***" if key in SECRET_KEYS and value else value) for key, value in mapping.items()}
