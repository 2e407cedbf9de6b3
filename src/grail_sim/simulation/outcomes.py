"""What the arms did to viewing, from session records (simulated or observed), with participant
bootstrap intervals.

Outcomes of a session, each the mean over its steps:
- `seed_stance_share`: the share of chosen videos whose stance is the seed video's;
- `own_leaning_share`: the share whose stance is the viewer's own stated leaning (liberal or
  conservative profiles only; a moderate or unknown viewer has none);
- `mean_position`: the chosen option's 1-based position.

A simulated step carries the predictor's probabilities, and its outcome is their expectation
(sum over options of p_k times the option's value), not the one sampled draw: the same mean with
less Monte Carlo noise. The path itself follows the sampled choices. An observed step counts its
one choice; a video without a stance label leaves the stance shares for that step, and a step whose
logged slate was lost (`displayed: false`) leaves the mean position.

An arm's outcome is the mean over its sessions. Effects, from those means:
- `mix` (31 - 22): the 3:1 slates minus the balanced ones, averaged over the two sides;
- `seed` (pro - anti): the pro seeds minus the anti seeds, averaged over 31 and 22;
- `counterfactual` (X - 31): the counterfactual mix X minus 31, averaged over the sides.
Intervals resample participants (bootstrap_statistics): a participant's sessions in every arm
move together, so the effects' intervals are paired for simulated sessions.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from grail_sim.evaluation.metrics import bootstrap_statistics
from grail_sim.simulation.slates import STUDY_MIXES

OUTCOMES = ("seed_stance_share", "own_leaning_share", "mean_position")
PARTISAN = ("liberal", "conservative")


def session_outcomes(record: Mapping[str, Any]) -> dict[str, float | None]:
    """A session record's outcomes (None where no step defines one)."""
    seed, leaning = record.get("seed_stance"), record.get("viewer_leaning")
    seed_values, own_values, positions = [], [], []
    for step in record["steps"]:
        if "probabilities" in step:
            p = np.asarray(step["probabilities"], dtype=float)
            stances = step["stances"]
            if seed:
                seed_values.append(float(sum(pk for pk, s in zip(p, stances) if s == seed)))
            if leaning in PARTISAN:
                own_values.append(float(sum(pk for pk, s in zip(p, stances) if s == leaning)))
            positions.append(float(p @ np.arange(1, len(p) + 1)))
            continue
        if step.get("stance") is not None:
            if seed:
                seed_values.append(float(step["stance"] == seed))
            if leaning in PARTISAN:
                own_values.append(float(step["stance"] == leaning))
        if step.get("displayed", True):
            positions.append(float(step["chosen"]))
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    return {"seed_stance_share": mean(seed_values), "own_leaning_share": mean(own_values),
            "mean_position": mean(positions)}


def effect_arms(counterfactual_mix: str | None) -> dict[str, list[tuple[str, str]]]:
    """Each effect as the (plus arm, minus arm) pairs it averages."""
    effects = {"mix": [(f"{side}_31", f"{side}_22") for side in ("pro", "anti")],
               "seed": [(f"pro_{mix}", f"anti_{mix}") for mix in STUDY_MIXES]}
    if counterfactual_mix:
        effects["counterfactual"] = [(f"{side}_{counterfactual_mix}", f"{side}_31") for side in ("pro", "anti")]
    return effects


def arm_effects(records: Sequence[Mapping[str, Any]], arms: Sequence[str], counterfactual_mix: str | None, *,
                samples: int, seed: int, confidence: float) -> dict[str, Any]:
    """Each arm's outcomes and each effect, with participant-bootstrap intervals."""
    columns: dict[str, np.ndarray] = {}
    values = [session_outcomes(r) for r in records]
    for arm in arms:
        in_arm = np.array([r["arm"] == arm for r in records], dtype=bool)
        for outcome in OUTCOMES:
            defined = np.array([v[outcome] is not None for v in values], dtype=bool) & in_arm
            columns[f"{arm}|{outcome}|sum"] = np.array([v[outcome] or 0.0 for v in values]) * defined
            columns[f"{arm}|{outcome}|n"] = defined.astype(float)

    def arm_mean(arm: str, outcome: str):
        return lambda t: t[f"{arm}|{outcome}|sum"] / t[f"{arm}|{outcome}|n"]

    def effect(pairs: list[tuple[str, str]], outcome: str):
        return lambda t: np.mean([arm_mean(a, outcome)(t) - arm_mean(b, outcome)(t) for a, b in pairs], axis=0)

    statistics = {f"arm|{arm}|{o}": arm_mean(arm, o) for arm in arms for o in OUTCOMES}
    effects = {name: pairs for name, pairs in effect_arms(counterfactual_mix).items()
               if all(a in arms and b in arms for a, b in pairs)}
    statistics.update({f"effect|{name}|{o}": effect(pairs, o) for name, pairs in effects.items() for o in OUTCOMES})
    groups = [str(r["participant_id"]) for r in records]
    figures = bootstrap_statistics(groups, columns, statistics, samples=samples, seed=seed, confidence=confidence)
    out: dict[str, Any] = {"arms": {}, "effects": {}, "definitions": {name: [f"{a} - {b}" for a, b in pairs]
                                                                    for name, pairs in effects.items()}}
    for key, figure in figures.items():
        kind, name, outcome = key.split("|")
        figure = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in figure.items() if k != "n"}
        out["arms" if kind == "arm" else "effects"].setdefault(name, {})[outcome] = figure
    out["participants_by_arm"] = {arm: len({r["participant_id"] for r in records if r["arm"] == arm}) for arm in arms}
    out["participants"], out["sessions"] = len(set(groups)), len(records)
    return out
