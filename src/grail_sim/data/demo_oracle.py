"""The demo's oracle: each row's Bayes-optimal choice probabilities, from the generator's own truth.

The demo generator (demo_capsule.py) knows every video's stance and every viewer's leaning, and
records both in `demo_ground_truth.json` with its behaviour constants. Given them, the choice at a
displayed slate follows exactly `demo_capsule._choose`:

    p(k) = m * w_k 1[k matches] / sum_j w_j 1[j matches] + (1 - m) * w_k / sum_j w_j

with m the stance-match probability and w the position weights of the displayed slots (when no
option matches the leaning, p(k) = w_k / sum_j w_j). No predictor can score better in expectation,
so the oracle is the ceiling the reports measure every model against, never a baseline to clear.

A row is scored only when the truth resolves it exactly; otherwise it is dropped and counted by
reason, never guessed:
- `slate_not_displayed`: the log lost the displayed slate and clean fell back to the tree row; the
  viewer chose among an unlogged subset of it, so the tree row's mixture is not the choice's law;
- `unknown_participant`, `unknown_video`: an id the truth does not hold (not this demo's data);
- `slate_mismatch`: `slate_items` does not hold `n_options` options.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from grail_sim import io
from grail_sim.data.demo_layout import GROUND_TRUTH_FILE
from grail_sim.errors import EvaluationError
from grail_sim.rows import json_list

NAME = "oracle"
# The slate source whose order is the one the viewer chose from (clean's `slate_source`).
DISPLAYED = "displayed"


def load_truth(path: str | Path) -> dict[str, Any]:
    """The ground truth of a demo capsule: its `demo_ground_truth.json`, or the capsule folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH_FILE
    truth = io.read_json_file(path, what="demo ground truth", error=EvaluationError,
                              hint=" (written by `grail-sim demo-capsule`)")
    if "oracle" not in truth or "behaviour_model" not in truth:
        raise EvaluationError(f"{path} holds no oracle truth: rebuild the capsule with this grail-sim version")
    return truth


def choice_distribution(stances: Sequence[str], leaning: str, match_prob: float,
                        position_weights: Sequence[float]) -> np.ndarray:
    """The generator's choice law over a displayed slate of `stances`, for a viewer of `leaning`."""
    if len(stances) > len(position_weights):
        raise ValueError(f"{len(stances)} options but only {len(position_weights)} position weights")
    weights = np.asarray(position_weights[: len(stances)], dtype=float)
    everyone = weights / weights.sum()
    matching = np.array([s == leaning for s in stances], dtype=float)
    if not matching.any():  # _choose then draws from all options whatever the coin says
        return everyone
    matched = weights * matching
    return match_prob * matched / matched.sum() + (1.0 - match_prob) * everyone


class Oracle:
    """The Bayes-optimal predictor of a demo capsule's next-video choices."""

    def __init__(self, truth: Mapping[str, Any]):
        behaviour, oracle = truth["behaviour_model"], truth["oracle"]
        self.match_prob = float(behaviour["stance_match_prob"])
        self.position_weights = [float(w) for w in behaviour["position_weights"]]
        self.leanings: dict[str, str] = dict(oracle["leaning_by_participant"])
        self.stances: dict[str, str] = dict(oracle["stance_by_video"])

    def vector(self, row: Mapping[str, Any]) -> tuple[np.ndarray | None, str | None]:
        """(the row's choice probabilities over its options as displayed, None) or (None, drop reason)."""
        if str(row.get("slate_source") or "") != DISPLAYED:
            return None, "slate_not_displayed"
        leaning = self.leanings.get(str(row.get("participant_id")))
        if leaning is None:
            return None, "unknown_participant"
        slate = json_list(row.get("slate_items"), "slate_items", str(row.get("id")))
        ids = [str(item.get("id")) if isinstance(item, Mapping) else None for item in slate]
        if len(ids) != int(row.get("n_options") or 0) or len(ids) > len(self.position_weights):
            return None, "slate_mismatch"
        if any(vid not in self.stances for vid in ids):
            return None, "unknown_video"
        return choice_distribution([self.stances[vid] for vid in ids], leaning, self.match_prob,
                                   self.position_weights), None

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[np.ndarray | None], Counter]:
        """Each row's vector (None where unresolved) and the unresolved rows counted by reason."""
        vectors, dropped = [], Counter()
        for row in rows:
            vector, reason = self.vector(row)
            vectors.append(vector)
            if reason:
                dropped[reason] += 1
        return vectors, dropped

    def describe(self) -> dict[str, Any]:
        return {"stance_match_prob": self.match_prob, "position_weights": self.position_weights,
                "participants": len(self.leanings), "videos": len(self.stances)}


def oracle_probabilities(truth: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> tuple[list[np.ndarray], Counter]:
    """The vectors of the rows the truth resolves (in row order) and the others counted by reason."""
    vectors, dropped = Oracle(truth).probabilities(rows)
    return [v for v in vectors if v is not None], dropped
