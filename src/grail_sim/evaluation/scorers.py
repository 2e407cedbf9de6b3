"""Likelihood scoring: the policy's probability of every allowed answer of a prompt, from one
forward pass over the prompt instead of one sampled reply.

What is scored. After the chat prompt the assistant turn is forced up to a prefix, and each
candidate is the rest of the reply the format asks for, closed by its tag (`ThinkForcing`):

- empty think (`evaluate.score_think: empty`, the default, and any model trained with no think
  template, such as `base`): the prefix is `<think></think><answer>` and the candidates
  `"1</answer>"`, ..., `"12</answer>"` for a slate, or `"increase</answer>"`, ... for a direction;
- trained think (`evaluate.score_think: trained`, for a model whose training run recorded a think
  template, such as sft and the RL runs that start from it): the prefix is `<think>` and candidate
  k is the think the model was trained to write for option k followed by its answer,
  `"Next: Gun Bans Fail: What the</think><answer>3</answer>"`. Direction answers have no option
  to fill a template with: they are scored after an empty think written out,
  `"</think><answer>increase</answer>"`.

A candidate's score is the summed log-probability of its tokens after the prefix. Closing the tag is
what makes options 10 and above exact: the digits of "1" are a prefix of "12", and only the
terminator tells them apart.

Why two. What a user wants scored is the policy's choice without sampling: one forward per row,
where generation costs a full reply. A policy trained to answer with a bare digit (or never trained)
is asked exactly that after an empty think. A policy trained to name its choice in the think first
("Next: <title>", the sft target) makes its choice there, and its digit only copies the position:
the trained think scores each option as the whole reply the policy was trained to write for it.
Measured (benchmarks/recovery.md), the trained think is the mode that moves while sft trains, but
it multiplies a whole title's token probabilities and starts far above uniform, so within a CPU
budget it reads worse than the empty think; `empty` stays the default and both are reported by the
recovery benchmark. Either way the total probability of the candidates is `valid_mass`, beside the
parse rate, so a policy that puts its mass elsewhere is plain to see; scoring after the policy's own
greedy think would tie each row to one sampled text at the cost of a generation.

Two backends give the same numbers: HF (`HFScorer`: one batched forward over the left-padded
prompts with a KV cache, then one forward over every candidate's tokens from that cache) on any
device, and vLLM prompt log-probabilities (`VLLMScorer`, with prefix caching) on CUDA nodes where
vllm is installed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from grail_sim.answers import DIRECTIONS, reply, think_template_problem, think_text
from grail_sim.errors import EvaluationError
from grail_sim.evaluation.generators import DEFAULTS, VLLM_MISSING, vllm_preferred, vllm_usable

log = logging.getLogger(__name__)


ANSWER_PREFIX = "<think></think><answer>"  # the empty-think prefix
ANSWER_CLOSE = "</answer>"
THINK_OPEN = "<think>"  # the trained-think prefix
SCORE_THINK_MODES = ("empty", "trained")


@dataclass(frozen=True)
class ThinkForcing:
    """What is forced between the prompt and the candidates: an empty think (`template` "") or the
    think a model was trained to write, filled for each option (module doc)."""

    template: str = ""

    @property
    def prefix(self) -> str:
        return THINK_OPEN if self.template else ANSWER_PREFIX

    def continuation(self, answer: str, index: int, item: dict | None) -> str:
        """The text after `prefix` that completes the reply choosing `answer` (option `index`,
        1-based, with slate item `item`; `item` None for an answer that names no option)."""
        if not self.template:
            return answer + ANSWER_CLOSE
        think = think_text(self.template, index, item) if item is not None else ""
        return reply(think, answer)[len(THINK_OPEN):]

    def describe(self) -> dict[str, str]:
        return {"prefix": self.prefix, "think_template": self.template}


def candidate_answers(task: str, n_options: int) -> list[str]:
    """The answers a row allows, as written inside `<answer>`: option numbers, or the directions."""
    if task == "next_video":
        if n_options < 1:
            raise EvaluationError(f"a next-video row needs at least one option (n_options={n_options})")
        return [str(k) for k in range(1, n_options + 1)]
    if task == "opinion":
        return list(DIRECTIONS)
    raise EvaluationError(f"no candidate answers for task {task!r}")


@dataclass(frozen=True)
class ScoredAnswers:
    """One row's scores: `log_likelihoods[k]` = ln P(candidate k | prompt, ANSWER_PREFIX)."""

    log_likelihoods: tuple[float, ...]

    @property
    def valid_mass(self) -> float:
        """Total probability the policy gives to the allowed answers (1.0 = all of it)."""
        return math.fsum(math.exp(v) for v in self.log_likelihoods)

    @property
    def probabilities(self) -> list[float]:
        """The choice distribution: candidate probabilities renormalised to sum to 1."""
        top = max(self.log_likelihoods)
        weights = [math.exp(v - top) for v in self.log_likelihoods]
        total = math.fsum(weights)
        return [w / total for w in weights]


def think_forcing(model_dir: Path, score_think: str) -> ThinkForcing:
    """The think forcing `evaluate.score_think` asks for, for the model at `model_dir`."""
    from grail_sim.model.loading import PROVENANCE_FILE, trained_think_template

    if score_think not in SCORE_THINK_MODES:
        raise EvaluationError(f"evaluate.score_think must be one of {', '.join(SCORE_THINK_MODES)} "
                              f"(got {score_think!r})")
    template = trained_think_template(model_dir) if score_think == "trained" else ""
    problem = think_template_problem(template) if template else None
    if problem:
        raise EvaluationError(f"{Path(model_dir) / PROVENANCE_FILE}: {problem}")
    log.info("scoring %s after %s", model_dir, f"its trained think {template!r}" if template else "an empty think")
    return ThinkForcing(template)


class HFScorer:
    """Candidate log-likelihoods with a Hugging Face causal LM (full model or merged adapter).

    `score(batch)` takes (messages, candidates) pairs. The prompts go through one forward pass
    (left padding, logits of the last position only, KV cache kept); the cache is then indexed once
    per candidate, and one second forward over the candidates' own tokens (at most a few each)
    gives the rest of each candidate's log-probability.
    """

    backend = "hf"

    def __init__(self, model_dir: Path | None, *, batch_size: int = DEFAULTS["score_batch_size"], device: str = "auto",
                 dtype: str = DEFAULTS["dtype"], think: ThinkForcing = ThinkForcing(), loaded: tuple | None = None):
        """`loaded` = (model, tokenizer) already in memory (a benchmark scoring during training) in
        place of loading `model_dir`."""
        from grail_sim.model.loading import float32_output_head, load_policy

        self.model, self.tokenizer = loaded if loaded is not None else load_policy(model_dir, dtype=dtype,
                                                                                     device=device)
        if loaded is None:
            # bf16 logits are rounded to 1/8 at the magnitudes a head gives (8 mantissa bits), which
            # moves an option's log-probability by up to 0.06: the body runs in the dtype asked
            # for, the head in float32 (benchmarks/scoring_throughput.md).
            float32_output_head(self.model)
        self.chunk_size = batch_size
        self.think = think
        self._candidate_ids: dict[str, list[int]] = {}

    def render(self, messages: Sequence[dict]) -> str:
        """The chat prompt with the assistant turn opened and forced up to the prefix."""
        prompt = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return prompt + self.think.prefix

    def prompt_ids(self, messages: Sequence[dict]) -> list[int]:
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def prompt_length(self, messages: Sequence[dict]) -> int:
        return len(self.prompt_ids(messages))

    def candidate_ids(self, continuation: str) -> list[int]:
        """Token ids of a candidate's continuation, tokenised on their own: the prefix ends at a
        tag's `>`, a boundary this tokenizer never merges across (tests check it on the embedded
        tokenizer)."""
        if continuation not in self._candidate_ids:
            self._candidate_ids[continuation] = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return self._candidate_ids[continuation]

    def score(self, batch: Sequence[tuple[Sequence[dict], Sequence[str]]]) -> list[ScoredAnswers]:
        """(messages, candidate continuations) pairs -> each candidate's log-likelihood."""
        import torch

        prompts = [self.prompt_ids(messages) for messages, _ in batch]
        candidates = [[self.candidate_ids(answer) for answer in answers] for _, answers in batch]
        with torch.inference_mode():
            first_logprobs, cache, prompt_mask = self._prompt_pass(prompts)
            totals = self._candidate_pass(candidates, first_logprobs, cache, prompt_mask)
        return [ScoredAnswers(tuple(row)) for row in totals]

    def _prompt_pass(self, prompts: list[list[int]]):
        """Forward the left-padded prompts; next-token log-probs at each prompt's end, and the cache."""
        import torch

        device = self.model.device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1)
        return torch.log_softmax(output.logits[:, -1, :].float(), dim=-1), output.past_key_values, mask

    def _candidate_pass(self, candidates: list[list[list[int]]], first_logprobs, cache, prompt_mask):
        """Sum each candidate's token log-probs: its first token from the prompt pass, the rest from
        one forward of every candidate (right-padded) on a copy of its row's cache."""
        import torch

        device = self.model.device
        rows = [r for r, options in enumerate(candidates) for _ in options]
        flat = [ids for options in candidates for ids in options]
        totals = [float(first_logprobs[r, ids[0]]) for r, ids in zip(rows, flat)]
        rest = max(len(ids) for ids in flat) - 1
        if rest > 0:
            pad = self.tokenizer.pad_token_id
            inputs = torch.tensor([ids[:-1] + [pad] * (rest - len(ids) + 1) for ids in flat], device=device)
            own_mask = torch.tensor([[1] * (len(ids) - 1) + [0] * (rest - len(ids) + 1) for ids in flat],
                                    device=device)
            index = torch.tensor(rows, device=device)
            cache.batch_select_indices(index)
            mask = torch.cat([prompt_mask[index], own_mask], dim=1)
            start = prompt_mask[index].sum(-1, keepdim=True)
            positions = start + torch.arange(rest, device=device).unsqueeze(0)
            output = self.model(input_ids=inputs, attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True)
            logprobs = torch.log_softmax(output.logits.float(), dim=-1)
            for m, ids in enumerate(flat):
                for j, token in enumerate(ids[1:]):
                    totals[m] += float(logprobs[m, j, token])
        out, m = [], 0
        for options in candidates:
            out.append(totals[m:m + len(options)])
            m += len(options)
        return out


class VLLMScorer:
    """The same log-likelihoods from vLLM's prompt log-probabilities (the evaluation's one engine).

    Each (prompt, candidate) pair is one prompt of token ids `prompt + ANSWER_PREFIX + candidate`,
    asked for one new token with `prompt_logprobs=0` (the log-probability of every prompt token
    itself); prefix caching computes each prompt once however many candidates share it. Token ids
    come from the same HF tokenizer as HFScorer's, so both backends score the same tokens.
    """

    backend = "vllm"

    def __init__(self, model_dir: Path, *, batch_size: int = DEFAULTS["score_batch_size"],
                 seed: int = DEFAULTS["seed"], dtype: str = DEFAULTS["dtype"], max_model_len: int | None = None,
                 engine: Any = None, tokenizer: Any = None, think: ThinkForcing = ThinkForcing()):
        if engine is None:
            from transformers import AutoTokenizer

            from grail_sim.evaluation import vllm_engine

            engine = vllm_engine.engine(model_dir, dtype=dtype, seed=seed, max_model_len=max_model_len)
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.engine, self.tokenizer = engine, tokenizer
        self.chunk_size = batch_size * 32  # vLLM schedules its own batches; chunks keep the stream to disk
        # Rendering and candidate tokenisation only: the HF scorer with no model.
        self._helper = HFScorer(None, think=think, loaded=(None, tokenizer))
        self.think = think

    def prompt_length(self, messages: Sequence[dict]) -> int:
        # Only orders prompts (vLLM schedules its own batches): characters stand in for tokens.
        return sum(len(m["content"]) for m in messages)

    def score(self, batch: Sequence[tuple[Sequence[dict], Sequence[str]]]) -> list[ScoredAnswers]:
        from vllm import SamplingParams

        requests, spans = [], []
        for messages, continuations in batch:
            prompt = self._helper.prompt_ids(messages)
            for continuation in continuations:
                ids = self._helper.candidate_ids(continuation)
                requests.append({"prompt_token_ids": prompt + ids})
                spans.append(len(ids))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.engine.generate(requests, params, use_tqdm=False)
        totals = [_candidate_logprob(o.prompt_logprobs, r["prompt_token_ids"], n)
                  for o, r, n in zip(outputs, requests, spans)]
        out, m = [], 0
        for _, answers in batch:
            out.append(ScoredAnswers(tuple(totals[m:m + len(answers)])))
            m += len(answers)
        return out


def _candidate_logprob(prompt_logprobs: Sequence[Any], token_ids: Sequence[int], length: int) -> float:
    """Sum of the last `length` prompt tokens' log-probs from vLLM's `prompt_logprobs` (one dict of
    token id -> Logprob per prompt position, None at position 0)."""
    total = 0.0
    for position in range(len(token_ids) - length, len(token_ids)):
        entry = prompt_logprobs[position][token_ids[position]]
        total += float(getattr(entry, "logprob", entry))
    return total


def make_scorer(model_dir: Path, *, backend: str = DEFAULTS["backend"], batch_size: int = DEFAULTS["score_batch_size"],
                device: str = "auto", dtype: str = DEFAULTS["dtype"], seed: int = DEFAULTS["seed"],
                think: ThinkForcing = ThinkForcing(), max_model_len: int | None = None):
    """The scorer `backend` asks for (`auto`: vLLM on a GPU, else HF); vLLM scores an adapter
    merged into its base, with a context of `max_model_len` tokens (None: the model's own)."""
    model_dir = Path(model_dir)
    use_vllm = backend == "vllm" or (backend == "auto" and vllm_preferred())
    if backend == "vllm" and not vllm_usable():
        raise EvaluationError(f"backend vllm {VLLM_MISSING}")
    if use_vllm:  # an adapter is merged into its base first (cached): vLLM loads full models
        from grail_sim.model.loading import served_model_dir

        return VLLMScorer(served_model_dir(model_dir, dtype=dtype), batch_size=batch_size, seed=seed, dtype=dtype,
                          max_model_len=max_model_len, think=think)
    return HFScorer(model_dir, batch_size=batch_size, device=device, dtype=dtype, think=think)
