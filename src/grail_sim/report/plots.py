"""Report figures (matplotlib, Agg backend: no display needed): training curves, the
distribution of answered vs chosen positions, for scored rows the reliability diagram and the
mean predicted position distribution of the policy and every baseline, and the simulation
report's effects of every predictor beside the observed ones. PNG bytes are identical across
reruns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

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
    """One panel per CURVES entry (its evaluation-during-training values beside the training ones); a
    metric the run did not log says so instead of an empty axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for axis, (key, label) in zip(axes, CURVES):
        # Evaluation during training logs the same metric with TRL's `eval_` prefix: drawn beside it.
        drawn = []
        for logged, name in ((key, "training"), (f"eval_{key}", "evaluation")):
            steps, values = curve(rows, logged)
            if values:
                axis.plot(steps, values, marker="." if len(values) < 30 else None, label=name)
                drawn.append(name)
        if not drawn:
            axis.text(0.5, 0.5, f"`{key}` not logged", ha="center", va="center", transform=axis.transAxes)
        elif "evaluation" in drawn:
            axis.legend(fontsize="small")
        axis.set_title(label)
        axis.set_xlabel("step")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


# GRAIL's discriminator, per step, before that step's update (gail_reward logs these).
DISCRIMINATOR_PROBABILITIES = (("gail/p_human_gold", "human choices"), ("gail/p_human_policy", "policy choices"),
                               ("gail/p_human_negative", "all synthetic"))


def plot_discriminator(rows: Sequence[dict], path: Path) -> Path | None:
    """GRAIL's discriminator over training: its accuracy on human vs synthetic choices, and its mean
    P(human) for each kind; None (no figure) for a run without a discriminator."""
    if not curve(rows, "gail/accuracy")[1]:
        return None
    plt = _pyplot()
    fig, (accuracy, probability) = plt.subplots(1, 2, figsize=(9, 3.2))
    steps, values = curve(rows, "gail/accuracy")
    accuracy.plot(steps, values, marker="." if len(values) < 30 else None)
    accuracy.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    accuracy.set_ylim(0, 1)
    accuracy.set_title("accuracy, human vs synthetic")
    for key, label in DISCRIMINATOR_PROBABILITIES:
        steps, values = curve(rows, key)
        if values:
            probability.plot(steps, values, marker="." if len(values) < 30 else None, label=label)
    probability.set_ylim(0, 1)
    probability.set_title("mean P(human)")
    probability.legend(fontsize="small")
    for axis in (accuracy, probability):
        axis.set_xlabel("step")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def discriminator_gap(rows: Sequence[dict]) -> dict[str, float] | None:
    """Mean P(human) of human minus policy choices, first and last logged step; None without both."""
    gaps = [row["gail/p_human_gold"] - row["gail/p_human_policy"] for row in rows
            if isinstance(row.get("gail/p_human_gold"), (int, float)) and
            isinstance(row.get("gail/p_human_policy"), (int, float))]
    return {"first": gaps[0], "last": gaps[-1], "n": len(gaps)} if gaps else None


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


def _source_order(figures: Mapping[str, Any], order: Sequence[str] | None) -> list[str]:
    """`order` when the caller gives its table's order, else the policy first, then the rest as recorded."""
    return list(order) if order is not None else sorted(figures, key=lambda name: name != "policy")


def plot_reliability(figures: Mapping[str, Mapping[str, Any]], path: Path, title: str = "", *,
                     order: Sequence[str] | None = None, names: Mapping[str, str] | None = None) -> Path:
    """One panel per source: accuracy against mean confidence of each non-empty bin, each point
    labelled with its row count, over the diagonal of perfect calibration.

    `figures` maps a source to its choice_metrics group figures (the `overall` entry). Counts are
    printed because a bin of 2 rows far off the diagonal says little; the faint bars show where the
    rows are. `order` and `names` give the panels' order and titles (default: source keys).
    """
    plt = _pyplot()
    sources = _source_order(figures, order)
    fig, axes = plt.subplots(1, max(len(sources), 1), figsize=(3.2 * max(len(sources), 1), 3.4), squeeze=False)
    for axis, name in zip(axes[0], sources):
        points = figures[name].get("reliability") or []
        total = sum(p["count"] for p in points) or 1
        lows = [p["bin"][0] for p in points]
        widths = [p["bin"][1] - p["bin"][0] for p in points]
        axis.bar(lows, [p["count"] / total for p in points], width=widths, align="edge", color="0.85",
                 label="share of rows")
        axis.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1)
        filled = [p for p in points if p["count"]]
        axis.plot([p["confidence"] for p in filled], [p["accuracy"] for p in filled], marker="o", label="accuracy")
        for p in filled:
            axis.annotate(str(p["count"]), (p["confidence"], p["accuracy"]), textcoords="offset points",
                          xytext=(3, 4), fontsize=7)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.05)
        axis.set_title((names or {}).get(name, name), fontsize=9)
        axis.set_xlabel("confidence of the top option")
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="upper left", fontsize=7)
    return _finish(plt, fig, path, title)


def plot_mean_distribution(figures: Mapping[str, Mapping[str, Any]], path: Path, title: str = "", *,
                           position_labels: Sequence[str] | None = None, order: Sequence[str] | None = None,
                           names: Mapping[str, str] | None = None) -> Path:
    """Participants' chosen positions beside each source's mean predicted distribution (shares).

    `position_labels` names the positions (direction words for an opinion direction); `order` and
    `names` give the sources' order and legend labels.
    """
    plt = _pyplot()
    sources = _source_order(figures, order)
    gold = next(iter(figures.values()))["gold_distribution"] if figures else {}
    positions = list(gold)
    width = 0.8 / (len(sources) + 1)
    fig, axis = plt.subplots(figsize=(min(12.0, max(6.0, 0.35 * len(positions) * (len(sources) + 1))), 3.4))
    series = [("participants' choices", gold)] + [((names or {}).get(name, name), figures[name]["mean_distribution"])
                                                  for name in sources]
    for k, (label, shares) in enumerate(series):
        axis.bar([i + (k - len(sources) / 2) * width for i in range(len(positions))],
                 [shares.get(p, 0.0) for p in positions], width=width, label=label,
                 color="black" if k == 0 else None)
    axis.set_xticks(range(len(positions)), list(position_labels) if position_labels else positions)
    axis.set_xlabel("answer" if position_labels else "option position")
    axis.set_ylabel("share of rows")
    if title:
        axis.set_title(title)
    axis.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_simulated_effects(by_source: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]], path: Path, *,
                           effects: Sequence[str], outcomes: Sequence[str], reference: str = "observed",
                           title: str = "") -> Path:
    """One panel per (effect, outcome): each source's effect with its interval as error bars.

    `by_source` maps a source (observed or a predictor) to its summary's effects, {effect: {outcome:
    {value, ci_low, ci_high}}}. The `reference` source is drawn in black, first; a source without a
    value for a panel (observed has no counterfactual) leaves its slot empty, so a slot is the same
    source in every panel.
    """
    plt = _pyplot()
    sources = sorted(by_source, key=lambda name: name != reference)
    rows, columns = max(len(effects), 1), max(len(outcomes), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False)
    markers = "osD^v<>pP*Xh"
    for row, effect in enumerate(effects):
        for column, outcome in enumerate(outcomes):
            axis = axes[row][column]
            axis.axhline(0.0, color="0.6", linestyle=":", linewidth=1)
            for k, name in enumerate(sources):
                stat = ((by_source[name].get(effect) or {}).get(outcome)) or {}
                value = _finite(stat.get("value"))
                if value is None:
                    continue
                low, high = _finite(stat.get("ci_low")), _finite(stat.get("ci_high"))
                # Clamped: matplotlib rejects a negative bar, and a percentile interval may miss its point value.
                error = ([[max(value - low, 0.0)], [max(high - value, 0.0)]]
                         if low is not None and high is not None else None)
                axis.errorbar([k], [value], yerr=error, fmt=markers[k % len(markers)], capsize=3,
                              color="black" if name == reference else f"C{k % 10}")
            axis.set_xticks(range(len(sources)), sources, rotation=45, ha="right", fontsize=7)
            axis.set_xlim(-0.6, len(sources) - 0.4)
            axis.set_title(f"{effect}: {outcome}", fontsize=9)
    return _finish(plt, fig, path, title)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _finish(plt, fig, path: Path, title: str = "") -> Path:
    """Title, lay out, save and close a figure; returns its path."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: Path) -> None:
    # Fixed metadata keeps the PNG bytes identical across reruns (no timestamp).
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
