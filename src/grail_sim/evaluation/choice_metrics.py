"""Likelihood scores of next-video probability vectors (#11): the policy's and the baselines' alike.

Top-1 accuracy on a few rows cannot tell learning from noise; the probability a source gives to
the option the participant really clicked can. Each source (the policy, uniform 1/n, the position
prior, a fitted choice model) supplies one probability vector per row, over that row's n options,
and is scored here on the same rows with the same participant resamples, so intervals are paired:

- NLL per decision, -ln p(gold) in nats (probabilities clipped at 1e-12 first);
- McFadden pseudo-R² = 1 - ΣNLL / ΣNLL(reference), the reference being the position prior;
- multi-class Brier, Σ_k (p_k - 1[k = gold])², mean over rows;
- ECE of the top-1 choice over `bins` equal-width confidence bins, Σ_b |Σ_{rows in b}(correct - conf)| / N,
  with the reliability diagram's points beside it;
- accuracy@1 and accuracy@2 of the distribution (tied options share a hit, as a random tie-break would);
- total variation ½Σ|·| between the mean predicted position distribution and the humans' gold shares;
- with an `oracle` source (the demo's Bayes-optimal predictor, demo_oracle.py), each source's
  recovered share of the oracle's gain over the reference, (NLL_ref - NLL) / (NLL_ref - NLL_oracle),
  a ratio of totals resampled jointly with the rest (1 = the ceiling, 0 = the reference, < 0 worse).

Pure functions over records and vectors; no model, no files. A group with no rows yields None values.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any, Mapping, Sequence

import numpy as np

from grail_sim.evaluation.metrics import _is_eligible, _participant, bootstrap_statistics, clears

CLIP = 1e-12
SUM_TOLERANCE = 1e-4
# Each figure's direction, for stars and for reading a table: lower NLL, Brier, ECE and TV are better.
HIGHER_IS_BETTER = {"nll": False, "pseudo_r2": True, "brier": False, "ece": False,
                    "accuracy_at_1": True, "accuracy_at_2": True, "total_variation": False}
# The ceiling source: scored like the others, but never a baseline a model is starred against.
ORACLE = "oracle"
BREAKDOWNS = {"by_study": "participant_study", "by_treatment_arm": "treatment_arm",
              "by_viewer_leaning": "viewer_leaning", "by_n_options": "n_options"}


def _matrix(vectors: Sequence[Sequence[float]], n_options: Sequence[int], name: str) -> np.ndarray:
    """Rows x max(n) probabilities, zero beyond a row's n; refuses a vector that is not a distribution.

    A sum off by float rounding (a float32 softmax) is renormalised; anything further off is a bug in
    the source and fails naming it rather than being scored as if it were a distribution.
    """
    lengths = [len(vector) for vector in vectors]
    for i, (length, n) in enumerate(zip(lengths, n_options)):
        if length != n:
            raise ValueError(f"source {name!r}, row {i}: {length} probabilities for {n} options")
    counts = np.asarray(n_options, dtype=int)
    inside = np.arange(max(n_options, default=1))[None, :] < counts[:, None]  # 1: no rows, no empty axis
    out = np.zeros(inside.shape)
    out[inside] = np.fromiter(chain.from_iterable(vectors), dtype=float, count=int(counts.sum()))
    totals = out.sum(axis=1)
    bad = ~np.isfinite(out).all(axis=1) | (out < 0).any(axis=1) | ~(np.abs(totals - 1.0) <= SUM_TOLERANCE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"source {name!r}, row {i}: not a probability vector (sum {totals[i]:.6g})")
    return out / np.where(totals > 0, totals, 1.0)[:, None]


def _source_columns(probs: np.ndarray, gold: np.ndarray, n_options: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Per-row quantities whose totals give every figure of one source.

    Accuracy@k is the expected hit rate of a random tie-break: with `a` options strictly more likely
    than the gold one and `t` as likely (gold included), gold is in the top k with probability
    clip((k - a) / t, 0, 1). So uniform 1/n scores the random 1/n rule, not the share of option 1.
    """
    rows = np.arange(len(gold))
    onehot = np.zeros_like(probs)
    onehot[rows, gold] = 1.0
    inside = np.arange(probs.shape[1])[None, :] < n_options[:, None]
    gold_p = probs[rows, gold][:, None]
    above = ((probs > gold_p) & inside).sum(axis=1)
    level = ((probs == gold_p) & inside).sum(axis=1)
    confidence = probs.max(axis=1)
    correct = np.clip((1 - above) / level, 0.0, 1.0)
    in_bin = np.zeros((len(gold), bins))
    in_bin[rows, np.minimum((confidence * bins).astype(int), bins - 1)] = 1.0
    return {
        "nll": -np.log(np.clip(probs[rows, gold], CLIP, None)),
        "brier": ((probs - onehot) ** 2).sum(axis=1),
        "acc1": correct,
        "acc2": np.clip((2 - above) / level, 0.0, 1.0),
        "gap": in_bin * (correct - confidence)[:, None],
        "position": probs,
        "bin": in_bin,
        "confidence": in_bin * confidence[:, None],
        "correct": in_bin * correct[:, None],
    }


def _statistics(name: str, reference: str | None, oracle: bool = False) -> dict[str, Any]:
    """Each figure of source `name` as a function of bootstrap totals (leading axis: replicates);
    with `oracle` (and a reference) also the recovered share of the oracle's gain."""
    def col(key: str):
        return f"{name}.{key}"

    def ratio(key: str):
        return lambda t: t[col(key)] / t["rows"]

    def pseudo_r2(t):
        if reference is None:
            return np.full(t["rows"].shape, np.nan)
        return 1.0 - t[col("nll")] / t[f"{reference}.nll"]

    def recovered_share(t):
        # One ratio of totals per replicate, so the three NLLs share that replicate's participants.
        return (t[f"{reference}.nll"] - t[col("nll")]) / (t[f"{reference}.nll"] - t[f"{ORACLE}.nll"])

    extra = {"recovered_share": recovered_share} if oracle and reference is not None else {}
    return {
        "nll": ratio("nll"),
        "pseudo_r2": pseudo_r2,
        "brier": ratio("brier"),
        "ece": lambda t: np.abs(t[col("gap")]).sum(axis=1) / t["rows"],
        "accuracy_at_1": ratio("acc1"),
        "accuracy_at_2": ratio("acc2"),
        "total_variation": lambda t: 0.5 * np.abs(t[col("position")] - t["gold"]).sum(axis=1) / t["rows"],
        **extra,
    }


def _reliability(columns: dict[str, np.ndarray], bins: int) -> list[dict[str, Any]]:
    """The reliability diagram's points: per confidence bin, mean confidence, accuracy and row count."""
    counts = columns["bin"].sum(axis=0)
    confidence, correct = columns["confidence"].sum(axis=0), columns["correct"].sum(axis=0)
    return [{"bin": [b / bins, (b + 1) / bins], "count": int(counts[b]),
             "confidence": float(confidence[b] / counts[b]) if counts[b] else None,
             "accuracy": float(correct[b] / counts[b]) if counts[b] else None} for b in range(bins)]


def _shares(totals: np.ndarray, n_rows: int) -> dict[str, float]:
    return {str(k + 1): float(v / n_rows) for k, v in enumerate(totals)}


def _row_columns(records: Sequence[dict], sources: Mapping[str, Sequence], bins: int) -> dict[str, Any]:
    """Every per-row quantity of every source, computed once for all rows; groups take row subsets."""
    n_options = [r["n_options"] for r in records]
    gold = np.array([r["gold"] - 1 for r in records], dtype=int)
    gold_matrix = np.zeros((len(records), max(n_options, default=1)))
    gold_matrix[np.arange(len(records)), gold] = 1.0
    columns: dict[str, np.ndarray] = {"rows": np.ones(len(records)), "gold": gold_matrix,
                                      "n_options": np.asarray(n_options, dtype=int)}
    for name, vectors in sources.items():
        for key, values in _source_columns(_matrix(vectors, n_options, name), gold, np.asarray(n_options), bins).items():
            columns[f"{name}.{key}"] = values
    return columns


def _group_figures(rows: dict[str, np.ndarray], groups: Sequence[str], sources: Sequence[str],
                   reference: str | None, options: dict[str, Any], bins: int) -> dict[str, dict[str, Any]]:
    """Every source's figures on one group of rows (their columns), from one paired participant bootstrap."""
    n_rows = len(groups)
    width = int(rows["n_options"].max(initial=0))  # positions beyond the group's largest slate are dropped
    keys = ("nll", "brier", "acc1", "acc2", "gap")
    columns = {"rows": rows["rows"], "gold": rows["gold"][:, :width],
               **{f"{name}.{key}": rows[f"{name}.{key}"] for name in sources for key in keys},
               **{f"{name}.position": rows[f"{name}.position"][:, :width] for name in sources}}
    oracle = ORACLE in sources
    statistics = {f"{name}/{figure}": statistic
                  for name in sources for figure, statistic in _statistics(name, reference, oracle).items()}
    stats = bootstrap_statistics(groups, columns, statistics, **options)
    gold_distribution = _shares(rows["gold"][:, :width].sum(axis=0), n_rows)
    binned = ("bin", "confidence", "correct")
    figures = (*HIGHER_IS_BETTER, "recovered_share") if oracle and reference is not None else tuple(HIGHER_IS_BETTER)
    return {
        name: {**{figure: stats[f"{name}/{figure}"] for figure in figures},
               "reliability": _reliability({key: rows[f"{name}.{key}"] for key in binned}, bins),
               "mean_distribution": _shares(rows[f"{name}.position"][:, :width].sum(axis=0), n_rows),
               "gold_distribution": gold_distribution, "n": n_rows, "n_participants": len(set(groups))}
        for name in sources
    }


def distribution_metrics(
    records: Sequence[dict],
    sources: Mapping[str, Sequence[Sequence[float]]],
    *,
    reference: str | None = "position_prior",
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    bins: int = 10,
) -> dict[str, Any]:
    """Likelihood, calibration and distribution figures of every source, overall and by breakdown.

    `sources[name][i]` is the probability vector of `records[i]`, of length `n_options`. Rows whose
    gold lies outside the slate are dropped from every source alike and counted. Every group uses
    the same seed, so within a group all sources see the same participant resamples. `reference`
    (None: no pseudo-R²) must be one of the sources; its own pseudo-R² is 0 by construction. With a
    source named `oracle`, every source also gets `recovered_share` (the reference's is 0, the
    oracle's 1), its interval from the same participant resamples as the NLLs it is made of.
    """
    if reference is not None and reference not in sources:
        raise ValueError(f"reference {reference!r} is not among the sources {sorted(sources)}")
    for name, vectors in sources.items():
        if len(vectors) != len(records):
            raise ValueError(f"source {name!r} has {len(vectors)} vectors for {len(records)} records")
    keep = [i for i, r in enumerate(records) if _is_eligible(r)]
    kept = [records[i] for i in keep]
    rows = _row_columns(kept, {name: [vectors[i] for i in keep] for name, vectors in sources.items()}, bins)
    participants = [_participant(r) for r in kept]
    options = {"samples": samples, "seed": seed, "confidence": confidence}

    def figures(indices: Sequence[int]) -> dict[str, dict[str, Any]]:
        chosen = np.asarray(indices, dtype=int)
        return _group_figures({key: values[chosen] for key, values in rows.items()},
                              [participants[i] for i in chosen], list(sources), reference, options, bins)

    def breakdown(key: str) -> dict[str, dict[str, Any]]:
        labels = [str(r.get(key) or "unknown") for r in kept]
        ordered = sorted(set(labels), key=lambda k: (len(k), k))
        return {label: figures([i for i, x in enumerate(labels) if x == label]) for label in ordered}

    return {
        "task": "next_video",
        "reference": reference,
        "n_rows": len(records),
        "n_eligible": len(kept),
        "n_participants": len(set(participants)),
        "dropped": {"gold_outside_slate": len(records) - len(kept)},
        "confidence": confidence,
        "bootstrap_samples": samples,
        "bins": bins,
        "overall": figures(range(len(kept))),
        **{name: breakdown(key) for name, key in BREAKDOWNS.items()},
    }


def clears_best_baseline(
    figures_by_source: Mapping[str, Mapping[str, Any]],
    model: str,
    baselines: Sequence[str],
    metric: str,
    higher_is_better: bool | None = None,
) -> bool:
    """True only when `model`'s interval lies wholly beyond the BEST baseline's interval on `metric`.

    "Best" is by point value (`higher_is_better` defaults to `HIGHER_IS_BETTER[metric]`); a tie in
    value goes to the baseline whose interval reaches further, the harder one to clear. Baselines
    absent or without a value are skipped; with none left there is nothing to clear: False. Callers
    leave the `oracle` out of `baselines`: it is the ceiling, which no model is expected to clear.
    """
    if higher_is_better is None:
        higher_is_better = HIGHER_IS_BETTER[metric]
    sign = 1.0 if higher_is_better else -1.0
    candidates = []
    for name in baselines:
        figure = (figures_by_source.get(name) or {}).get(metric)
        if name != model and figure and figure.get("value") is not None:
            far = figure.get("ci_high") if higher_is_better else figure.get("ci_low")
            candidates.append((sign * figure["value"], sign * far if far is not None else -math.inf, figure))
    if not candidates:
        return False
    best = max(candidates, key=lambda c: (c[0], c[1]))[2]
    own = (figures_by_source.get(model) or {}).get(metric)
    return clears(own, best, higher_is_better=higher_is_better)
