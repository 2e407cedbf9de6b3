"""The stats.json of a prompts build: gold-position baselines, prompt-token lengths and the
record of drops, truncation and leak guards, assembled from the rows the build produced.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping

from grail_sim.prompts.settings import PromptSettings
from grail_sim.rows import SPLITS


def most_frequent_index(golds: list[int]) -> int:
    """The commonest gold position; ties go to the lowest position (counts sorted by position
    first, and `max` keeps the first maximum), so the baseline is the same on every run."""
    return max(sorted(Counter(golds).items()), key=lambda kv: kv[1])[0]


def position_stats(golds: list[int], n_options: list[int], train_most_frequent: int | None) -> dict:
    """Gold-position counts and the accuracy a model would get without reading the prompt."""
    if not golds:
        return {"rows": 0}
    counts = Counter(golds)
    most_frequent, freq = max(sorted(counts.items()), key=lambda kv: kv[1])
    stats = {
        "rows": len(golds),
        "gold_position_counts": {str(k): counts[k] for k in sorted(counts)},
        "n_options_counts": {str(k): v for k, v in sorted(Counter(n_options).items())},
        "baselines": {
            "most_frequent_index": most_frequent,
            "most_frequent_index_accuracy": freq / len(golds),
            "always_last_accuracy": sum(g == n for g, n in zip(golds, n_options)) / len(golds),
            "random_expected_accuracy": sum(1.0 / n for n in n_options) / len(golds),
        },
    }
    if train_most_frequent is not None:
        # The position a majority-class model fitted on train would answer, scored on this split.
        stats["baselines"]["train_most_frequent_index"] = train_most_frequent
        stats["baselines"]["train_most_frequent_index_accuracy"] = (
            sum(g == train_most_frequent for g in golds) / len(golds)
        )
    return stats


def token_stats(tokens: list[int]) -> dict:
    """Mean, nearest-rank 95th percentile and maximum of the prompt lengths."""
    if not tokens:
        return {"rows": 0}
    ordered = sorted(tokens)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"rows": len(tokens), "mean": sum(tokens) / len(tokens), "p95": p95, "max": ordered[-1]}


def _next_video_stats(rows: Mapping[str, list[dict]], kept: int, drops: Counter, truncation: Counter) -> dict:
    train_most_frequent = most_frequent_index([r["gold_index"] for r in rows["train"]])
    return {
        "rows_kept": kept, "drops": dict(drops),
        "splits": {s: position_stats([r["gold_index"] for r in rows[s]], [r["n_options"] for r in rows[s]],
                                     train_most_frequent)
                   for s in SPLITS},
        "prompt_tokens": {s: token_stats([r["prompt_tokens"] for r in rows[s]]) for s in SPLITS},
        "truncation": dict(truncation),
    }


def _opinion_stats(rows: Mapping[str, list[dict]], participants: int, kept: int, drops: Counter,
                   truncation: Counter) -> dict:
    return {
        "participants": participants, "rows_kept": kept, "drops": dict(drops),
        "splits": {s: {"rows": len(rows[s]),
                       "direction_counts": dict(Counter(r["opinion_direction"] for r in rows[s]))}
                   for s in SPLITS},
        "prompt_tokens": {s: token_stats([r["prompt_tokens"] for r in rows[s]]) for s in SPLITS},
        "truncation": dict(truncation),
    }


def build_stats(*, issue: str, settings: PromptSettings, rows_read: int, out: Mapping[str, Mapping[str, list]],
                selection: Any, truncation: Mapping[str, Counter], guards: Mapping[str, dict]) -> dict:
    """stats.json of one issue. `selection` is the build's row selection (kept rows, drops, the
    opinion candidates); `guards` the results of the three leak guards, all of which passed."""
    return {
        "issue": issue,
        "settings": settings.describe(),
        "rows_read": rows_read,
        "next_video": _next_video_stats(out["next_video"], len(selection.kept), selection.drops,
                                        truncation["next_video"]),
        "opinion": _opinion_stats(out["opinion"], selection.participants, len(selection.opinion_rows),
                                  selection.opinion_drops, truncation["opinion"]),
        "leak_guards": {
            "option_rendering": {**guards["option_rendering"], "passed": True},
            "post_treatment": {**guards["post_treatment"], "violations": 0, "passed": True},
            "future_history": {**guards["future_history"], "passed": True},
        },
    }
