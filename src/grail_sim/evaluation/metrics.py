"""Pure metric functions over prediction records (Contract 4 rows); no model, no files.

Every figure a report shows is computed here, beside the baselines it must be read against:
next-video accuracy next to the position shortcuts (most-frequent gold index, always-last, random
1/n) and opinion errors next to "no change", the global mean, the train-mean change and the
majority direction, each learned on train when a train split is given. A group with no rows
yields `None` values (rendered as "no rows"), never NaN.

Confidence intervals are participant-level percentile bootstraps: rows of one participant are
correlated, so participants (not rows) are resampled. Rows without a participant id count as
their own participant. `bootstrap_means` serves means of per-row scores; `bootstrap_statistics`
serves ratios of totals (a correlation here, pseudo-R² and ECE in `choice_metrics`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from grail_sim.answers import DIRECTIONS, has_format
from grail_sim.rows import finite, opinion_direction

UNPARSED = "unparsed"


# --------------------------------------------------------------------------- bootstrap
def _no_figure(n: int) -> dict[str, float | int | None]:
    return {"value": None, "ci_low": None, "ci_high": None, "n": n}


def _resample_weights(groups: Sequence[str], samples: int, seed: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Each row's participant number, the number of participants and `samples` x participants counts.

    One draw serves every score of a call, so all figures computed together are paired: a model's and a
    baseline's replicates resample the very same participants.
    """
    index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    member = np.fromiter((index[g] for g in groups), dtype=np.int64, count=len(groups))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(index), np.full(len(index), 1.0 / len(index)), size=max(samples, 0))
    return member, len(index), weights.astype(float)


def _interval(replicates: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval over the finite replicates (a replicate can be undefined, e.g. zero variance)."""
    finite_values = replicates[np.isfinite(replicates)]
    if finite_values.size == 0:
        return None, None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite_values, [alpha, 1.0 - alpha])
    return float(low), float(high)


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
        return {name: _no_figure(0) for name in scores}
    member, n_groups, weights = _resample_weights(groups, samples, seed)
    counts = np.bincount(member, minlength=n_groups).astype(float)
    row_totals = weights @ counts if samples > 0 else None
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
            low, high = _interval(means, confidence)
        out[name] = {"value": point, "ci_low": low, "ci_high": high, "n": n}
    return out


def bootstrap_statistics(
    groups: Sequence[str],
    columns: Mapping[str, Any],
    statistics: Mapping[str, Callable[[dict[str, np.ndarray]], np.ndarray]],
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float | int | None]]:
    """Point estimate and percentile CI of statistics of column totals, resampling `groups`.

    Ratios (pseudo-R², a correlation, ECE) are not means of one per-row score, but each is a function
    of a few totals. `columns[name]` holds one value (shape (n,)) or one vector (shape (n, d)) per row;
    each statistic receives {name: totals} with a leading replicate axis, (k,) or (k, d), and returns
    (k,) values. Per-participant sums are taken once, so every replicate costs one matrix product.
    A value that is NaN or infinite (an empty denominator) is reported as None, never as NaN.
    """
    n = len(groups)
    if n == 0:
        return {name: _no_figure(0) for name in statistics}
    member, n_groups, weights = _resample_weights(groups, samples, seed)
    blocks, slices, start = [], {}, 0
    for name, values in columns.items():
        array = np.asarray(values, dtype=float)
        if array.shape[:1] != (n,) or array.ndim > 2:
            raise ValueError(f"column {name!r} has shape {array.shape} for {n} rows")
        width = 1 if array.ndim == 1 else array.shape[1]
        slices[name] = (slice(start, start + width), array.ndim == 1)
        blocks.append(array.reshape(n, width))
        start += width
    sums = np.zeros((n_groups, start))
    if blocks:
        np.add.at(sums, member, np.concatenate(blocks, axis=1))

    def split(totals: np.ndarray) -> dict[str, np.ndarray]:
        return {name: totals[:, cols][:, 0] if flat else totals[:, cols] for name, (cols, flat) in slices.items()}

    point_totals = split(sums.sum(axis=0, keepdims=True))
    replicate_totals = split(weights @ sums) if samples > 0 else None
    with np.errstate(divide="ignore", invalid="ignore"):
        points = [float(np.asarray(f(point_totals), dtype=float)[0]) for f in statistics.values()]
        replicates = [np.asarray(f(replicate_totals), dtype=float) for f in statistics.values()] if samples else []
    bounds = _intervals(np.stack(replicates), confidence) if replicates else [(None, None)] * len(points)
    out = {}
    for name, point, (low, high) in zip(statistics, points, bounds):
        defined = math.isfinite(point)
        out[name] = {"value": point if defined else None, "ci_low": low if defined else None,
                     "ci_high": high if defined else None, "n": n}
    return out


def _intervals(replicates: np.ndarray, confidence: float) -> list[tuple[float | None, float | None]]:
    """`_interval` of each row of a statistics x samples array, in one quantile call when all are finite."""
    if np.all(np.isfinite(replicates)):
        alpha = (1.0 - confidence) / 2.0
        low, high = np.quantile(replicates, [alpha, 1.0 - alpha], axis=1)
        return [(float(a), float(b)) for a, b in zip(low, high)]
    return [_interval(row, confidence) for row in replicates]


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
_FROM_ROWS = object()  # "learn the majority direction on the evaluated rows" (no train split given)


def majority_direction(directions: Iterable[str]) -> str | None:
    """The most common of `DIRECTIONS` (ties in that order), or None when there is none."""
    counts = Counter(d for d in directions if d in DIRECTIONS)
    return min(counts, key=lambda d: (-counts[d], DIRECTIONS.index(d))) if counts else None


def opinion_summary(
    records: Sequence[dict],
    *,
    global_mean: float | None,
    tolerance: float,
    mean_change: float | None = None,
    majority: Any = _FROM_ROWS,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Model vs "no change" (predict before), global-mean, train-mean-change and majority-direction baselines.

    The model's MAE/RMSE are over parsed rows only (an unparsed answer has no value to score and
    is never replaced by a fallback); the baselines are given on those same rows
    (`*_on_parsed_rows`) and on all rows. Direction accuracy is over all rows: an unparsed answer
    counts as wrong. `mean_change` (None: no value) and `majority` are learned by the caller,
    normally on train; without a given `majority` it is the most common direction of these rows.
    """
    options = {"samples": samples, "seed": seed, "confidence": confidence}
    groups = [_participant(r) for r in records]
    gold_dirs = [opinion_direction(r["opinion_before"], r["opinion_after"], tolerance) for r in records]
    # The strongest constant-direction predictor. A model that answers one constant index moves every
    # participant the same way; without this baseline it would "beat" no-change (which is never right
    # when nobody stays put).
    majority = majority_direction(gold_dirs) if majority is _FROM_ROWS else majority
    constants = {"mean": 0.0 if global_mean is None else global_mean,
                 "change": 0.0 if mean_change is None else mean_change}
    all_scores = _all_row_scores(records, gold_dirs, majority=majority, tolerance=tolerance, **constants)
    sqrt = {name: math.sqrt for name in all_scores if name.endswith("_sq")}
    overall = bootstrap_means(groups, all_scores, transforms=sqrt, **options)

    parsed = [r for r in records if r.get("parsed") is not None]
    parsed_scores = {
        "mae": [abs(r["parsed"] - r["opinion_after"]) for r in parsed],
        "rmse": [(r["parsed"] - r["opinion_after"]) ** 2 for r in parsed],
        **_baseline_error_scores(parsed, **constants),
    }
    parsed_sqrt = {"rmse": math.sqrt, **{name: math.sqrt for name in parsed_scores if name.endswith("_sq")}}
    parsed_groups = [_participant(r) for r in parsed]
    on_parsed = bootstrap_means(parsed_groups, parsed_scores, transforms=parsed_sqrt, **options)

    no_value = _no_figure(len(records))
    names = ("no_change", "global_mean", "train_mean_change")
    baselines = {name: _baseline(overall, name, f"{name}_direction") for name in names}
    on_parsed_baselines = {name: _baseline(on_parsed, name) for name in names}
    for name, learned in (("global_mean", global_mean), ("train_mean_change", mean_change)):
        if learned is None:  # nothing to learn it from: the baseline has no value, not 0
            baselines[name] = {key: dict(no_value) for key in baselines[name]}
            on_parsed_baselines[name] = {key: dict(no_value) for key in on_parsed_baselines[name]}
    majority_accuracy = overall["majority_direction"] if majority is not None else dict(no_value)
    baselines["majority_direction"] = {"mae": dict(no_value), "rmse": dict(no_value),
                                       "direction_accuracy": majority_accuracy}
    return {
        "n": len(records),
        "n_participants": len(set(groups)),
        "n_parsed": len(parsed),
        "parsed_rate": overall["parsed_rate"],
        "format_rate": overall["format_rate"],
        "mae": on_parsed["mae"],
        "rmse": on_parsed["rmse"],
        "direction_accuracy": overall["direction_accuracy"],
        "change_correlation": change_correlation(parsed, parsed_groups, **options),
        "gold_directions": dict(Counter(gold_dirs)),
        "baselines": baselines,
        "majority_direction": majority,
        "baselines_on_parsed_rows": on_parsed_baselines,
    }


def change_correlation(parsed: Sequence[dict], groups: Sequence[str], **options: Any) -> dict[str, Any]:
    """Pearson r of the predicted change (parsed - before) with the actual change (after - before).

    MAE rewards predicting "little change" for everyone; the correlation asks whether the model knows
    who moves more. None with fewer than 3 rows or when either change has no variance.
    """
    x = np.array([r["parsed"] - r["opinion_before"] for r in parsed], dtype=float)
    y = np.array([r["opinion_after"] - r["opinion_before"] for r in parsed], dtype=float)
    if len(parsed) < 3:
        return _no_figure(len(parsed))
    x, y = x - x.mean(), y - y.mean()  # centred: the sums below then lose no precision

    def pearson(t: dict[str, np.ndarray]) -> np.ndarray:
        n = t["one"]
        vx, vy = n * t["xx"] - t["x"] ** 2, n * t["yy"] - t["y"] ** 2
        defined = (vx > 1e-12 * n * n) & (vy > 1e-12 * n * n)
        return np.where(defined, (n * t["xy"] - t["x"] * t["y"]) / np.sqrt(np.where(defined, vx * vy, 1.0)), np.nan)

    columns = {"one": np.ones_like(x), "x": x, "y": y, "xx": x * x, "yy": y * y, "xy": x * y}
    return bootstrap_statistics(groups, columns, {"r": pearson}, **options)["r"]


def _baseline_error_scores(rows: Sequence[dict], mean: float, change: float) -> dict[str, list[float]]:
    """Per-row absolute and squared errors of the "no change", global-mean and train-mean-change predictions."""
    shifted = [_train_mean_change(r, change) for r in rows]
    return {
        "no_change_abs": [abs(r["opinion_after"] - r["opinion_before"]) for r in rows],
        "no_change_sq": [(r["opinion_after"] - r["opinion_before"]) ** 2 for r in rows],
        "global_mean_abs": [abs(r["opinion_after"] - mean) for r in rows],
        "global_mean_sq": [(r["opinion_after"] - mean) ** 2 for r in rows],
        "train_mean_change_abs": [abs(r["opinion_after"] - p) for r, p in zip(rows, shifted)],
        "train_mean_change_sq": [(r["opinion_after"] - p) ** 2 for r, p in zip(rows, shifted)],
    }


def _train_mean_change(record: dict, change: float) -> float:
    """before + the mean train change, kept on the 0-1 scale a model's answer must stay on."""
    return min(1.0, max(0.0, record["opinion_before"] + change))


def _all_row_scores(records: Sequence[dict], gold_dirs: Sequence[str], *, mean: float, change: float,
                    majority: str | None, tolerance: float) -> dict[str, list[float]]:
    """Per-row scores defined on every row: parse/format rates, the model's and the baselines' directions, errors."""
    def hit(predicted: float | None, record: dict, gold: str) -> float:
        before = record["opinion_before"]
        return float(predicted is not None and opinion_direction(before, predicted, tolerance) == gold)

    pairs = list(zip(records, gold_dirs))
    return {
        "parsed_rate": [0.0 if r.get("parsed") is None else 1.0 for r in records],
        "format_rate": [1.0 if has_format(r.get("raw_output", "")) else 0.0 for r in records],
        "direction_accuracy": [hit(r.get("parsed"), r, d) for r, d in pairs],
        "no_change_direction": [1.0 if d == "no_change" else 0.0 for d in gold_dirs],
        "majority_direction": [1.0 if d == majority else 0.0 for d in gold_dirs],
        "global_mean_direction": [hit(mean, r, d) for r, d in pairs],
        "train_mean_change_direction": [hit(_train_mean_change(r, change), r, d) for r, d in pairs],
        **_baseline_error_scores(records, mean, change),
    }


def _baseline(stats: dict[str, dict], prefix: str, direction_key: str | None = None) -> dict[str, dict]:
    """A baseline's MAE and RMSE (from its `_abs`/`_sq` scores) and, when given, its direction accuracy."""
    out = {"mae": stats[f"{prefix}_abs"], "rmse": stats[f"{prefix}_sq"]}
    if direction_key:
        out["direction_accuracy"] = stats[direction_key]
    return out


def _train_pairs(before: Iterable[float], after: Iterable[float]) -> list[tuple[float, float]]:
    """Train (before, after) pairs with both indices finite; the two lists must be aligned."""
    before, after = list(before), list(after)
    if len(before) != len(after):
        raise ValueError(f"train_before_values has {len(before)} values, train_after_values {len(after)}")
    pairs = [(finite(b), finite(a)) for b, a in zip(before, after)]
    return [(b, a) for b, a in pairs if b is not None and a is not None]


def opinion_metrics(
    records: Sequence[dict],
    *,
    train_after_values: Iterable[float] | None = None,
    train_before_values: Iterable[float] | None = None,
    tolerance: float = 1e-6,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All opinion metrics, overall and per study; rows without both opinions are dropped, counted.

    Baselines are learned on train so that none sees the answers it is scored on: the global mean of
    `train_after_values`; the mean change and the majority direction of the train (before, after) pairs,
    which need `train_before_values` aligned with `train_after_values`. Whatever is not given is learned
    on the evaluated rows instead, and each `*_learned_on` says where.
    """
    has_before = [finite(r.get("opinion_before")) is not None for r in records]
    has_after = [finite(r.get("opinion_after")) is not None for r in records]
    missing_before = [r for r, before in zip(records, has_before) if not before]
    missing_after = [r for r, before, after in zip(records, has_before, has_after) if before and not after]
    scored = [r for r, before, after in zip(records, has_before, has_after) if before and after]
    own = "evaluation rows (no train split given)"
    if train_after_values is not None:
        train_after_values = list(train_after_values)
        values, learned_on = [float(v) for v in train_after_values if finite(v) is not None], "train"
    else:
        values, learned_on = [r["opinion_after"] for r in scored], own
    if train_before_values is not None and train_after_values is not None:
        pairs, change_on = _train_pairs(train_before_values, train_after_values), "train"
        majority = majority_direction(opinion_direction(b, a, tolerance) for b, a in pairs)
    else:
        pairs, change_on, majority = [(r["opinion_before"], r["opinion_after"]) for r in scored], own, _FROM_ROWS
    global_mean = sum(values) / len(values) if values else None
    mean_change = sum(a - b for b, a in pairs) / len(pairs) if pairs else None
    options = {"global_mean": global_mean, "mean_change": mean_change, "majority": majority,
               "tolerance": tolerance, "samples": samples, "seed": seed, "confidence": confidence}
    studies = sorted({r.get("participant_study") or "unknown" for r in scored})
    return {
        "task": "opinion",
        "n_rows": len(records),
        "n_scored": len(scored),
        "dropped": {"missing_opinion_before": len(missing_before), "missing_opinion_after": len(missing_after)},
        "global_mean": global_mean,
        "global_mean_learned_on": learned_on,
        "mean_change": mean_change,
        "mean_change_learned_on": change_on,
        "majority_direction": None if majority is _FROM_ROWS else majority,
        "majority_direction_learned_on": change_on,
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
