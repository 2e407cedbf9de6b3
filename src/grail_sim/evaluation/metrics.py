"""Pure metric functions over prediction records (Contract 4 rows); no model, no files.

Every figure a report shows is computed here, beside the baselines it must be read against:
next-video accuracy next to the position shortcuts (most-frequent gold index, always-last, random
1/n) and opinion errors next to "no change" and the global mean. A group with no rows yields
`None` values (rendered as "no rows"), never NaN.

Confidence intervals are participant-level percentile bootstraps: rows of one participant are
correlated, so participants (not rows) are resampled. Rows without a participant id count as
their own participant.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

from grail_sim.answers import has_format
from grail_sim.rows import finite, opinion_direction

UNPARSED = "unparsed"


# --------------------------------------------------------------------------- bootstrap
def bootstrap_means(
    groups: Sequence[str],
    scores: dict[str, Sequence[float]],
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    transforms: dict[str, Any] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Point estimate and percentile CI of the mean of each score vector, resampling `groups`.

    `scores[name][i]` belongs to row i of participant `groups[i]`. `transforms[name]` maps a
    mean to the reported value (RMSE is the square root of the mean squared error).
    """
    transforms = transforms or {}
    n = len(groups)
    out: dict[str, dict[str, float | None]] = {}
    if n == 0:
        return {name: {"value": None, "ci_low": None, "ci_high": None, "n": 0} for name in scores}
    index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    member = np.fromiter((index[g] for g in groups), dtype=np.int64, count=n)
    n_groups = len(index)
    counts = np.bincount(member, minlength=n_groups).astype(float)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=max(samples, 0)).astype(float)
    row_totals = weights @ counts if samples > 0 else None
    alpha = (1.0 - confidence) / 2.0
    for name, values in scores.items():
        vector = np.asarray(values, dtype=float)
        if vector.shape != (n,):
            raise ValueError(f"score {name!r} has {vector.shape[0]} values for {n} rows")
        transform = transforms.get(name, lambda x: x)
        point = float(transform(vector.mean()))
        low = high = None
        if samples > 0:
            sums = np.bincount(member, weights=vector, minlength=n_groups)
            means = (weights @ sums) / row_totals
            means = np.array([transform(m) for m in means]) if name in transforms else means
            low, high = (float(x) for x in np.quantile(means, [alpha, 1.0 - alpha]))
        out[name] = {"value": point, "ci_low": low, "ci_high": high, "n": n}
    return out


def _participant(record: dict) -> str:
    return str(record.get("participant_id") or record["id"])


# --------------------------------------------------------------------------- next video
def most_frequent_index(gold_indices: Iterable[int]) -> int | None:
    """The most frequent 1-based gold index (ties go to the smaller index), or None when empty."""
    counts = Counter(int(g) for g in gold_indices)
    if not counts:
        return None
    return min(counts, key=lambda k: (-counts[k], k))


def _is_eligible(record: dict) -> bool:
    n_options, gold = record.get("n_options"), record.get("gold")
    return isinstance(n_options, int) and isinstance(gold, int) and 1 <= gold <= n_options


def position_distribution(records: Sequence[dict]) -> dict[str, Any]:
    """Counts of predicted and gold positions; `top_share` is the most common answer's share.

    A model that answers one position everywhere shows `top_share` near 1 at a glance.
    """
    predicted = Counter(UNPARSED if r.get("parsed") is None else str(r["parsed"]) for r in records)
    gold = Counter(str(r["gold"]) for r in records)
    positions = sorted({k for k in predicted if k != UNPARSED} | set(gold), key=int)
    parsed_counts = {k: v for k, v in predicted.items() if k != UNPARSED}
    n_parsed = sum(parsed_counts.values())
    top = max(parsed_counts, key=lambda k: (parsed_counts[k], -int(k))) if parsed_counts else None
    return {
        "positions": positions,
        "predicted": {k: predicted.get(k, 0) for k in positions},
        "gold": {k: gold.get(k, 0) for k in positions},
        "unparsed": predicted.get(UNPARSED, 0),
        "top_position": top,
        "top_share": (parsed_counts[top] / n_parsed) if top is not None else None,
    }


def next_video_summary(
    records: Sequence[dict],
    *,
    most_frequent: int | None,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Accuracy, parsed/format rates and the three position baselines, with bootstrap CIs."""
    n = len(records)
    groups = [_participant(r) for r in records]
    scores = {
        "accuracy": [1.0 if r.get("parsed") == r["gold"] else 0.0 for r in records],
        "parsed_rate": [0.0 if r.get("parsed") is None else 1.0 for r in records],
        "format_rate": [1.0 if has_format(r.get("raw_output", "")) else 0.0 for r in records],
        "random": [1.0 / r["n_options"] for r in records],
        "always_last": [1.0 if r["gold"] == r["n_options"] else 0.0 for r in records],
        "most_frequent": [1.0 if most_frequent is not None and r["gold"] == most_frequent else 0.0 for r in records],
    }
    stats = bootstrap_means(groups, scores, samples=samples, seed=seed, confidence=confidence)
    baselines = {name: stats.pop(name) for name in ("most_frequent", "random", "always_last")}
    if most_frequent is None:
        baselines["most_frequent"] = {"value": None, "ci_low": None, "ci_high": None, "n": n}
    return {"n": n, "n_participants": len(set(groups)),
            "n_without_participant_id": sum(1 for r in records if not r.get("participant_id")),
            **stats, "baselines": baselines}


def next_video_metrics(
    records: Sequence[dict],
    *,
    train_gold_indices: Iterable[int] | None = None,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All next-video metrics: overall, breakdowns and the predicted-position distribution.

    The most-frequent baseline index is learned on `train_gold_indices`; without a train split
    it is learned on the evaluated rows themselves (recorded in `most_frequent_learned_on`).
    """
    eligible = [r for r in records if _is_eligible(r)]
    dropped = len(records) - len(eligible)
    if train_gold_indices is not None:
        learned_on, index = "train", most_frequent_index(train_gold_indices)
    else:
        learned_on, index = "evaluation rows (no train split given)", most_frequent_index(r["gold"] for r in eligible)
    options = {"most_frequent": index, "samples": samples, "seed": seed, "confidence": confidence}

    def breakdown(key) -> dict[str, Any]:
        keys = sorted({key(r) for r in eligible}, key=lambda k: (len(str(k)), str(k)))
        return {str(k): next_video_summary([r for r in eligible if key(r) == k], **options) for k in keys}

    return {
        "task": "next_video",
        "n_rows": len(records),
        "n_eligible": len(eligible),
        "dropped": {"gold_outside_slate": dropped},
        "most_frequent_index": index,
        "most_frequent_learned_on": learned_on,
        "confidence": confidence,
        "bootstrap_samples": samples,
        "overall": next_video_summary(eligible, **options),
        "by_issue": breakdown(lambda r: r.get("issue") or "unknown"),
        "by_study": breakdown(lambda r: r.get("participant_study") or "unknown"),
        "by_n_options": breakdown(lambda r: r["n_options"]),
        "by_gold_position": breakdown(lambda r: r["gold"]),
        "position_distribution": position_distribution(eligible),
    }


# --------------------------------------------------------------------------- opinion
def opinion_summary(
    records: Sequence[dict],
    *,
    global_mean: float | None,
    tolerance: float,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Model vs "no change" (predict before) and global-mean baselines on the 0-1 scale.

    The model's MAE/RMSE are over parsed rows only (an unparsed answer has no value to score and
    is never replaced by a fallback); the baselines are given on those same rows
    (`*_on_parsed_rows`) and on all rows. Direction accuracy is over all rows: an unparsed answer
    counts as wrong.
    """
    options = {"samples": samples, "seed": seed, "confidence": confidence}
    groups = [_participant(r) for r in records]
    gold_dirs = [opinion_direction(r["opinion_before"], r["opinion_after"], tolerance) for r in records]
    mean = global_mean if global_mean is not None else 0.0
    # The strongest constant-direction predictor: the most common direction among these very rows.
    # A model that answers one constant index moves every participant the same way; without this
    # baseline it would "beat" no-change (which is never right when nobody stays put).
    majority = Counter(gold_dirs).most_common(1)[0][0] if gold_dirs else None
    all_scores = _all_row_scores(records, gold_dirs, mean=mean, majority=majority, tolerance=tolerance)
    sqrt = {name: math.sqrt for name in all_scores if name.endswith("_sq")}
    overall = bootstrap_means(groups, all_scores, transforms=sqrt, **options)

    parsed = [r for r in records if r.get("parsed") is not None]
    parsed_scores = {
        "mae": [abs(r["parsed"] - r["opinion_after"]) for r in parsed],
        "rmse": [(r["parsed"] - r["opinion_after"]) ** 2 for r in parsed],
        **_baseline_error_scores(parsed, mean),
    }
    parsed_sqrt = {"rmse": math.sqrt, **{name: math.sqrt for name in parsed_scores if name.endswith("_sq")}}
    on_parsed = bootstrap_means([_participant(r) for r in parsed], parsed_scores, transforms=parsed_sqrt, **options)

    no_value = {"value": None, "ci_low": None, "ci_high": None, "n": len(records)}
    global_all = _baseline(overall, "global_mean", "global_mean_direction")
    global_parsed = _baseline(on_parsed, "global_mean")
    if global_mean is None:  # no opinion to learn a mean from: the baseline has no value, not 0
        global_all = {key: dict(no_value) for key in global_all}
        global_parsed = {key: dict(no_value) for key in global_parsed}
    return {
        "n": len(records),
        "n_participants": len(set(groups)),
        "n_parsed": len(parsed),
        "parsed_rate": overall["parsed_rate"],
        "format_rate": overall["format_rate"],
        "mae": on_parsed["mae"],
        "rmse": on_parsed["rmse"],
        "direction_accuracy": overall["direction_accuracy"],
        "gold_directions": dict(Counter(gold_dirs)),
        "baselines": {
            "no_change": _baseline(overall, "no_change", "no_change_direction"),
            "global_mean": global_all,
            "majority_direction": {"mae": dict(no_value), "rmse": dict(no_value),
                                   "direction_accuracy": overall["majority_direction"]},
        },
        "majority_direction": majority,
        "baselines_on_parsed_rows": {
            "no_change": _baseline(on_parsed, "no_change"),
            "global_mean": global_parsed,
        },
    }


def _baseline_error_scores(rows: Sequence[dict], mean: float) -> dict[str, list[float]]:
    """Per-row absolute and squared errors of the "no change" and global-mean predictions."""
    return {
        "no_change_abs": [abs(r["opinion_after"] - r["opinion_before"]) for r in rows],
        "no_change_sq": [(r["opinion_after"] - r["opinion_before"]) ** 2 for r in rows],
        "global_mean_abs": [abs(r["opinion_after"] - mean) for r in rows],
        "global_mean_sq": [(r["opinion_after"] - mean) ** 2 for r in rows],
    }


def _all_row_scores(records: Sequence[dict], gold_dirs: Sequence[str], *, mean: float, majority: str | None,
                    tolerance: float) -> dict[str, list[float]]:
    """Per-row scores defined on every row: parse/format rates, the model's and the baselines' directions, errors."""
    return {
        "parsed_rate": [0.0 if r.get("parsed") is None else 1.0 for r in records],
        "format_rate": [1.0 if has_format(r.get("raw_output", "")) else 0.0 for r in records],
        "direction_accuracy": [
            1.0 if r.get("parsed") is not None
            and opinion_direction(r["opinion_before"], r["parsed"], tolerance) == d else 0.0
            for r, d in zip(records, gold_dirs)
        ],
        "no_change_direction": [1.0 if d == "no_change" else 0.0 for d in gold_dirs],
        "majority_direction": [1.0 if d == majority else 0.0 for d in gold_dirs],
        "global_mean_direction": [
            1.0 if opinion_direction(r["opinion_before"], mean, tolerance) == d else 0.0
            for r, d in zip(records, gold_dirs)
        ],
        **_baseline_error_scores(records, mean),
    }


def _baseline(stats: dict[str, dict], prefix: str, direction_key: str | None = None) -> dict[str, dict]:
    """A baseline's MAE and RMSE (from its `_abs`/`_sq` scores) and, when given, its direction accuracy."""
    out = {"mae": stats[f"{prefix}_abs"], "rmse": stats[f"{prefix}_sq"]}
    if direction_key:
        out["direction_accuracy"] = stats[direction_key]
    return out


def opinion_metrics(
    records: Sequence[dict],
    *,
    train_after_values: Iterable[float] | None = None,
    tolerance: float = 1e-6,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All opinion metrics, overall and per study; rows without both opinions are dropped, counted.

    The global-mean baseline predicts the mean post-study index of `train_after_values`; without
    a train split it is the mean over the evaluated rows (recorded in `global_mean_learned_on`).
    """
    has_before = [finite(r.get("opinion_before")) is not None for r in records]
    has_after = [finite(r.get("opinion_after")) is not None for r in records]
    missing_before = [r for r, before in zip(records, has_before) if not before]
    missing_after = [r for r, before, after in zip(records, has_before, has_after) if before and not after]
    scored = [r for r, before, after in zip(records, has_before, has_after) if before and after]
    if train_after_values is not None:
        values = [float(v) for v in train_after_values if finite(v) is not None]
        learned_on = "train"
    else:
        values = [r["opinion_after"] for r in scored]
        learned_on = "evaluation rows (no train split given)"
    global_mean = sum(values) / len(values) if values else None
    options = {"global_mean": global_mean, "tolerance": tolerance, "samples": samples, "seed": seed,
               "confidence": confidence}
    studies = sorted({r.get("participant_study") or "unknown" for r in scored})
    return {
        "task": "opinion",
        "n_rows": len(records),
        "n_scored": len(scored),
        "dropped": {"missing_opinion_before": len(missing_before), "missing_opinion_after": len(missing_after)},
        "global_mean": global_mean,
        "global_mean_learned_on": learned_on,
        "direction_tolerance": tolerance,
        "confidence": confidence,
        "bootstrap_samples": samples,
        "overall": opinion_summary(scored, **options),
        "by_study": {
            study: opinion_summary([r for r in scored if (r.get("participant_study") or "unknown") == study], **options)
            for study in studies
        },
    }


# --------------------------------------------------------------------------- portfolio helpers
def clears(model: dict | None, baseline: dict | None, *, higher_is_better: bool = True) -> bool:
    """True when the model's CI lies wholly beyond the baseline's CI (no overlap)."""
    if not model or not baseline:
        return False
    if None in (model.get("ci_low"), model.get("ci_high"), baseline.get("ci_low"), baseline.get("ci_high")):
        return False
    if higher_is_better:
        return model["ci_low"] > baseline["ci_high"]
    return model["ci_high"] < baseline["ci_low"]
