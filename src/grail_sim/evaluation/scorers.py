"""Likelihood scoring: the policy's probability of every allowed answer of a prompt, from one
forward pass over the prompt instead of one sampled reply.

What is scored. After the chat prompt, the assistant turn is forced to `ANSWER_PREFIX`
(`<think></think><answer>`), and each candidate answer is the string the format asks for, closed
by its tag: `"1</answer>"`, ..., `"12</answer>"` for a slate, or `"increase</answer>"`,
`"decrease</answer>"`, `"no_change</answer>"` for an opinion direction. Its score is the summed
log-probability of the candidate's tokens after that prefix. Closing the tag is what makes options
10 and above exact: the digits of "1" are a prefix of "12", and only the terminator tells them apart.

Why an empty think. The prompts ask for `<think>brief reasoning</think><answer>N</answer>`; what a
user wants scored is the policy's choice, so the reasoning is left empty and the answer is read off
directly. Scoring after the policy's own greedy think would condition every row on one sampled text
and cost a full generation per row, which is the cost scoring exists to avoid; generation mode
(`evaluate.mode: both`) still shows what the policy writes when it thinks. A policy trained to
write a long think before answering can lose probability mass on valid answers after an empty one:
that shows as a low `valid_mass` (the total probability of all candidates before renormalising),
which the report prints beside the parse rate, so a collapsed policy is plain to see.

Two backends give the same numbers: HF (`HFScorer`: one batched forward over the left-padded
prompts with a KV cache, then one small forward over every candidate's tokens from that cache) on
any device, and vLLM prompt log-probabilities (`VLLMScorer`, with prefix caching) on CUDA nodes
where vllm is installed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from grail_sim.answers import DIRECTIONS
from grail_sim.errors import EvaluationError
from grail_sim.evaluation.generators import DEFAULTS, vllm_usable

log = logging.getLogger(__name__)


ANSWER_PREFIX = "<think></think><answer>"
ANSWER_CLOSE = "</answer>"


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


class HFScorer:
    """Candidate log-likelihoods with a Hugging Face causal LM (full model or merged adapter).

    `score(batch)` takes (messages, candidates) pairs. The prompts go through one forward pass
    (left padding, logits of the last position only, KV cache kept); the cache is then indexed once
    per candidate, and one second forward over the candidates' own tokens (at most a few each)
    gives the rest of each candidate's log-probability.
    """

    backend = "hf"

    def __init__(self, model_dir: Path, *, batch_size: int = DEFAULTS["score_batch_size"], device: str = "auto",
                 dtype: str = DEFAULTS["dtype"]):
        from grail_sim.model.loading import load_policy

        self.model, self.tokenizer = load_policy(model_dir, dtype=dtype, device=device)
        self.chunk_size = batch_size
        self._candidate_ids: dict[str, list[int]] = {}

    def render(self, messages: Sequence[dict]) -> str:
        """The chat prompt with the assistant turn opened and forced up to the answer."""
        prompt = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return prompt + ANSWER_PREFIX

    def prompt_ids(self, messages: Sequence[dict]) -> list[int]:
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def prompt_length(self, messages: Sequence[dict]) -> int:
        return len(self.prompt_ids(messages))

    def candidate_ids(self, answer: str) -> list[int]:
        """Token ids of `answer</answer>`, tokenised on their own: the prefix ends at a tag's `>`,
        a boundary this tokenizer never merges across (tests check it on the embedded tokenizer)."""
        if answer not in self._candidate_ids:
            self._candidate_ids[answer] = self.tokenizer(answer + ANSWER_CLOSE, add_special_tokens=False)["input_ids"]
        return self._candidate_ids[answer]

    def score(self, batch: Sequence[tuple[Sequence[dict], Sequence[str]]]) -> list[ScoredAnswers]:
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
    """The same log-likelihoods from vLLM's prompt log-probabilities (GPU nodes with vllm).

    Each (prompt, candidate) pair is one prompt of token ids `prompt + ANSWER_PREFIX + candidate`,
    asked for one new token with `prompt_logprobs=0` (the log-probability of every prompt token
    itself); prefix caching computes each prompt once however many candidates share it. Token ids
    come from the same HF tokenizer as HFScorer's, so both backends score the same tokens.
    """

    backend = "vllm"

    def __init__(self, model_dir: Path, *, batch_size: int = DEFAULTS["score_batch_size"],
                 seed: int = DEFAULTS["seed"], engine: Any = None,
                 tokenizer: Any = None):
        if engine is None:
            from transformers import AutoTokenizer
            from vllm import LLM

            engine = LLM(model=str(model_dir), seed=seed, enable_prefix_caching=True)
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.engine, self.tokenizer = engine, tokenizer
        self.chunk_size = batch_size * 32  # vLLM schedules its own batches; chunks keep the stream to disk
        self._helper = HFScorer.__new__(HFScorer)  # rendering and candidate tokenisation only, no model
        self._helper.tokenizer, self._helper._candidate_ids = tokenizer, {}

    def prompt_length(self, messages: Sequence[dict]) -> int:
        # Only orders prompts (vLLM schedules its own batches): characters stand in for tokens.
        return sum(len(m["content"]) for m in messages)

    def score(self, batch: Sequence[tuple[Sequence[dict], Sequence[str]]]) -> list[ScoredAnswers]:
        from vllm import SamplingParams

        requests, spans = [], []
        for messages, answers in batch:
            prompt = self._helper.prompt_ids(messages)
            for answer in answers:
                ids = self._helper.candidate_ids(answer)
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
                device: str = "auto", dtype: str = DEFAULTS["dtype"], seed: int = DEFAULTS["seed"]):
    """The scorer `backend` asks for (`auto`: vLLM when usable and the model is not an adapter, else HF)."""
    model_dir = Path(model_dir)
    use_vllm = backend == "vllm" or (backend == "auto" and vllm_usable())
    if backend == "vllm" and not vllm_usable():
        raise EvaluationError("backend vllm needs vllm installed and a CUDA device")
    if use_vllm and (model_dir / "adapter_config.json").is_file():
        log.info("%s is a peft adapter: vLLM needs a merged model, scoring with HF", model_dir)
        use_vllm = False
    if use_vllm:
        return VLLMScorer(model_dir, batch_size=batch_size, seed=seed)
    return HFScorer(model_dir, batch_size=batch_size, device=device, dtype=dtype)
