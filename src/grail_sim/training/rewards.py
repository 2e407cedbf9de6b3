"""Reward functions for GRPO, looked up by name from a recipe's `rewards:` list.

Every function follows TRL's reward signature: keyword arguments `completions` (one per generated
sample, either a string or a conversational list of messages) plus the dataset's pass-through
columns repeated per sample (`gold_index`, `n_options`, `opinion_after`, ...), and returns one float
per completion. All parsing goes through `grail_sim.answers`, so the rewards score exactly what the
evaluation scores.

| name | score |
|---|---|
| `answer_accuracy` | 1 when the parsed `<answer>` index equals `gold_index`; 0 when wrong, out of range or unparsable |
| `format` | 1 for `<think>...</think><answer>...</answer>` and nothing else; 0.5 for an `<answer>` that parses as a choice (or, for opinion rows, gold_index 0, a 0-1 index) without the full format; 0 otherwise |
| `opinion` | opinion rows: 1 - abs(predicted - `opinion_after`) on the 0-1 scale; 0 when unparsable |
| `gail` | GRAIL only: alpha * P(human) from the online discriminator (`grail_sim.discriminator`) |
| `answer_exact_match` | math rows: 1 when the `<answer>` content equals the `answer` column after `answers.canonical_answer` (whitespace, case, trailing zeros, thousands separators, simple fractions); 0 otherwise |
| `boxed_accuracy` | math rows: TRL's `accuracy_reward` (math-verify) on the last `\\boxed{...}` against the `answer` column; None (skipped) when the gold does not parse |
| `boxed_format` | 1 when the completion has a `\\boxed{...}` answer, else 0 (the format reward of the boxed style) |

The partial credit in `format` gives a gradient before the model has learned the full template;
the weights in the recipe keep it from dominating accuracy.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from grail_sim import answers


def completion_text(completion: Any) -> str:
    """The generated text of one completion, conversational (list of messages) or plain."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        return "".join(
            str(message.get("content", "")) for message in completion if message.get("role", "assistant") == "assistant"
        )
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def _require(kwargs: dict, name: str, reward: str, count: int) -> list:
    if name not in kwargs:
        raise KeyError(
            f"reward {reward!r} needs the dataset column {name!r}; columns passed: {sorted(kwargs)}"
        )
    values = list(kwargs[name])
    if len(values) != count:
        raise ValueError(f"reward {reward!r}: column {name!r} has {len(values)} values for {count} completions")
    return values


def answer_accuracy(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the parsed answer equals `gold_index`, else 0.0 (unparsable counts as wrong)."""
    golds = _require(kwargs, "gold_index", "answer_accuracy", len(completions))
    options = _require(kwargs, "n_options", "answer_accuracy", len(completions))
    scores = []
    for completion, gold, n_options in zip(completions, golds, options):
        choice = answers.parse_choice(completion_text(completion), int(n_options))
        scores.append(1.0 if choice is not None and choice == int(gold) else 0.0)
    return scores


def format(completions: Sequence[Any], **kwargs: Any) -> list[float]:  # noqa: A001 - the recipe name
    """1.0 for the full think/answer template, 0.5 for a parsable bare answer, else 0.0."""
    options = kwargs.get("n_options")
    golds = kwargs.get("gold_index")
    scores = []
    for index, completion in enumerate(completions):
        text = completion_text(completion)
        if answers.has_format(text):
            scores.append(1.0)
            continue
        if golds is None and "answer" in kwargs:  # math rows: any non-empty <answer> is a parsable answer
            scores.append(0.5 if answers.canonical_answer(answers.answer_text(text)) is not None else 0.0)
            continue
        # Contract 2: opinion rows carry gold_index 0; next-video rows a 1-based index.
        is_choice = golds is not None and options is not None and int(golds[index]) > 0
        parsed = answers.parse_choice(text, int(options[index])) if is_choice else answers.parse_opinion(text)
        scores.append(0.5 if parsed is not None else 0.0)
    return scores


def opinion(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1 - |predicted - opinion_after| on the 0-1 scale; 0.0 when unparsable or the target is missing."""
    targets = _require(kwargs, "opinion_after", "opinion", len(completions))
    scores = []
    for completion, target in zip(completions, targets):
        predicted = answers.parse_opinion(completion_text(completion))
        if predicted is None or target is None or not math.isfinite(float(target)):
            scores.append(0.0)
        else:
            scores.append(max(0.0, 1.0 - abs(predicted - float(target))))
    return scores


def answer_exact_match(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the canonical `<answer>` content equals the canonical `answer` column, else 0.0."""
    golds = _require(kwargs, "answer", "answer_exact_match", len(completions))
    scores = []
    for completion, gold in zip(completions, golds):
        predicted = answers.canonical_answer(answers.answer_text(completion_text(completion)))
        scores.append(1.0 if predicted is not None and predicted == answers.canonical_answer(gold) else 0.0)
    return scores


def boxed_accuracy(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """TRL's `accuracy_reward` (math-verify: symbolic when both sides parse) on `\\boxed{}` answers,
    with the `answer` column as the ground truth written as LaTeX (`a/b` as `\\frac{a}{b}`)."""
    from trl.rewards import accuracy_reward

    golds = _require(kwargs, "answer", "boxed_accuracy", len(completions))
    texts = [[{"role": "assistant", "content": completion_text(completion)}] for completion in completions]
    solutions = [f"${answers.latex_answer(None if gold is None else str(gold))}$" for gold in golds]
    passed = {key: value for key, value in kwargs.items() if key not in ("solution", "answer")}
    return accuracy_reward(texts, solutions, **passed)


def boxed_format(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion ends its reasoning with a `\\boxed{...}` answer, else 0.0."""
    return [1.0 if answers.boxed_text(completion_text(completion)) is not None else 0.0 for completion in completions]


format.__name__ = "format"

REGISTRY: dict[str, Callable[..., list[float]]] = {
    "answer_accuracy": answer_accuracy,
    "format": format,
    "opinion": opinion,
    "answer_exact_match": answer_exact_match,
    "boxed_accuracy": boxed_accuracy,
    "boxed_format": boxed_format,
}
# Built by the trainer because it carries state (the discriminator); listed so recipes may name it.
STATEFUL = ("gail",)


def get_reward(name: str) -> Callable[..., list[float]]:
    """The registered reward called `name`; an unknown name fails listing the valid ones."""
    if name not in REGISTRY:
        valid = ", ".join(sorted(REGISTRY) + list(STATEFUL))
        raise KeyError(f"unknown reward {name!r}; valid rewards: {valid}")
    return REGISTRY[name]


def normalise_weights(weights: Sequence[float], names: Sequence[str]) -> list[float]:
    """Weights scaled to sum to 1; negative, non-finite or all-zero weights fail naming the reward."""
    if len(weights) != len(names):
        raise ValueError(f"reward_weights has {len(weights)} values for {len(names)} rewards {list(names)}")
    for name, weight in zip(names, weights):
        if not math.isfinite(float(weight)) or float(weight) < 0:
            raise ValueError(f"reward weight for {name!r} must be a finite number >= 0, got {weight!r}")
    total = float(sum(float(w) for w in weights))
    if total <= 0:
        raise ValueError(f"reward_weights {list(weights)} sum to 0; at least one must be positive")
    return [float(w) / total for w in weights]
