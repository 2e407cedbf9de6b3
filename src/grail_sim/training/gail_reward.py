"""TRL reward function `gail`: alpha * P(human) from GRAIL's online discriminator, which then
learns from the step's batch (human choices against the policy's and sampled in-slate ones).

The reward for a step is computed before that step's discriminator updates; an unparsable or
out-of-range answer scores 0 ("prob") or log(1e-4) ("log").
"""

from __future__ import annotations

import json
import math
import random
import time

from grail_sim import answers
from grail_sim.rows import json_list
from grail_sim.training.discriminator import Discriminator, render_pair
from grail_sim.training.rewards import completion_text

LOG_P_FLOOR = math.log(1e-4)
REQUIRED_COLUMNS = ("gold_index", "n_options", "slate_items")


class _Batch:
    """The reward call's rows: slates, histories, profiles, gold indices and context ids."""

    def __init__(self, prompts, count: int, kwargs: dict, max_history: int):
        for column in REQUIRED_COLUMNS:
            if column not in kwargs:
                raise KeyError(f"reward 'gail' needs the dataset column {column!r}; columns passed: {sorted(kwargs)}")
        self.slates = [json_list(value, "slate_items") for value in kwargs["slate_items"]]
        self.histories = [json_list(value, "history") for value in kwargs.get("history", [None] * count)]
        self.profiles = [str(value or "") for value in kwargs.get("viewer_profile", [""] * count)]
        self.golds = [int(value) for value in kwargs["gold_index"]]
        self.n_options = kwargs["n_options"]
        self.contexts = list(kwargs.get("id") or [json.dumps(p, sort_keys=True) if not isinstance(p, str) else p
                                                  for p in (prompts or [""] * count)])
        self.max_history = max_history

    def render(self, i: int, chosen: int) -> str:
        return render_pair(self.slates[i], chosen, history=self.histories[i], profile=self.profiles[i],
                           max_history=self.max_history)

    def choice(self, i: int, completion) -> int | None:
        n_options = min(int(self.n_options[i]), len(self.slates[i]))
        return answers.parse_choice(completion_text(completion), n_options) if n_options else None


class GailReward:
    """TRL reward function `gail`: scores completions with D, then updates D on the step's batch."""

    __name__ = "gail"

    def __init__(self, discriminator: Discriminator):
        self.discriminator = discriminator
        self.settings = discriminator.settings
        self.rng = random.Random(discriminator.settings.seed + 1)
        self.frozen = False  # evaluation: score only, never learn
        self.is_training = None  # set by the trainer: a callable, False while TRL evaluates
        self.seconds = 0.0

    def _reward(self, p_human: float | None) -> float:
        if self.settings.reward_form == "log":
            value = LOG_P_FLOOR if p_human is None else max(math.log(max(p_human, 1e-12)), LOG_P_FLOOR)
        else:
            value = 0.0 if p_human is None else p_human
        return self.settings.alpha * value

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        started = time.perf_counter()
        completions = list(completions or [])
        count = len(completions)
        batch = _Batch(prompts, count, kwargs, self.settings.max_history)
        choices = [batch.choice(i, completion) for i, completion in enumerate(completions)]
        valid = [i for i, choice in enumerate(choices) if choice is not None]
        probabilities = self.discriminator.prob_human([batch.render(i, choices[i]) for i in valid])
        p_by_index = dict(zip(valid, probabilities))
        rewards = [self._reward(p_by_index.get(i)) for i in range(count)]

        positives, policy_negatives, sampled = self._examples(batch, choices, valid)
        negatives = policy_negatives + sampled
        metrics: dict[str, float] = {"valid_rate": len(valid) / count if count else 0.0,
                                     "n_positive": float(len(positives)),
                                     "n_negative_policy": float(len(policy_negatives)),
                                     "n_negative_sampled": float(len(sampled))}
        if valid:
            metrics["p_human_policy"] = sum(probabilities) / len(probabilities)
        metrics.update(self._separation(positives, negatives))
        learning = not self.frozen and (self.is_training is None or self.is_training())
        if learning:
            self.discriminator.add(positives, negatives)
            metrics.update(self.discriminator.update())
        metrics["seconds"] = time.perf_counter() - started
        self.seconds += metrics["seconds"]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for key, value in metrics.items():
                log_metric(f"gail/{key}", float(value))
        self.last_metrics = metrics
        return rewards

    def _examples(self, batch: _Batch, choices: list, valid: list[int]) -> tuple[list[str], list[str], list[str]]:
        """Gold texts, one per context; the policy's wrong choices, one per (context, option); and
        sampled in-slate non-gold options topping the negatives up to the positives' count."""
        first_row: dict[str, int] = {}
        for i, context in enumerate(batch.contexts):
            if 1 <= batch.golds[i] <= len(batch.slates[i]):
                first_row.setdefault(context, i)
        positives = {context: batch.render(i, batch.golds[i]) for context, i in first_row.items()}
        policy_negatives = {}
        for i in valid:
            if choices[i] != batch.golds[i] and batch.contexts[i] in first_row:
                policy_negatives[(batch.contexts[i], choices[i])] = batch.render(i, choices[i])
        sampled = []
        if self.settings.sampled_negatives:
            shortfall = len(positives) - len(policy_negatives)
            pool = [(i, option) for context, i in first_row.items()
                    for option in range(1, len(batch.slates[i]) + 1)
                    if option != batch.golds[i] and (context, option) not in policy_negatives]
            self.rng.shuffle(pool)
            sampled = [batch.render(i, option) for i, option in pool[:max(0, shortfall)]]
        return list(positives.values()), list(policy_negatives.values()), sampled

    def _separation(self, positives: list[str], negatives: list[str]) -> dict[str, float]:
        """D's mean P(human) on gold and negative texts, and its accuracy, before this step's update."""
        if not (positives or negatives):
            return {}
        metrics = {}
        p_pos = self.discriminator.prob_human(positives)
        p_neg = self.discriminator.prob_human(negatives)
        if p_pos:
            metrics["p_human_gold"] = sum(p_pos) / len(p_pos)
        if p_neg:
            metrics["p_human_negative"] = sum(p_neg) / len(p_neg)
        correct = sum(p > 0.5 for p in p_pos) + sum(p <= 0.5 for p in p_neg)
        metrics["accuracy"] = correct / (len(p_pos) + len(p_neg))
        return metrics
