"""The simulation report: every predictor's in-silico experiment beside the participants' own.

    grail-sim report simulation --eval results/simulate/*_gun --out reports/simulation_gun.md \
        --figures reports/figures/simulation_gun

Each `--eval` folder is one `grail-sim simulate` run (Contract 5) holding `summary.json`: a
predictor's arm levels and effects with intervals, or, for `observed`, the held-out participants'
real sessions in the four study arms. `compare` scores each predictor's mix and seed effects against
the observed ones (and, on demo data, against the oracle's: the demo's truth); `render_simulation_report`
renders `templates/simulation_report.md.j2` with one figure of every effect. Formatting and the
template environment come from model_report.py.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from grail_sim import io, issues
from grail_sim.errors import ReportError
from grail_sim.report.model_report import TEMPLATES, VALID_MASS_WARNING, environment
from grail_sim.report.plots import plot_simulated_effects
from grail_sim.simulation.slates import STUDY_MIXES
from grail_sim.simulation.sources import OBSERVED, ORACLE

log = logging.getLogger(__name__)

SIMULATION_TEMPLATE = TEMPLATES / "simulation_report.md.j2"
PRIOR = "position_prior"
# Effects in reading order: the two the study randomised, then the arm no participant saw.
EFFECTS = ("mix", "seed", "counterfactual")
# Predictors from the simplest to the oracle (the demo's truth), models in between in the given order.
_FIRST, _LAST = (PRIOR, "choice_model"), (ORACLE,)
SUMMARY_KEYS = ("predictor", "issue", "split", "outcomes", "arms", "effects")
ARM_SIDES = ("pro", "anti")


# --------------------------------------------------------------------------- comparison
def _number(value: Any) -> float | None:
    """A finite number, or None (summaries write null where a group had no rows)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _stat(summary: Mapping[str, Any], effect: str, outcome: str) -> Mapping[str, Any] | None:
    return ((summary.get("effects") or {}).get(effect) or {}).get(outcome)


def _value(stat: Mapping[str, Any] | None) -> float | None:
    return _number(stat.get("value")) if stat else None


def intervals_overlap(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool | None:
    """Whether two `{ci_low, ci_high}` intervals share a point; None when a bound is missing."""
    bounds = [_number((s or {}).get(k)) for s in (a, b) for k in ("ci_low", "ci_high")]
    if any(bound is None for bound in bounds):
        return None
    low_a, high_a, low_b, high_b = bounds
    return low_a <= high_b and low_b <= high_a


def pearson(xs: Sequence[float | None], ys: Sequence[float | None]) -> float | None:
    """Pearson's r over the pairs where both are defined; None under 3 pairs or when either side is constant."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    # Constancy is tested on the values, not the variance: rounding leaves a constant's variance at ~1e-34.
    if len(pairs) < 3 or len({x for x, _ in pairs}) < 2 or len({y for _, y in pairs}) < 2:
        return None
    mean_x = sum(x for x, _ in pairs) / len(pairs)
    mean_y = sum(y for _, y in pairs) / len(pairs)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in pairs)
    var_x = sum((x - mean_x) ** 2 for x, _ in pairs)
    var_y = sum((y - mean_y) ** 2 for _, y in pairs)
    return cov / math.sqrt(var_x * var_y)


def _mean_absolute(errors: Sequence[float | None]) -> float | None:
    defined = [abs(e) for e in errors if e is not None]
    return sum(defined) / len(defined) if defined else None


def _reduction(mae: float | None, prior_mae: float | None) -> float | None:
    """1 - MAE / MAE(position prior): the share of the prior's error a predictor removes."""
    if mae is None or prior_mae is None or prior_mae == 0:
        return None
    return 1.0 - mae / prior_mae


def _pairs(reference: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The (effect, outcome) pairs a reference summary reports, effects in EFFECTS order."""
    if reference is None:
        return []
    effects = reference.get("effects") or {}
    names = [e for e in EFFECTS if e in effects] + [e for e in effects if e not in EFFECTS]
    return [(effect, outcome) for effect in names for outcome in reference["outcomes"] if outcome in effects[effect]]


def _scored(summary: Mapping[str, Any], reference: Mapping[str, Any] | None) -> dict[str, Any]:
    """A predictor's effects beside a reference's: per pair the error and overlap, then MAE and r."""
    rows = []
    for effect, outcome in _pairs(reference):
        simulated, wanted = _stat(summary, effect, outcome), _stat(reference, effect, outcome)
        sim, ref = _value(simulated), _value(wanted)
        rows.append({"effect": effect, "outcome": outcome, "simulated": sim, "reference": ref,
                     "error": sim - ref if sim is not None and ref is not None else None,
                     "overlap": intervals_overlap(simulated, wanted)})
    return {"rows": rows, "mae": _mean_absolute([r["error"] for r in rows]),
            "correlation": pearson([r["simulated"] for r in rows], [r["reference"] for r in rows])}


def predictor_order(names: Sequence[str]) -> list[str]:
    """The position prior and the choice model first, models in the given order, the oracle last."""
    first = [n for n in _FIRST if n in names]
    last = [n for n in _LAST if n in names]
    return first + [n for n in names if n not in first and n not in last] + last


def _by_predictor(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    named: dict[str, Mapping[str, Any]] = {}
    for summary in summaries:
        if summary["predictor"] in named:
            both = (named[summary["predictor"]], summary)
            where = " and ".join(f"{s['dir']}/summary.json" for s in both if "dir" in s)
            raise ReportError(f"two simulations of predictor {summary['predictor']!r}{f' ({where})' if where else ''}: "
                              "give each predictor once")
        named[summary["predictor"]] = summary
    return named


def _predictor_row(name: str, summary: Mapping[str, Any], versus_observed: Mapping[str, Any],
                   versus_oracle: Mapping[str, Any] | None, prior: Mapping[str, Any] | None) -> dict[str, Any]:
    """One predictor's scores; `prior` is the position prior's own scores (None without one)."""
    mass = _number((summary.get("predictor_settings") or {}).get("mean_valid_mass"))
    return {
        "predictor": name, "comparisons": versus_observed["rows"],
        "mae": versus_observed["mae"], "correlation": versus_observed["correlation"],
        "reduction_vs_prior": _reduction(versus_observed["mae"], prior["observed"]["mae"] if prior else None),
        "mae_vs_oracle": versus_oracle["mae"] if versus_oracle else None,
        "reduction_vs_prior_vs_oracle": _reduction(versus_oracle["mae"], prior["oracle"]["mae"])
        if versus_oracle and prior else None,
        "counterfactual": dict((summary.get("effects") or {}).get("counterfactual") or {}),
        "mean_valid_mass": mass, "collapsed": mass is not None and mass < VALID_MASS_WARNING,
    }


def compare(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every simulated predictor's effects against the observed ones and, on demo data, the oracle's.

    Per predictor and per (effect, outcome) that observed reports (mix and seed): the simulated and
    observed values, the error (simulated - observed) and whether the two intervals overlap; then
    the mean absolute error, Pearson's r across those effects and the error reduction vs the position
    prior, 1 - MAE / MAE_prior. With an `oracle` summary, the same MAE and reduction against every
    effect the oracle reports (the counterfactual included: on the demo its truth is known). The
    counterfactual effect itself is only reported: no participant saw that arm.
    """
    named = _by_predictor(summaries)
    observed, oracle = named.get(OBSERVED), named.get(ORACLE)
    names = predictor_order([n for n in named if n != OBSERVED])
    scored = {n: {"observed": _scored(named[n], observed),
                  "oracle": _scored(named[n], oracle) if oracle is not None else None} for n in names}
    rows = [_predictor_row(n, named[n], scored[n]["observed"], scored[n]["oracle"], scored.get(PRIOR)) for n in names]
    return {"predictors": rows, "observed": observed is not None, "oracle": oracle is not None,
            "compared": _pairs(observed), "oracle_compared": _pairs(oracle)}


# --------------------------------------------------------------------------- inputs
def load_simulation(run_dir: Path) -> dict[str, Any]:
    """A simulate run's summary.json, checked for the keys and the shape this report reads."""
    path = run_dir / "summary.json"
    data = io.read_json_file(path, what="simulation summary", error=ReportError,
                             hint=f": run `grail-sim simulate --out {run_dir}` first")
    if not isinstance(data, dict):
        raise ReportError(f"{path} is not a JSON object (Contract 5 in docs/DESIGN.md); rerun `grail-sim simulate`")
    missing = [key for key in SUMMARY_KEYS if key not in data]
    if missing:
        raise ReportError(f"{path} lacks key(s) {missing} (Contract 5 in docs/DESIGN.md); rerun `grail-sim simulate`")
    for key in ("arms", "effects"):
        # Both map a group (arm or effect) to outcomes to {value, ci_low, ci_high}.
        if not isinstance(data[key], dict) or not all(
                isinstance(group, dict) and all(isinstance(stat, dict) for stat in group.values())
                for group in data[key].values()):
            raise ReportError(f"{path}: `{key}` is not a mapping of {{outcome: {{value, ci_low, ci_high}}}} per group")
    data["dir"] = str(run_dir)
    data["sha256"] = io.file_sha256(path)
    return data


def _same_experiment(summaries: Sequence[Mapping[str, Any]]) -> None:
    """Every summary must simulate the same issue and split, or the effects are not comparable."""
    first = summaries[0]
    for other in summaries[1:]:
        if (other["issue"], other["split"]) != (first["issue"], first["split"]):
            raise ReportError(f"{first['dir']}/summary.json is issue {first['issue']!r} split {first['split']!r} but "
                              f"{other['dir']}/summary.json is issue {other['issue']!r} split {other['split']!r}: "
                              "a simulation report compares one issue and split")


# --------------------------------------------------------------------------- page context
def arm_order(arms: Sequence[str]) -> list[str]:
    """The study's arms (31 before 22, pro before anti), then any counterfactual arm in the same side order."""
    def rank(arm: str) -> tuple[int, str, int]:
        side, _, mix = arm.partition("_")
        mix_rank = STUDY_MIXES.index(mix) if mix in STUDY_MIXES else len(STUDY_MIXES)
        return mix_rank, mix, ARM_SIDES.index(side) if side in ARM_SIDES else len(ARM_SIDES)
    return sorted(arms, key=rank)


def _level_rows(sources: Sequence[Mapping[str, Any]], block: str, groups: Sequence[str],
                outcomes: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (group, outcome) of `block` (arms or effects): each source's stat, None for a group it lacks."""
    return [{"group": group, "outcome": outcome,
             "cells": [(s[block][group] or {}).get(outcome) if group in s[block] else None for s in sources]}
            for group in groups for outcome in outcomes]


def _definitions(sources: Sequence[Mapping[str, Any]], effects: Sequence[str]) -> dict[str, list[str]]:
    """Each effect's arm differences, from the first summary that records them."""
    found = {}
    for effect in effects:
        found[effect] = next((list(s["definitions"][effect]) for s in sources
                              if (s.get("definitions") or {}).get(effect)), [])
    return found


def _design(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What was simulated, read from a simulated run (the observed one has no counterfactual arm)."""
    simulated = [s for s in summaries if s["predictor"] != OBSERVED] or list(summaries)
    first = simulated[0]
    return {"split": first["split"], "participants": first.get("participants"), "replicates": first.get("replicates"),
            "arms": arm_order(first["arms"]), "counterfactual": first.get("counterfactual") or {},
            "stance_source": first.get("stance_source", "not recorded"), "confidence": first.get("confidence")}


def _score_rows(comparison: Mapping[str, Any], named: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 2's rows: each predictor's scores, its sessions and how many of its intervals meet the observed ones."""
    return [{**row, "sessions": named[row["predictor"]].get("sessions"),
             "replicates": named[row["predictor"]].get("replicates"),
             "overlaps": sum(1 for c in row["comparisons"] if c["overlap"]),
             "overlap_known": sum(1 for c in row["comparisons"] if c["overlap"] is not None),
             "truth": row["predictor"] == ORACLE}
            for row in comparison["predictors"]]


def simulation_context(summaries: Sequence[Mapping[str, Any]], figure: Path, out_dir: Path) -> dict[str, Any]:
    """The template's context: the comparison, the three tables' rows and the figure."""
    comparison = compare(summaries)
    named = _by_predictor(summaries)
    names = ([OBSERVED] if OBSERVED in named else []) + [row["predictor"] for row in comparison["predictors"]]
    sources = [named[n] for n in names]
    outcomes = list(sources[0]["outcomes"])
    effects = [e for e in EFFECTS if any(e in s["effects"] for s in sources)]
    arms = arm_order(list(dict.fromkeys(arm for s in sources for arm in s["arms"])))
    issue, split = summaries[0]["issue"], summaries[0]["split"]
    plot_simulated_effects({n: named[n]["effects"] for n in names}, figure, effects=effects, outcomes=outcomes,
                           reference=OBSERVED, title=f"effects on {issue}, {split}")
    collapsed = {row["predictor"] for row in comparison["predictors"] if row["collapsed"]}
    return {"issue": issue, "issue_label": issues.ISSUE_LABELS.get(issue, issue), "design": _design(summaries),
            "sources": [{"name": n, "collapsed": n in collapsed} for n in names], "comparison": comparison,
            "scores": _score_rows(comparison, named), "outcomes": outcomes,
            "definitions": _definitions(sources, effects),
            "effect_rows": _level_rows(sources, "effects", effects, outcomes),
            "arm_rows": _level_rows(sources, "arms", arms, outcomes),
            "runs": [{"predictor": s["predictor"], "dir": s["dir"], "sha256": s["sha256"],
                      "sessions": s.get("sessions"), "participants": s.get("participants")} for s in sources],
            "figure": Path(os.path.relpath(figure, out_dir)).as_posix(), "valid_mass_warning": VALID_MASS_WARNING}


def render_simulation_report(run_dirs: Sequence[Path], out: Path, figures: Path, *,
                             template: Path = SIMULATION_TEMPLATE, config: Path | None = None) -> str:
    """Render the simulation report of the simulate runs in `run_dirs` to `out`; returns the Markdown."""
    if not run_dirs:
        raise ReportError("a simulation report needs at least one simulate run folder (--eval)")
    summaries = [load_simulation(Path(d)) for d in run_dirs]
    _same_experiment(summaries)
    short = issues.ISSUE_TO_SHORT.get(summaries[0]["issue"], summaries[0]["issue"])
    figures.mkdir(parents=True, exist_ok=True)
    context = simulation_context(summaries, figures / f"simulation_{short}_effects.png", out.parent)
    context["config"] = {"path": str(config), "sha256": io.file_sha256(config)} if config and config.is_file() else None
    text = environment(template).render(**context)
    io.write_text(out, text)
    log.info("wrote %s (%d simulations)", out, len(summaries))
    return text
