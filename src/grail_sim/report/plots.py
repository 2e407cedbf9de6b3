"""Report figures (matplotlib, Agg backend: no display needed): training curves and the
distribution of answered vs chosen positions. PNG bytes are identical across reruns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io
from grail_sim.evaluation import metrics

CURVES = (("reward", "reward"), ("kl", "KL to the reference"), ("completions/mean_length", "completion length (tokens)"))


def curve(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """Steps and finite numeric values of `key` in a metric log; rows without it are skipped."""
    steps, values = [], []
    for index, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(float(row.get("step", index)))
            values.append(float(value))
    return steps, values


# --------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(rows: Sequence[dict], path: Path) -> Path:
    """One panel per CURVES entry; a metric the run did not log says so instead of an empty axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for axis, (key, label) in zip(axes, CURVES):
        steps, values = curve(rows, key)
        if values:
            axis.plot(steps, values, marker="." if len(values) < 30 else None)
        else:
            axis.text(0.5, 0.5, f"`{key}` not logged", ha="center", va="center", transform=axis.transAxes)
        axis.set_title(label)
        axis.set_xlabel("step")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_positions(distribution: dict[str, Any], title: str, path: Path) -> Path:
    """Model's answered positions beside participants' chosen ones, unparsed answers as a last bar."""
    plt = _pyplot()
    labels = list(distribution["positions"]) + [metrics.UNPARSED]
    predicted = [distribution["predicted"].get(k, 0) for k in distribution["positions"]] + [distribution["unparsed"]]
    gold = [distribution["gold"].get(k, 0) for k in distribution["positions"]] + [0]
    fig, axis = plt.subplots(figsize=(6, 3.2))
    x = list(range(len(labels)))
    axis.bar([i - 0.2 for i in x], predicted, width=0.4, label="model's answer")
    axis.bar([i + 0.2 for i in x], gold, width=0.4, label="participant's choice")
    axis.set_xticks(x, labels)
    axis.set_xlabel("option position")
    axis.set_ylabel("rows")
    axis.set_title(title)
    axis.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: Path) -> None:
    # Fixed metadata keeps the PNG bytes identical across reruns (no timestamp).
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
