"""The typed sections of a training recipe: `lora`, `warmup_sft`, `vllm_server` and `gail`.

Each is a dataclass whose fields carry their default (written once, here) and their help text
(`metadata={"help": ...}`, as TRL declares `GRPOConfig`); `__post_init__` coerces what YAML or an
environment override may give (`"1e-3"` is a string in YAML, `GAIL_USE=0` an integer) and fails
with a `RecipeError` naming the key. `grail_sim.training.recipe` puts them together.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from grail_sim.errors import RecipeError

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def as_bool(key: str, value: Any) -> bool:
    """A YAML or environment boolean: true/false, 1/0, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise RecipeError(f"{key} must be true or false, got {value!r}")


def as_float(key: str, value: Any, *, minimum: float | None = None, below: float | None = None) -> float:
    """A finite number (a YAML string such as `1e-3` is accepted), within the given bounds."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(number) or (minimum is not None and number < minimum) or (below is not None and number >= below):
        bounds = " and ".join(part for part in (f">= {minimum}" if minimum is not None else "",
                                                  f"< {below}" if below is not None else "") if part)
        raise RecipeError(f"{key} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return number


def as_int(key: str, value: Any, *, minimum: int | None = None, optional: bool = False) -> int | None:
    """A whole number >= `minimum` (`None` allowed when `optional`)."""
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{key} must be a whole number{' or null' if optional else ''}, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise RecipeError(f"{key} must be >= {minimum}{' or null' if optional else ''}, got {value!r}")
    return number


def as_text(key: str, value: Any, *, optional: bool = False, choices: tuple[str, ...] = ()) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise RecipeError(f"{key} must be a string{' or null' if optional else ''}, got {value!r}")
    text = str(value)
    if choices and text not in choices:
        raise RecipeError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return text


def as_text_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, (str, int, float)) for item in value):
        raise RecipeError(f"{key} must be a list of strings, got {value!r}")
    return [str(item) for item in value]


def helped(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None) -> Any:  # noqa: A002
    """A dataclass field with its help text; `factory` for a mutable default."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


class Section:
    """Shared behaviour of a recipe section: built from a mapping (an unknown key fails naming it),
    read back as a plain dict, and readable by key (`section["r"]`) for scripts written against the
    untyped recipe (benchmarks/choice_probe.py)."""

    NAME = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "Section":
        values = dict(values or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise RecipeError(f"unknown key(s) {unknown} in section {cls.NAME!r}; valid: {sorted(valid)}")
        return cls(**values)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings(Section):
    """The `lora:` section: a LoRA adapter on the policy (peft), or full fine-tuning."""

    NAME = "lora"

    enabled: bool = helped(True, help="train a LoRA adapter (false: every weight of the policy)")
    r: int = helped(16, help="LoRA rank (peft LoraConfig.r)")
    alpha: int = helped(32, help="LoRA scaling alpha (peft LoraConfig.lora_alpha)")
    dropout: float = helped(0.05, help="dropout on the LoRA path (peft LoraConfig.lora_dropout), in [0, 1)")
    target_modules: list[str] = helped(factory=lambda: list(DEFAULT_TARGET_MODULES),
                                       help="module names that get adapters (peft LoraConfig.target_modules)")
    top_layers: int | None = helped(None, help="adapt only the top N decoder layers (peft LoraConfig."
                                    "layers_to_transform); the backward pass then stops at the lowest adapted "
                                    "layer, the cheaper step on a CPU. null: every layer")

    def __post_init__(self) -> None:
        self.enabled = as_bool("lora.enabled", self.enabled)
        self.r = as_int("lora.r", self.r, minimum=1)
        self.alpha = as_int("lora.alpha", self.alpha, minimum=1)
        self.dropout = as_float("lora.dropout", self.dropout, minimum=0.0, below=1.0)
        self.target_modules = as_text_list("lora.target_modules", self.target_modules)
        if not self.target_modules:
            raise RecipeError("lora.target_modules must name at least one module")
        self.top_layers = as_int("lora.top_layers", self.top_layers, minimum=1, optional=True)

    def to_peft(self, num_layers: int | None = None):
        """peft's `LoraConfig` for a causal LM of `num_layers` decoder layers (needed with top_layers)."""
        from peft import LoraConfig

        layers = None
        if self.top_layers is not None:
            if num_layers is None or self.top_layers > num_layers:
                raise RecipeError(f"lora.top_layers {self.top_layers} exceeds the model's {num_layers} decoder layers")
            layers = list(range(num_layers - self.top_layers, num_layers))
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), layers_to_transform=layers,
                          task_type="CAUSAL_LM")


@dataclass
class WarmupSettings(Section):
    """The `warmup_sft:` section: supervised steps that teach the answer format before RL."""

    NAME = "warmup_sft"

    enabled: bool = helped(False, help="run the supervised format warm-up before GRPO (reused on rerun)")
    steps: int = helped(40, help="optimiser steps of the warm-up")
    batch_size: int = helped(8, help="rows per warm-up step")
    learning_rate: float = helped(1e-3, help="AdamW learning rate of the warm-up")
    think_template: str = helped("Option {index} fits this viewer.",
                                 help="text inside <think>; fields {index} {title} {short_title} (first 5 words) "
                                      "{channel} of the gold option")
    max_prompt_tokens: int = helped(1024, help="keep the last N prompt tokens of a warm-up row")
    balance_positions: bool = helped(False, help="round-robin over gold positions, so that the warm-up does "
                                                 "not teach 'always answer 1'")

    def __post_init__(self) -> None:
        self.enabled = as_bool("warmup_sft.enabled", self.enabled)
        self.steps = as_int("warmup_sft.steps", self.steps, minimum=0)
        self.batch_size = as_int("warmup_sft.batch_size", self.batch_size, minimum=1)
        self.learning_rate = as_float("warmup_sft.learning_rate", self.learning_rate, minimum=0.0)
        self.think_template = as_text("warmup_sft.think_template", self.think_template)
        self.max_prompt_tokens = as_int("warmup_sft.max_prompt_tokens", self.max_prompt_tokens, minimum=1)
        self.balance_positions = as_bool("warmup_sft.balance_positions", self.balance_positions)


@dataclass
class VllmServerSettings(Section):
    """The `vllm_server:` section: the server of `use_vllm: true` + `vllm_mode: server` (GPU nodes)."""

    NAME = "vllm_server"

    timeout_s: int = helped(900, help="seconds to wait for the server's /health before failing")
    gpu_memory_utilization: float = helped(0.9, help="vLLM's share of its GPU's memory, in (0, 1]")
    dtype: str = helped("auto", help="vLLM weight dtype (auto, bfloat16, float16, float32)")
    max_model_len: int | None = helped(None, help="vLLM context length (null: the model's)")
    extra_args: list[str] = helped(factory=list, help="more `vllm serve` arguments, as a list")
    log: str | None = helped(None, help="server log file (null: OUT/vllm_server.log)")

    def __post_init__(self) -> None:
        self.timeout_s = as_int("vllm_server.timeout_s", self.timeout_s, minimum=1)
        self.gpu_memory_utilization = as_float("vllm_server.gpu_memory_utilization", self.gpu_memory_utilization,
                                               minimum=0.0, below=1.0 + 1e-12)
        if self.gpu_memory_utilization == 0:
            raise RecipeError("vllm_server.gpu_memory_utilization must be > 0, got 0")
        self.dtype = as_text("vllm_server.dtype", self.dtype)
        self.max_model_len = as_int("vllm_server.max_model_len", self.max_model_len, minimum=1, optional=True)
        self.extra_args = as_text_list("vllm_server.extra_args", self.extra_args)
        self.log = as_text("vllm_server.log", self.log, optional=True)


@dataclass
class GailSettings(Section):
    """The `gail:` section (GRAIL): an online discriminator D(state, action) -> P(human) whose
    `alpha * P(human)` is one more reward. Absent: pure GRPO."""

    NAME = "gail"

    use: bool = helped(True, help="add the gail reward (false: the recipe trains as pure GRPO). Env GAIL_USE")
    weight: float = helped(0.3, help="the gail reward's weight, appended to reward_weights before all are "
                                     "renormalised. Env GAIL_WEIGHT")
    alpha: float = helped(1.0, help="reward scale: alpha * P(human) (or alpha * log P(human)). Env GAIL_ALPHA")
    reward_form: str = helped("prob", help="prob: alpha * P(human); log: alpha * log P(human), clipped at log(1e-4)")
    lr: float = helped(5e-5, help="the discriminator's AdamW learning rate. Env GAIL_LR")
    disc_model: str | None = helped(None, help="discriminator backbone folder or hub id (null: the base model "
                                               "folder). Env GAIL_DISC_MODEL")
    num_layers: int | None = helped(4, help="keep the backbone's first N decoder layers (null: all)")
    device: str = helped("auto", help="the discriminator's device: auto, cpu, cuda, cuda:N. Env GAIL_DEVICE")
    max_history: int = helped(3, help="most recent prior videos in the discriminator's text; 0 = full history "
                                      "(as in the prompts). Env GRAIL_MAX_HISTORY")
    max_length: int = helped(192, help="discriminator text length in tokens (right-truncated: state goes first)")
    updates_per_step: int = helped(1, help="discriminator updates per GRPO step, after the step's rewards")
    batch_size: int = helped(16, help="minibatch size of a discriminator update")
    human_fraction: float = helped(0.5, help="share of human (gold) examples in each discriminator minibatch; the "
                                             "rest are synthetic (the policy's wrong choices and sampled in-slate "
                                             "options). 0.5 = class-balanced; in (0, 1)")
    buffer_size: int = helped(1024, help="replay buffer size per class")
    replay: str = helped("uniform", help="how minibatches draw from the replay buffers: uniform, or recency "
                                         "(newer examples more often; see replay_half_life)")
    replay_half_life: int = helped(256, help="recency replay: an example this many additions old is drawn half as "
                                             "often as the newest")
    sampled_negatives: bool = helped(True, help="top up negatives with in-slate non-gold options, so that "
                                                "negatives do not vanish as the policy improves")
    seed: int = helped(0, help="seed of the discriminator's head, sampling and replay draws")

    @classmethod
    def from_recipe(cls, section: Mapping[str, Any] | None) -> "GailSettings":
        """The recipe's `gail:` mapping; an unknown key fails naming it."""
        return cls.from_mapping(section)

    def __post_init__(self) -> None:
        self.use = as_bool("gail.use", self.use)
        for key in ("weight", "alpha", "lr"):
            setattr(self, key, as_float(f"gail.{key}", getattr(self, key), minimum=0.0))
        self.reward_form = as_text("gail.reward_form", self.reward_form, choices=("prob", "log"))
        self.disc_model = as_text("gail.disc_model", self.disc_model, optional=True) or None
        self.num_layers = as_int("gail.num_layers", self.num_layers, minimum=1, optional=True)
        self.device = as_text("gail.device", self.device)
        for key in ("max_history", "updates_per_step", "seed"):
            setattr(self, key, as_int(f"gail.{key}", getattr(self, key), minimum=0))
        for key in ("max_length", "batch_size", "buffer_size"):
            setattr(self, key, as_int(f"gail.{key}", getattr(self, key), minimum=2))
        self.sampled_negatives = as_bool("gail.sampled_negatives", self.sampled_negatives)
        self.human_fraction = as_float("gail.human_fraction", self.human_fraction, minimum=0.0, below=1.0)
        if self.human_fraction == 0:
            raise RecipeError("gail.human_fraction must lie in (0, 1), got 0")
        self.replay = as_text("gail.replay", self.replay, choices=("uniform", "recency"))
        self.replay_half_life = as_int("gail.replay_half_life", self.replay_half_life, minimum=1)


@dataclass
class QuantizationSettings(Section):
    """The `quantization:` section: load the policy's base weights in 4 or 8 bits through bitsandbytes
    and train a LoRA adapter on them (QLoRA). GPU only."""

    NAME = "quantization"

    bits: int | None = helped(None, help="4 or 8: load the base weights quantised (null: no quantisation). Needs a "
                                         "GPU, bitsandbytes (pyproject's gpu extra) and lora.enabled")
    quant_type: str = helped("nf4", help="4-bit data type: nf4 or fp4 (bnb_4bit_quant_type)")
    double_quant: bool = helped(True, help="quantise the 4-bit quantisation constants too (bnb_4bit_use_double_quant)")
    compute_dtype: str = helped("bfloat16", help="dtype of the 4-bit matmuls: bfloat16, float16 or float32")

    def __post_init__(self) -> None:
        self.bits = as_int("quantization.bits", self.bits, minimum=4, optional=True)
        if self.bits not in (None, 4, 8):
            raise RecipeError(f"quantization.bits must be 4, 8 or null, got {self.bits}")
        self.quant_type = as_text("quantization.quant_type", self.quant_type, choices=("nf4", "fp4"))
        self.double_quant = as_bool("quantization.double_quant", self.double_quant)
        self.compute_dtype = as_text("quantization.compute_dtype", self.compute_dtype,
                                     choices=("bfloat16", "float16", "float32"))

    @property
    def enabled(self) -> bool:
        return self.bits is not None

    def to_bitsandbytes(self):
        """transformers' `BitsAndBytesConfig` for `from_pretrained(quantization_config=...)`."""
        import torch
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
                                  bnb_4bit_use_double_quant=self.double_quant,
                                  bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype))
