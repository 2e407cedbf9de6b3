"""The typed recipe of `grail-sim train`: TRL's own argument classes, subclassed with grail-sim's
fields, as open-r1 declares its recipes.

    DataArguments(trl.ScriptArguments)   the prompts dataset (`--dataset`), splits, row caps, mixture
    PolicyModelConfig(trl.ModelConfig)   the start model (`--model`), dtype, LoRA (`use_peft`, `lora_*`),
                                         4/8-bit loading, `lora_top_layers`, `reasoning_vocab_size`
    GrpoRecipe(trl.GRPOConfig)           the RL trainers (grpo, grail, maxent, grpo-entropy): reward
                                         functions, GRAIL's discriminator (`gail_*`), MaxEnt-GRPO
                                         (`maxent_*`), the KL controller (`kl_*`), the vLLM server
                                         (`vllm_server_*`)
    SftRecipe(trl.SFTConfig)             the sft trainer: its think template

Every field carries its default and help text, and `__post_init__` checks it, as TRL's
`GRPOConfig` does; `grail_sim.training.parser.parse_recipe` reads a recipe file and its overrides into
these classes with `TrlParser`, once. A check fails with a `RecipeError` naming the key; the parser
adds the file.

This module imports TRL, which takes seconds: the workflow's planning reads recipes through
`grail_sim.training.recipe`, which imports this module only when it needs the field names.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import trl

from grail_sim.answers import think_template_problem
from grail_sim.errors import RecipeError
from grail_sim.training.mixture import check_mixture
from grail_sim.training.recipe import GRAIL, SFT, TRAINERS

def helped(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None, **metadata) -> Any:  # noqa: A002
    """A dataclass field with its help text (`factory` for a mutable default), as TRL declares its own."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def require(condition: bool, message: str) -> None:
    if not condition:
        raise RecipeError(message)


def check_number(name: str, value: Any, *, minimum: float | None = None, below: float | None = None,
                 positive: bool = False, optional: bool = False) -> None:
    """`value` of field `name` is a finite number within the bounds (None allowed when `optional`)."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (below is None or value < below)
    ok = ok and (not positive or value > 0)
    bounds = [f"> {minimum if minimum is not None else 0}" if positive else f">= {minimum}" if minimum is not None
              else "", f"< {below}" if below is not None else ""]
    shown = " and ".join(part for part in bounds if part)
    require(ok, f"{name} must be a number{' ' + shown if shown else ''}{' or null' if optional else ''}, "
                f"got {value!r}")


def check_choice(name: str, value: Any, choices) -> None:
    require(value in choices, f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def trl_class(kind: type) -> type:
    """The TRL class that `kind` subclasses."""
    return next(base for base in kind.__mro__ if base.__module__.startswith("trl."))


def project_fields(kind: type) -> list[dataclasses.Field]:
    """The fields `kind` declares or re-declares over the TRL class it subclasses (`grail-sim train --help`)."""
    inherited = {f.name: f for f in dataclasses.fields(trl_class(kind))}
    return [f for f in dataclasses.fields(kind)
            if f.name not in inherited or (f.default, f.metadata) != (inherited[f.name].default, inherited[f.name].metadata)]


@dataclass
class DataArguments(trl.ScriptArguments):
    """TRL's script arguments with the prompts dataset and its row caps."""

    dataset_name: str | None = helped(None, help="the prompts folder (the prompts stage's, e.g. "
                                                 "results/prompts/gun_control/next_video)", aliases=["--dataset"])
    dataset_test_split: str = helped("validation", help="split evaluated during training (with eval_strategy: "
                                                        "steps and eval_steps > 0)")
    max_train_rows: int | None = helped(None, help="cap on training rows after a seeded shuffle (null or 0: all)")
    max_eval_samples: int | None = helped(None, help="cap on the rows evaluated during training, after a seeded "
                                                     "shuffle (null or 0: the whole dataset_test_split)")
    dataset_mixture: dict | str | None = helped(None, help="train on a weighted mixture of datasets instead of "
                                                           "--dataset (TRL's DatasetMixtureConfig: {datasets: [{id or "
                                                           "path, config, split, columns, weight}], seed, "
                                                           "test_split_size}; JSON on the command line; docs/train.md)")

    def __post_init__(self) -> None:
        for name in ("max_train_rows", "max_eval_samples"):
            check_number(name, getattr(self, name), minimum=0, optional=True)
        if isinstance(self.dataset_mixture, str):
            try:
                self.dataset_mixture = json.loads(self.dataset_mixture)
            except json.JSONDecodeError as err:
                raise RecipeError(f"dataset_mixture is not a JSON object: {err.msg}") from None
        self.dataset_mixture = check_mixture(self.dataset_mixture)


@dataclass
class PolicyModelConfig(trl.ModelConfig):
    """TRL's model config (dtype, LoRA through `use_peft`, 4/8-bit loading) with grail-sim's two
    additions. TRL's `get_peft_config` and `get_quantization_config` turn it into peft's and
    bitsandbytes' configs (grail_sim.training.policy)."""

    model_name_or_path: str | None = helped(None, help="the start model folder: the base (results/models/base) or "
                                                       "a trained one, e.g. sft's adapter results/train/sft_gun/final",
                                            aliases=["--model"])
    lora_top_layers: int | None = helped(None, help="adapt only the top N decoder layers (peft's "
                                                    "layers_to_transform): the backward pass stops at the lowest "
                                                    "adapted layer, the cheaper step on a CPU. null: every layer")
    reasoning_vocab_size: int = helped(0, help="reasoning-vocabulary expansion: N > 0 adds N embedding rows that "
                                               "copy token ids 0..N-1 and may be generated only inside <think>; 0: "
                                               "off. RL trainers with use_vllm: false only "
                                               "(grail_sim.model.reasoning_vocab)")

    def __post_init__(self) -> None:
        check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_number("lora_r", self.lora_r, minimum=1)
        check_number("lora_alpha", self.lora_alpha, minimum=1)
        check_number("lora_dropout", self.lora_dropout, minimum=0.0, below=1.0)
        check_number("lora_top_layers", self.lora_top_layers, minimum=1, optional=True)
        check_number("reasoning_vocab_size", self.reasoning_vocab_size, minimum=0)
        require(not (self.load_in_4bit or self.load_in_8bit) or self.use_peft,
                "load_in_4bit / load_in_8bit need use_peft: true (quantised weights are frozen; QLoRA trains an "
                "adapter on them)")
        super().__post_init__()

    @property
    def quantized(self) -> bool:
        return bool(self.load_in_4bit or self.load_in_8bit)


@dataclass
class RecipeFields:
    """The fields every trainer's config has."""

    trainer: str | None = helped(None, help="the registered trainer that runs the recipe (required): "
                                 + "; ".join(f"{name}: {text}" for name, text in TRAINERS.items()))
    output_dir: str | None = helped(None, help="the run's output folder (Contract 3 of docs/DESIGN.md), e.g. "
                                               "results/train/grail_gun; a rerun resumes from its last checkpoint",
                                    aliases=["--out"])
    chat_template: str | None = helped(None, help="a chat template for the tokenizer: a Jinja file path or the "
                                                  "template itself (null: the model's own); saved with the model")
    system_prompt: str | None = helped(None, help="the system message of every training prompt, replacing the "
                                                  "prompts stage's (null: keep it; an RL run keeps its start model's "
                                                  "recorded one); evaluation applies it too")

    def check_recipe_fields(self, trainers) -> None:
        require(self.trainer is not None, f"trainer is required: one of {', '.join(TRAINERS)}")
        check_choice("trainer", self.trainer, trainers)
        from grail_sim.training.prompting import chat_template_text

        self.chat_template = self.chat_template or None
        self.system_prompt = self.system_prompt or None
        if self.chat_template is not None:
            chat_template_text(self.chat_template)  # a missing file fails now, naming it


@dataclass
class GrpoRecipe(RecipeFields, trl.GRPOConfig):
    """TRL's GRPOConfig with the fields of grail-sim's RL trainers."""

    reward_funcs: list[str] = helped(factory=lambda: ["answer_accuracy", "format"],
                                     help="reward functions by name (grail_sim.training.rewards); their weights are "
                                          "reward_weights, normalised to sum to 1 (grail appends gail_weight)")
    heldout_rows: int = helped(0, help=">0: greedy accuracy on this many validation rows before and after training")
    accelerate_config: str | None = helped(None, help="accelerate config of a multi-GPU run, e.g. "
                                                      "config/accelerate/ddp.yaml")
    init_kl_coeff: float | None = helped(None, help="the starting KL coefficient: it sets (and wins over) TRL's "
                                                    "beta (null: beta as given). MaxEnt-GRPO uses it in its weights "
                                                    "rather than as a loss term")
    kl_target: float | None = helped(None, help="target KL(policy || reference) per token: beta then moves toward "
                                                "it after every optimizer step (PPO's adaptive controller, "
                                                "grail_sim.training.kl_control); needs beta > 0")
    kl_horizon: int = helped(100, help="optimizer steps of adaptive KL control: one step moves beta by at most a "
                                       "factor 1 +- 0.2 / kl_horizon")
    maxent_tau: float = helped(0.2, help="maxent: entropy temperature tau; larger spreads the weights over the "
                                         "group (tau -> infinity: uniform)")
    maxent_q_temperature: float = helped(1.0, help="maxent: T_q of the listwise target q = softmax(utility / T_q); "
                                                   "smaller ranks completions more sharply (> 0)")
    maxent_q_epsilon: float = helped(1e-6, help="maxent: floor eps mixed into q (q * (1 - eps K) + eps), so that "
                                                "the target keeps full support; eps * num_generations < 1")
    maxent_length_normalize_ref: bool = helped(True, help="maxent: divide each completion's reference "
                                                          "log-probability by its token count")
    gail_use: bool = helped(True, help="grail: add the discriminator's reward (false: the run trains as pure "
                                       "GRPO). Env GAIL_USE")
    gail_weight: float = helped(0.3, help="grail: the gail reward's weight, appended to reward_weights before all "
                                          "are renormalised. Env GAIL_WEIGHT")
    gail_alpha: float = helped(1.0, help="grail: reward scale, alpha * P(human) (or alpha * log P(human)). "
                                         "Env GAIL_ALPHA")
    gail_reward_form: str = helped("prob", help="grail: prob: alpha * P(human); log: alpha * log P(human), clipped "
                                                "at log(1e-4)")
    gail_lr: float = helped(5e-5, help="grail: the discriminator's AdamW learning rate. Env GAIL_LR")
    gail_disc_model: str | None = helped(None, help="grail: discriminator backbone folder or hub id (null: the base "
                                                    "model folder). Env GAIL_DISC_MODEL")
    gail_num_layers: int | None = helped(4, help="grail: keep the backbone's first N decoder layers (null: all)")
    gail_device: str = helped("auto", help="grail: the discriminator's device: auto, cpu, cuda, cuda:N. "
                                           "Env GAIL_DEVICE")
    gail_max_history: int = helped(3, help="grail: most recent prior videos in the discriminator's text; 0 = the "
                                           "full history (as in the prompts). Env GRAIL_MAX_HISTORY")
    gail_max_length: int = helped(192, help="grail: discriminator text length in tokens (right-truncated: the "
                                            "state goes first)")
    gail_updates_per_step: int = helped(1, help="grail: discriminator updates per GRPO step, after its rewards")
    gail_batch_size: int = helped(16, help="grail: minibatch size of a discriminator update")
    gail_human_fraction: float = helped(0.5, help="grail: share of human (gold) examples in each discriminator "
                                                  "minibatch, in (0, 1); the rest are the policy's wrong choices "
                                                  "and sampled in-slate options. 0.5 = class-balanced")
    gail_buffer_size: int = helped(1024, help="grail: replay buffer size per class")
    gail_replay: str = helped("uniform", help="grail: how minibatches draw from the replay buffers: uniform, or "
                                              "recency (newer examples more often; gail_replay_half_life)")
    gail_replay_half_life: int = helped(256, help="grail: recency replay: an example this many additions old is "
                                                  "drawn half as often as the newest")
    gail_sampled_negatives: bool = helped(True, help="grail: top up negatives with in-slate non-gold options, so "
                                                     "that negatives do not vanish as the policy improves")
    gail_seed: int = helped(0, help="grail: seed of the discriminator's head, sampling and replay draws")
    vllm_server_dtype: str = helped("auto", help="vllm_mode: server: the server's weight dtype (auto, bfloat16, "
                                                 "float16, float32); its memory share is vllm_gpu_memory_utilization, "
                                                 "its wait for /health vllm_server_timeout, its context "
                                                 "vllm_max_model_length (TRL's fields)")
    vllm_server_args: list[str] = helped(factory=list, help="vllm_mode: server: more `vllm serve` arguments")
    vllm_server_log: str | None = helped(None, help="vllm_mode: server: the server's log file (null: the rule's "
                                                    "log, else OUT/vllm_server.log)")

    def __post_init__(self) -> None:
        from grail_sim.training import rewards as reward_lib

        self.check_recipe_fields([name for name in TRAINERS if name != SFT])
        require("gail" not in self.reward_funcs, "reward_funcs: 'gail' is added by trainer: grail, do not list it")
        for name in self.reward_funcs:
            try:
                reward_lib.get_reward(name)
            except KeyError as err:
                raise RecipeError(f"reward_funcs: {err.args[0]}") from None
        for name in ("heldout_rows", "gail_max_history", "gail_updates_per_step", "gail_seed"):
            check_number(name, getattr(self, name), minimum=0)
        for name in ("kl_horizon", "gail_replay_half_life"):
            check_number(name, getattr(self, name), minimum=1)
        for name in ("gail_max_length", "gail_batch_size", "gail_buffer_size"):
            check_number(name, getattr(self, name), minimum=2)
        for name in ("gail_weight", "gail_alpha", "gail_lr", "maxent_tau"):
            check_number(name, getattr(self, name), minimum=0.0)
        check_number("gail_num_layers", self.gail_num_layers, minimum=1, optional=True)
        check_number("gail_human_fraction", self.gail_human_fraction, positive=True, below=1.0)
        check_choice("gail_reward_form", self.gail_reward_form, ("prob", "log"))
        check_choice("gail_replay", self.gail_replay, ("uniform", "recency"))
        self.gail_disc_model = self.gail_disc_model or None
        check_number("init_kl_coeff", self.init_kl_coeff, minimum=0.0, optional=True)
        check_number("kl_target", self.kl_target, positive=True, optional=True)
        check_number("maxent_q_temperature", self.maxent_q_temperature, positive=True)
        check_number("maxent_q_epsilon", self.maxent_q_epsilon, minimum=0.0, below=1.0)
        if self.init_kl_coeff is not None:
            self.beta = self.init_kl_coeff
        require(self.kl_target is None or self.beta > 0,
                "kl_target needs a starting KL coefficient > 0 (set init_kl_coeff or beta)")
        self.reward_weights = self._normalised_weights()
        self._check_evaluation()
        super().__post_init__()

    @property
    def uses_gail(self) -> bool:
        """Whether the run trains GRAIL's discriminator and adds its reward."""
        return self.trainer == GRAIL and self.gail_use

    @property
    def reward_names(self) -> list[str]:
        """The reward functions in the order of `reward_weights`: `gail` last under GRAIL."""
        return list(self.reward_funcs) + (["gail"] if self.uses_gail else [])

    def _normalised_weights(self) -> list[float]:
        from grail_sim.training import rewards as reward_lib

        weights = list(self.reward_weights or [1.0] * len(self.reward_funcs))
        try:
            weights = reward_lib.normalise_weights(weights, list(self.reward_funcs))
            if self.uses_gail:
                weights = reward_lib.normalise_weights(weights + [self.gail_weight], self.reward_names)
        except ValueError as err:
            raise RecipeError(str(err)) from None
        return weights

    def _check_evaluation(self) -> None:
        """Evaluation during training runs every `eval_steps` optimizer steps, or not at all: an epoch
        strategy would evaluate once in a run of a few steps, and eval_steps 0 never."""
        strategy = str(getattr(self.eval_strategy, "value", self.eval_strategy) or "no")
        if not self.do_eval and strategy == "no":
            return
        require(strategy == "steps", f"evaluation during training needs eval_strategy: steps (got {strategy!r}, "
                                     f"do_eval {self.do_eval!r})")
        steps = self.eval_steps
        require(isinstance(steps, (int, float)) and not isinstance(steps, bool) and steps > 0,
                f"eval_strategy: steps needs eval_steps > 0 (got {steps!r})")
        self.do_eval = True

    def maxent_settings(self):
        from grail_sim.training.trainers import MaxEntSettings

        return MaxEntSettings(tau=self.maxent_tau, q_temperature=self.maxent_q_temperature,
                              q_epsilon=self.maxent_q_epsilon, length_normalize_ref=self.maxent_length_normalize_ref)

    def kl_controller(self):
        """The adaptive KL controller of `kl_target` (None without one), starting at `beta`."""
        if self.kl_target is None:
            return None
        from grail_sim.training.kl_control import AdaptiveKLController

        return AdaptiveKLController(init_kl_coeff=self.beta, kl_target=self.kl_target, kl_horizon=self.kl_horizon)


@dataclass
class SftRecipe(RecipeFields, trl.SFTConfig):
    """TRL's SFTConfig with the sft trainer's think template."""

    think_template: str = helped("Next: {short_title}",
                                 help="text inside <think> of the target completion; fields {index} {title} "
                                      "{short_title} (first 5 words) {channel} of the human's choice")

    def __post_init__(self) -> None:
        self.check_recipe_fields([SFT])
        problem = think_template_problem(self.think_template)
        require(problem is None, problem or "")
        super().__post_init__()


def evaluates_during_training(config) -> bool:
    """Whether a run evaluates while it trains (GrpoRecipe's check makes this `do_eval`)."""
    return bool(getattr(config, "do_eval", False))


def argument_classes(trainer: str) -> tuple[type, type, type]:
    """The TrlParser classes of a recipe for `trainer`: (script, training config, model config)."""
    return DataArguments, (SftRecipe if trainer == SFT else GrpoRecipe), PolicyModelConfig


def known_fields(trainer: str) -> set[str]:
    """Every key a recipe for `trainer` may set."""
    return {f.name for kind in argument_classes(trainer) for f in dataclasses.fields(kind) if f.init}


def recipe_help() -> str:
    """grail-sim's recipe fields with their defaults and help, for `grail-sim train --help`."""
    from grail_sim.config import RECIPE_ENVIRONMENT
    from grail_sim.training.recipe import BASE_KEY

    lines = ["A recipe is a YAML file of TRL fields (--config); any field is also a flag (--learning_rate 1e-5), "
             "which wins over the file and the workflow's train.overrides. `key=value`, `--set key=value` and "
             "`training.key=value` are the same flags.",
             f"  {BASE_KEY}: a recipe file this one inherits from (a path relative to it); its values apply first"]
    for kind in (DataArguments, PolicyModelConfig, GrpoRecipe, SftRecipe):
        lines += ["", f"{kind.__name__} (TRL's {trl_class(kind).__name__}, whose own fields are accepted too):"]
        for item in project_fields(kind):
            default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
            lines.append(f"  {item.name} (default: {json.dumps(default)}): {item.metadata.get('help', '')}")
    lines += ["", "environment overrides (part of train.overrides; the command line wins):"]
    lines += [f"  {variable:<18} -> {key}" for variable, key in RECIPE_ENVIRONMENT.items()]
    return "\n".join(lines)
