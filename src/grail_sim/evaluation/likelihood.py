"""The evaluate stage's scoring mode: the policy's probability of every allowed answer on every row,
scored beside baselines that give probabilities too (#11).

For each next-video row the policy gives a distribution over the row's n options (scorers.py);
uniform 1/n, the position prior and a fitted choice model (baselines.py) give theirs, all fitted on
the `train` split, and choice_metrics.py scores them on the same rows with paired participant
bootstrap intervals. An opinion dataset built with `prompts.opinion_target: direction` is scored
the same way over (increase, decrease, no_change), beside uniform 1/3 and the train split's
direction shares. An index dataset asks for a number, whose probability over a continuum is not
a choice among a few answers: its opinion rows are evaluated by generation only.

Without a train split (an external dataset) the baselines are cross-fitted: fitted on the other
folds of the evaluated rows (participants never straddle folds) and scored on the held-out fold,
so no baseline ever sees the row it is scored on.

On demo data the generator's oracle (data/demo_oracle.py) joins as the source `oracle`: the
ceiling, with each source's recovered share of its gain. The figures then cover the rows the oracle
resolves, for every source alike (the others are counted under `oracle.dropped`), since the share
compares NLLs on the same rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import numpy as np

from grail_sim.answers import DIRECTIONS
from grail_sim.errors import EvaluationError
from grail_sim.evaluation import baselines, decisions
from grail_sim.evaluation.choice_metrics import ORACLE, distribution_metrics
from grail_sim.evaluation.metrics import _participant, bootstrap_means
from grail_sim.evaluation.scorers import candidate_answers
from grail_sim.rows import json_list, viewer_leaning

log = logging.getLogger(__name__)

POLICY = "policy"
CROSS_FIT_FOLDS = 5


def scorable(task: str, dataset) -> bool:
    """Next-video rows always; opinion rows only when their answers are directions (see module doc)."""
    if task == "next_video":
        return True
    return len(dataset) > 0 and str(dataset[0].get("answer")) in DIRECTIONS


def gold_position(task: str, row: dict) -> int | None:
    """The 1-based position of the participant's answer among `candidate_answers` (None: unknown)."""
    if task == "next_video":
        return int(row["gold_index"])
    direction = row.get("opinion_direction")
    return DIRECTIONS.index(direction) + 1 if direction in DIRECTIONS else None


def option_items(row: dict) -> list[dict]:
    """The row's options as slate items (title, channel), for filling a think template: the
    `slate_items` column, or for an imported row without one the OPTIONS lines of its prompt."""
    items = [item for item in json_list(row.get("slate_items"), "slate_items", str(row.get("id")))
             if isinstance(item, dict)]
    if len(items) == int(row["n_options"]):
        return items
    return [{"title": option["text"], "channel": option["channel"]} for option in decisions.decision(row).options]


def continuations(scorer, task: str, row: dict, answers: Sequence[str]) -> list[str]:
    """What the scorer's think forcing appends after its prefix for each candidate answer."""
    think = scorer.think
    if task != "next_video" or not think.template:
        return [think.continuation(answer, k, None) for k, answer in enumerate(answers, 1)]
    return [think.continuation(answer, k, item) for k, (answer, item) in enumerate(zip(answers, option_items(row)), 1)]


def score_batch(scorer, task: str, batch: list[dict]) -> list[dict]:
    """Scores.jsonl records of `batch` (Contract 4): log-likelihoods, the renormalised distribution,
    the probability mass on valid answers, the gold position and the breakdown keys."""
    candidates = [candidate_answers(task, int(row["n_options"]) if task == "next_video" else 0) for row in batch]
    scored = scorer.score([(row["prompt"], continuations(scorer, task, row, answers))
                           for row, answers in zip(batch, candidates)])
    return [{
        "id": str(row["id"]), "task": task, "n_options": len(answers), "gold": gold_position(task, row),
        "candidates": answers, "log_likelihoods": list(result.log_likelihoods),
        "probabilities": result.probabilities, "valid_mass": result.valid_mass,
        "issue": row.get("issue"), "participant_study": row.get("participant_study"),
        "participant_id": row.get("participant_id"), "treatment_arm": row.get("treatment_arm"),
        "viewer_leaning": viewer_leaning(decisions.viewer_text(row)),
    } for row, answers, result in zip(batch, candidates, scored)]


# --------------------------------------------------------------------------- baselines
class DirectionPrior:
    """The train split's shares of increase / decrease / no_change, add-one smoothed (never 0)."""

    def __init__(self, train_rows: Sequence[dict]):
        counts = Counter(r.get("opinion_direction") for r in train_rows)
        self.counts = {d: counts.get(d, 0) for d in DIRECTIONS}
        total = sum(self.counts.values()) + len(DIRECTIONS)
        self.shares = [(self.counts[d] + 1) / total for d in DIRECTIONS]

    def probabilities(self, rows: Sequence[dict]) -> list[np.ndarray]:
        return [np.asarray(self.shares) for _ in rows]

    def describe(self) -> dict[str, Any]:
        return {"train_counts": self.counts, "smoothing": 1.0}


class UniformDirections:
    def probabilities(self, rows: Sequence[dict]) -> list[np.ndarray]:
        return [np.full(len(DIRECTIONS), 1.0 / len(DIRECTIONS)) for _ in rows]

    def describe(self) -> dict[str, Any]:
        return {"probability": 1.0 / len(DIRECTIONS)}


def fit_task_baselines(task: str, train_rows: Sequence[dict], seed: int) -> dict[str, Any]:
    """The fitted baselines of `task`, each with `.probabilities(rows)` and `.describe()`."""
    if task == "next_video":
        return baselines.fit_baselines(train_rows, seed=seed)
    return {"uniform": UniformDirections(), "direction_prior": DirectionPrior(train_rows)}


def baseline_probabilities(task: str, rows: Sequence[dict], train_rows: Sequence[dict] | None,
                           seed: int) -> tuple[dict[str, list], dict[str, Any]]:
    """Each baseline's probability vectors for `rows`, and how each was fitted.

    Fitted on `train_rows`; without them, cross-fitted over participant-grouped folds of `rows`.
    """
    if train_rows is not None:
        fitted = fit_task_baselines(task, train_rows, seed)
        vectors = {name: [list(map(float, p)) for p in model.probabilities(rows)] for name, model in fitted.items()}
        return vectors, {"learned_on": "train", **{name: model.describe() for name, model in fitted.items()}}
    return _cross_fitted(task, rows, seed)


def _cross_fitted(task: str, rows: Sequence[dict], seed: int) -> tuple[dict[str, list], dict[str, Any]]:
    from sklearn.model_selection import GroupKFold

    groups = [_participant(r) for r in rows]
    folds = min(CROSS_FIT_FOLDS, len(set(groups)))
    vectors: dict[str, list] = {}
    if folds < 2:
        raise EvaluationError(f"{len(rows)} rows without a train split: too few to cross-fit baselines")
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_index, held_out in splitter.split(np.zeros(len(rows)), groups=groups):
        fitted = fit_task_baselines(task, [rows[i] for i in fit_index], seed)
        for name, model in fitted.items():
            column = vectors.setdefault(name, [None] * len(rows))
            for i, p in zip(held_out, model.probabilities([rows[i] for i in held_out])):
                column[i] = list(map(float, p))
    return vectors, {"learned_on": f"{folds}-fold cross-fitting on the evaluated rows (no train split)"}


# --------------------------------------------------------------------------- metrics
def _with_oracle(oracle, records: list[dict], rows: list[dict]) -> tuple[list[int], dict]:
    """The indices of the rows the oracle resolves, and what it is and dropped.

    Each resolved record gains `oracle_probabilities`, so scores.jsonl keeps the ceiling's vectors.
    """
    vectors, dropped = oracle.probabilities(rows)
    keep = [i for i, vector in enumerate(vectors) if vector is not None]
    if rows and not keep:  # a truth of another capsule would silently empty every figure
        raise EvaluationError(f"the demo truth resolves none of the {len(rows)} scored rows ({dict(dropped)}): "
                              "is it the ground truth of the capsule these prompts were built from?")
    for i in keep:
        records[i]["oracle_probabilities"] = list(map(float, vectors[i]))
    info = {**oracle.describe(), "resolved_rows": len(keep), "dropped": dict(sorted(dropped.items()))}
    if dropped:
        log.info("oracle: %d of %d rows resolved, dropped %s", len(keep), len(rows), dict(dropped))
    return keep, info


def likelihood_metrics(task: str, records: Sequence[dict], rows: Sequence[dict], train_rows: Sequence[dict] | None,
                       options: dict[str, Any], oracle=None) -> dict[str, Any]:
    """choice_metrics' figures for the policy and every baseline on the scored rows, plus the
    policy's mass on valid answers (a collapsed policy shows a low one).

    Each record gains `baseline_probabilities` (name -> vector), so scores.jsonl holds every
    source's distribution for re-analysis; rows of unknown gold are left out of the figures.
    `oracle` (a demo_oracle.Oracle, next-video rows only) adds the ceiling and the recovered shares,
    on the rows it resolves.
    """
    keep = [i for i, r in enumerate(records) if r["gold"] is not None]
    records, rows = [records[i] for i in keep], [rows[i] for i in keep]
    vectors, fitted = baseline_probabilities(task, rows, train_rows, options["seed"])
    for i, record in enumerate(records):
        record["baseline_probabilities"] = {name: column[i] for name, column in vectors.items()}
    oracle_info = None
    if oracle is not None and task == "next_video":
        # After the baselines, so every record keeps their vectors; the figures then use only the
        # rows the oracle resolves, for every source alike.
        resolved, oracle_info = _with_oracle(oracle, records, rows)
        records = [records[i] for i in resolved]
        vectors = {name: [column[i] for i in resolved] for name, column in vectors.items()}
        vectors[ORACLE] = [r["oracle_probabilities"] for r in records]
    sources = {POLICY: [r["probabilities"] for r in records], **vectors}
    reference = "position_prior" if task == "next_video" else "direction_prior"
    figures = distribution_metrics(records, sources, reference=reference, **options)
    groups = [_participant(r) for r in records]
    figures["valid_mass"] = bootstrap_means(groups, {"valid_mass": [r["valid_mass"] for r in records]},
                                            **options)["valid_mass"]
    figures["baselines"] = fitted
    if oracle_info is not None:
        figures["oracle"] = oracle_info
    figures["candidates"] = list(DIRECTIONS) if task == "opinion" else "option numbers 1..n"
    return figures
