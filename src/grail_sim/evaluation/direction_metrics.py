"""Generation figures of an opinion dataset that asks for a direction word
(`prompts.opinion_target: direction`): parse and format rates and direction accuracy, beside
"always the majority direction" (learned on train) and "no change", with participant-bootstrap
intervals. The index target's figures (MAE, RMSE, change correlation) are metrics.py's.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from grail_sim.answers import DIRECTIONS, has_format
from grail_sim.evaluation.metrics import _participant, bootstrap_means, majority_direction


def direction_summary(records: Sequence[dict], *, majority: str | None, samples: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, Any]:
    """One group's figures; an unparsed answer counts as wrong."""
    groups = [_participant(r) for r in records]
    scores = {
        "parsed_rate": [0.0 if r.get("parsed") is None else 1.0 for r in records],
        "format_rate": [1.0 if has_format(r.get("raw_output", "")) else 0.0 for r in records],
        "direction_accuracy": [1.0 if r.get("parsed") == r["gold"] else 0.0 for r in records],
        "majority_direction": [1.0 if majority is not None and r["gold"] == majority else 0.0 for r in records],
        "no_change": [1.0 if r["gold"] == "no_change" else 0.0 for r in records],
    }
    stats = bootstrap_means(groups, scores, samples=samples, seed=seed, confidence=confidence)
    return {
        "n": len(records), "n_participants": len(set(groups)),
        "parsed_rate": stats["parsed_rate"], "format_rate": stats["format_rate"],
        "direction_accuracy": stats["direction_accuracy"],
        "gold_directions": dict(Counter(r["gold"] for r in records)),
        "baselines": {"majority_direction": stats["majority_direction"], "no_change": stats["no_change"]},
    }


def direction_metrics(records: Sequence[dict], *, train_directions: Iterable[str] | None = None,
                      samples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """All direction figures, overall and per study; rows of unknown direction are dropped, counted."""
    scored = [r for r in records if r.get("gold") in DIRECTIONS]
    if train_directions is not None:
        majority, learned_on = majority_direction(d for d in train_directions if d in DIRECTIONS), "train"
    else:
        majority, learned_on = majority_direction(r["gold"] for r in scored), "evaluation rows (no train split given)"
    options = {"majority": majority, "samples": samples, "seed": seed, "confidence": confidence}
    studies = sorted({r.get("participant_study") or "unknown" for r in scored})
    return {
        "task": "opinion", "target": "direction", "n_rows": len(records), "n_scored": len(scored),
        "dropped": {"unknown_direction": len(records) - len(scored)},
        "majority_direction": majority, "majority_direction_learned_on": learned_on,
        "confidence": confidence, "bootstrap_samples": samples,
        "overall": direction_summary(scored, **options),
        "by_study": {study: direction_summary([r for r in scored if (r.get("participant_study") or "unknown") == study],
                                              **options) for study in studies},
    }
