"""The portfolio report: every evaluated model beside every baseline, per issue, study and task.

The page opens with one summary table (per issue, each model's next-video NLL and accuracy@1 on
every scored row beside the baselines and, on demo data, the oracle) and one sentence per issue,
composed by `summary_sentence`, saying what those numbers show. Each study then leads with the
next-video choice likelihood on every scored row (NLL and accuracy@1 of each model beside uniform
1/n, the position prior and the fitted choice model on the same rows); the generation tables of the
small sample follow. An issue with one study prints its tables once. The opinion tables show the
untrained base model beside the baselines (no trainer learns opinion) and label any trained
model's opinion answers as off-task. `portfolio_context` decides the marks a template
only displays, all through `choice_metrics.clears_best_baseline`: in the likelihood table a model's
cell is marked when its interval clears the best baseline's; in a generation table only the best
model's, and only when it clears. Formatting and the template environment come from model_report.py.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io, issues
from grail_sim.evaluation.choice_metrics import HIGHER_IS_BETTER, ORACLE, clears_best_baseline
from grail_sim.report.model_report import (
    POLICY,
    PORTFOLIO_TEMPLATE,
    SOURCE_LABELS,
    VALID_MASS_WARNING,
    _missing,
    _sources,
    baselines_of,
    environment,
    fmt_ci,
    fmt_num,
    issue_studies,
    load_metrics,
)

log = logging.getLogger(__name__)
# The model's key among a generation summary's baselines (no baseline is named so).
_MODEL = "__model__"
LIKELIHOOD_FIGURES = ("nll", "accuracy_at_1")
# The untrained model: the only one whose evaluation carries the opinion task by default (no
# trainer learns opinion; `evaluate.trained_model_tasks` adds it to a trained model's evaluation).
UNTRAINED = "base"
# How a source reads inside a sentence (SOURCE_LABELS' parenthesised details would nest).
_SENTENCE_LABELS = {"uniform": "uniform 1/n", "position_prior": "position prior", "choice_model": "fitted choice model"}
PRIOR = "position_prior"
OPINION_ONLY_BASE = "No trainer is trained for opinion: this table shows the untrained base model beside the baselines."
OPINION_OFF_TASK = ("No trainer is trained for opinion (every trainer learns the next-video choice only): a row "
                    "labelled *off-task answers of a choice policy* is a trained model answering the opinion prompt "
                    "it was never trained for, shown because its evaluation asked for it "
                    "(`evaluate.trained_model_tasks`); read it as a format check, not as an opinion model.")
OPINION_NONE = ("not evaluated here (no evaluation has opinion figures). No trainer is trained for opinion; by "
                "default only the untrained base model's evaluation carries them (`evaluate.trained_model_tasks` "
                "adds them to a trained model's).")


# --------------------------------------------------------------------------- portfolio
def _best_baseline(baselines: dict[str, dict], higher_is_better: bool) -> str | None:
    """The name of the baseline a model must clear, for the "(best)" label; None when none has a value.

    Chosen as `clears_best_baseline` chooses (best value, a tie going to the interval that reaches
    further), which alone decides the ★.
    """
    sign = 1.0 if higher_is_better else -1.0
    candidates = []
    for name, stat in baselines.items():
        if stat and not _missing(stat.get("value")):
            far = stat.get("ci_high") if higher_is_better else stat.get("ci_low")
            candidates.append((sign * stat["value"], -math.inf if _missing(far) else sign * far, name))
    return max(candidates)[2] if candidates else None


def _clears(model: dict | None, baselines: dict[str, dict], higher_is_better: bool) -> bool:
    """`clears_best_baseline` for one figure of a generation summary (its baselines keyed by name)."""
    figures = {_MODEL: {"figure": model}, **{name: {"figure": stat} for name, stat in baselines.items()}}
    return clears_best_baseline(figures, _MODEL, list(baselines), "figure", higher_is_better=higher_is_better)


def _study_groups(task_metrics: dict) -> dict[str, dict]:
    """`all` plus one group per study, each a summary (overall or by_study entry)."""
    return {"all": task_metrics["overall"], **task_metrics.get("by_study", {})}


def portfolio_context(evaluations: Sequence[dict]) -> dict[str, Any]:
    """Per issue, study and task: each model's figure and the baselines, with the marks decided here.

    A model's cell is marked best only when it is the best model and its CI clears (does not
    overlap) the CI of the best baseline on the same rows.
    """
    by_issue: dict[str, list[dict]] = {}
    for data in evaluations:
        found = set()
        for task_metrics in _task_blocks(data).values():
            found |= set(task_metrics.get("by_issue", {}).keys())
            for study in (task_metrics.get("by_study") or {}):
                found.add(issues.STUDIES.get(study, "unknown"))
        for issue in sorted(found) or ["unknown"]:
            by_issue.setdefault(issue, []).append(data)

    sections = []
    for issue, group in sorted(by_issue.items()):
        studies = sorted({s for d in group for s in issue_studies(issue, _task_blocks(d))
                          if issues.STUDIES.get(s, issue) == issue})
        # With one study the "all" tables are that study's: printed once, under a label saying so.
        single = len(studies) == 1
        tables = []
        for study in ["all", *([] if single else studies)]:
            label = (f"all studies ({studies[0]} only)" if single else "all studies") if study == "all" else study
            tables.append({"study": study, "label": label, "likelihood": _likelihood_table(group, study),
                           "next_video": _next_video_table(group, study),
                           "opinion": _opinion_table(group, study), "direction": _direction_table(group, study)})
        lead = tables[0]["likelihood"]
        sections.append({"issue": issue, "label": issues.ISSUE_LABELS.get(issue, issue), "tables": tables,
                         "summary": {"likelihood": lead, "sentence": summary_sentence(lead)},
                         "models": [{"model": d["model"], "split": d["split"], "rows": d.get("rows", {})}
                                    for d in group]})
    return {"sections": sections, "opinion_none": OPINION_NONE}


# --------------------------------------------------------------------------- the summary sentence
def _sentence_label(name: str) -> str:
    return _SENTENCE_LABELS.get(name, SOURCE_LABELS.get(name, name))


def _row_names(rows: Sequence[dict]) -> dict[int, str]:
    """Each row's name in a sentence: the model, with its split only where a model appears twice."""
    models = [row["model"] for row in rows]
    return {id(row): row["model"] if models.count(row["model"]) == 1 else f"{row['model']} ({row['split']})"
            for row in rows}


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"


def _prior_relation(model: dict, prior: dict, reference: str) -> str:
    """Where a model's NLL interval stands against the position prior's (lower is better), as a clause.

    better: the model's interval lies wholly below the prior's; worse: wholly above; reaches: its
    lower bound is at or below the prior's value; otherwise the intervals overlap without the model
    reaching the prior's value. Without both intervals, only "beside".
    """
    bounds = (model.get("ci_low"), model.get("ci_high"), prior.get("value"), prior.get("ci_low"), prior.get("ci_high"))
    if any(_missing(value) for value in bounds):
        return f"beside {reference}"
    low, high, value, prior_low, prior_high = bounds
    if high < prior_low:
        return f"better than {reference}"
    if low > prior_high:
        return f"worse than {reference}"
    if low <= value:
        return f"whose interval reaches {reference}"
    return f"whose interval overlaps but does not reach {reference}"


def summary_sentence(table: dict[str, Any] | None) -> str:
    """One sentence saying what one issue's likelihood table (`_likelihood_table`) shows.

    When some model's NLL carries the ★ (`clears_best_baseline`), it names those models and the best
    baseline they clear. Otherwise it says no model clears the best baseline and places the best
    model by NLL against the position prior (`_prior_relation`). A ★ on accuracy@1 is named too,
    and the oracle's NLL, on demo data, closes the sentence as the ceiling (never a baseline).
    """
    if table is None:
        return "Not scored: no evaluation of this issue ran the choice likelihood (`evaluate.mode` score or both)."
    scored = [row for row in table["rows"] if not _missing((row.get("nll") or {}).get("value"))]
    if not table["n"] or not scored:
        return "No scored rows: there is nothing to compare with the baselines."
    by_name = {b["name"]: b for b in table["baselines"]}
    best = next((b for b in table["baselines"] if "nll" in b["best"]), None)
    if best is None:
        return "No baseline has an NLL on these rows, so no model can be compared with one."
    names = _row_names(table["rows"])
    best_text = f"the best baseline ({_sentence_label(best['name'])}, NLL {fmt_ci(best['nll'])})"
    starred = [row for row in scored if row["star"]["nll"]]
    if starred:
        verb = "clears" if len(starred) == 1 else "clear"
        models = _join([f"{names[id(row)]} (NLL {fmt_ci(row['nll'])})" for row in starred])
        text = f"{models} {verb} {best_text}"
    else:
        top = min(scored, key=lambda row: row["nll"]["value"])
        who = "the only model" if len(table["rows"]) == 1 else "the best model by NLL"
        text = f"No model clears {best_text}; {who}, {names[id(top)]}, has {fmt_ci(top['nll'])}"
        prior = by_name.get(PRIOR)
        if prior and not _missing(prior["nll"].get("value")):
            reference = ("the position prior" if best["name"] == PRIOR
                         else f"the position prior's {fmt_ci(prior['nll'])}")
            text += ", " + _prior_relation(top["nll"], prior["nll"], reference)
    accurate = [row for row in scored if row["star"]["accuracy_at_1"]]
    best_accuracy = next((b for b in table["baselines"] if "accuracy_at_1" in b["best"]), None)
    if accurate and best_accuracy:
        verb = "clears" if len(accurate) == 1 else "clear"
        text += (f"; on accuracy@1, {_join([names[id(row)] for row in accurate])} {verb} the best baseline "
                 f"({_sentence_label(best_accuracy['name'])}, {fmt_ci(best_accuracy['accuracy_at_1'], percent=True)})")
    oracle = table.get("oracle")
    if oracle and not _missing((oracle.get("nll") or {}).get("value")):
        text += f"; the oracle's {fmt_num(oracle['nll']['value'])} is the ceiling"
    return text + "."


def _task_blocks(data: dict) -> dict[str, dict]:
    """Every figure block of an evaluation with by_study groups: generation tasks and likelihoods."""
    return {**data["tasks"], **{f"likelihood/{k}": v for k, v in (data.get("likelihood") or {}).items()}}


def _study_entries(group: Sequence[dict], study: str, task_name: str,
                   target: str | None = None) -> list[tuple[dict, dict]]:
    """(evaluation, that study's summary) for every evaluation of `group` that has the task
    (for opinion, with the `target` given: "direction" or None for the index)."""
    entries = []
    for data in group:
        task = data["tasks"].get(task_name)
        if task and task_name == "opinion" and task.get("target") != target:
            continue
        summary = _study_groups(task).get(study) if task else None
        if summary is not None:
            entries.append((data, summary))
    return entries


def _empty(group: Sequence[dict], task_name: str, table: dict[str, Any], target: str | None = None) -> dict | None:
    """`table` (no rows) when some evaluation of `group` has the task but not this study; None when none has it."""
    for data in group:
        task = data["tasks"].get(task_name)
        if task and (task_name != "opinion" or task.get("target") == target):
            return table
    return None


def _likelihood_table(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    """One study's next-video likelihood: each model's NLL and accuracy@1 beside every baseline's.

    Baseline rows come from the first evaluation; each model's ★ is decided against its own
    evaluation's baselines, which were scored on its rows with the same participant resamples. On
    demo data the oracle's row (the ceiling, never starred against) and each model's recovered
    share of its gain follow.
    """
    entries = []
    for data in group:
        lik = (data.get("likelihood") or {}).get("next_video")
        figures = _study_groups(lik).get(study) if lik else None
        if figures and POLICY in figures:
            entries.append((data, lik, figures))
    if not entries:
        # Scored, but not this study: its rows are absent, not unscored.
        scored = any((data.get("likelihood") or {}).get("next_video") for data in group)
        return {"rows": [], "baselines": [], "n": 0} if scored else None
    reference = entries[0][2]
    n = reference[POLICY]["n"]
    if not n:
        return {"rows": [], "baselines": [], "n": 0}
    names = baselines_of(_sources(reference))
    rows = []
    for data, lik, figures in entries:
        own = baselines_of(figures)
        mass = lik.get("valid_mass") if study == "all" else None
        rows.append({"model": data["model"], "split": data["split"], "n": figures[POLICY]["n"],
                     "same_rows": figures[POLICY]["n"] == n, "valid_mass": mass,
                     "collapsed": bool(mass) and not _missing(mass.get("value")) and mass["value"] < VALID_MASS_WARNING,
                     **{f: figures[POLICY][f] for f in (*LIKELIHOOD_FIGURES, "pseudo_r2")},
                     "recovered_share": figures[POLICY].get("recovered_share"),
                     "star": {f: clears_best_baseline(figures, POLICY, own, f) for f in LIKELIHOOD_FIGURES}})
    best = {f: _best_baseline({name: reference[name][f] for name in names}, HIGHER_IS_BETTER[f])
            for f in LIKELIHOOD_FIGURES}
    baselines = [{"name": name, "label": SOURCE_LABELS.get(name, name), "n": reference[name]["n"],
                  **{f: reference[name][f] for f in (*LIKELIHOOD_FIGURES, "pseudo_r2")},
                  "recovered_share": reference[name].get("recovered_share"),
                  "best": [f for f in LIKELIHOOD_FIGURES if best[f] == name]} for name in names]
    oracle = reference.get(ORACLE)
    ceiling = None if oracle is None else {
        "label": SOURCE_LABELS[ORACLE], "n": oracle["n"], **{f: oracle[f] for f in (*LIKELIHOOD_FIGURES, "pseudo_r2")},
        **(entries[0][1].get("oracle") or {})}
    return {"rows": rows, "baselines": baselines, "n": n, "reference": entries[0][1].get("reference"),
            "learned_on": (entries[0][1].get("baselines") or {}).get("learned_on", "not recorded"),
            "oracle": ceiling, "recovered": any(row["recovered_share"] for row in rows)}


def _next_video_table(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    """One study's next-video rows (accuracy, parse and format rates) and baselines; None without the task."""
    entries = _study_entries(group, study, "next_video")
    if not entries:
        return _empty(group, "next_video", {"rows": [], "baselines": {}, "best_baseline": None, "n": 0})
    reference = entries[0][1]
    if not reference["n"]:
        return {"rows": [], "baselines": {}, "best_baseline": None, "n": 0}
    best_name = _best_baseline(reference["baselines"], higher_is_better=True)
    scored = [(d, s) for d, s in entries if not _missing(s["accuracy"]["value"])]
    top = max(scored, key=lambda item: item[1]["accuracy"]["value"])[0]["model"] if scored else None
    rows = [{
        "model": data["model"], "split": data["split"], "n": summary["n"],
        "accuracy": summary["accuracy"], "parsed_rate": summary["parsed_rate"], "format_rate": summary["format_rate"],
        "best": data["model"] == top and _clears(summary["accuracy"], summary["baselines"], True),
        "same_rows": summary["n"] == reference["n"],
    } for data, summary in entries]
    return {"rows": rows, "baselines": reference["baselines"], "best_baseline": best_name, "n": reference["n"]}


def _opinion_note(group: Sequence[dict], target: str | None) -> str:
    """What an opinion table's rows are: the untrained base model's only, or also off-task answers."""
    models = {data["model"] for data in group if data["tasks"].get("opinion")
              and data["tasks"]["opinion"].get("target") == target}
    return OPINION_OFF_TASK if models - {UNTRAINED} else OPINION_ONLY_BASE


def _untrained_first(rows: list[dict]) -> list[dict]:
    """Mark each opinion row of a trained model as off-task (a choice policy answering the opinion
    prompt) and list the untrained model's rows first."""
    for row in rows:
        row["off_task"] = row["model"] != UNTRAINED
    return sorted(rows, key=lambda row: row["off_task"])


def _opinion_table(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    """One study's opinion rows (MAE, RMSE, direction accuracy) and baselines, with the note saying
    whose they are (`_opinion_note`); None without the task."""
    table = _opinion_figures(group, study)
    return None if table is None else {**table, "note": _opinion_note(group, None)}


def _opinion_figures(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    entries = _study_entries(group, study, "opinion")
    if not entries:
        return _empty(group, "opinion", {"rows": [], "baselines": {}, "n": 0})
    reference = entries[0][1]
    if not reference["n"]:
        return {"rows": [], "baselines": {}, "best_mae_baseline": None, "best_direction_baseline": None, "n": 0}
    mae_name = _best_baseline({k: v["mae"] for k, v in reference["baselines"].items()}, False)
    dir_name = _best_baseline({k: v["direction_accuracy"] for k, v in reference["baselines"].items()}, True)
    complete = [(d, s) for d, s in entries if s["n"] and s["n_parsed"] == s["n"]]
    top_mae = min(complete, key=lambda e: e[1]["mae"]["value"])[0]["model"] if complete else None
    scored = [(d, s) for d, s in entries if not _missing(s["direction_accuracy"]["value"])]
    top_dir = max(scored, key=lambda e: e[1]["direction_accuracy"]["value"])[0]["model"] if scored else None
    rows = [{
        "model": data["model"], "split": data["split"], "n": summary["n"], "n_parsed": summary["n_parsed"],
        "mae": summary["mae"], "rmse": summary["rmse"], "direction_accuracy": summary["direction_accuracy"],
        "parsed_rate": summary["parsed_rate"], "change_correlation": summary.get("change_correlation"),
        # MAE is over parsed rows; only a model that parsed every row is comparable to the baselines.
        "best_mae": data["model"] == top_mae and summary["n_parsed"] == summary["n"]
        and _clears(summary["mae"], {k: v["mae"] for k, v in summary["baselines"].items()}, False),
        "best_direction": data["model"] == top_dir and _clears(
            summary["direction_accuracy"], {k: v["direction_accuracy"] for k, v in summary["baselines"].items()}, True),
    } for data, summary in entries]
    rows = _untrained_first(rows)
    learned = {key: entries[0][0]["tasks"]["opinion"].get(key) for key in
               ("global_mean_learned_on", "mean_change_learned_on", "majority_direction_learned_on")}
    return {"rows": rows, "baselines": reference["baselines"], "best_mae_baseline": mae_name,
            "best_direction_baseline": dir_name, "n": reference["n"], "learned_on": learned,
            "majority_direction": reference.get("majority_direction")}


def _direction_table(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    """One study's opinion-direction generation rows (direction_metrics summaries), with the note
    saying whose they are (`_opinion_note`); None without any."""
    table = _direction_figures(group, study)
    return None if table is None else {**table, "note": _opinion_note(group, "direction")}


def _direction_figures(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    entries = _study_entries(group, study, "opinion", target="direction")
    if not entries:
        return _empty(group, "opinion", {"rows": [], "baselines": {}, "n": 0}, target="direction")
    reference = entries[0][1]
    if not reference["n"]:
        return {"rows": [], "baselines": {}, "best_baseline": None, "n": 0}
    scored = [(d, s) for d, s in entries if not _missing(s["direction_accuracy"]["value"])]
    top = max(scored, key=lambda e: e[1]["direction_accuracy"]["value"])[0]["model"] if scored else None
    rows = [{"model": data["model"], "split": data["split"], "n": summary["n"],
             "direction_accuracy": summary["direction_accuracy"], "parsed_rate": summary["parsed_rate"],
             "format_rate": summary["format_rate"],
             "best": data["model"] == top and _clears(summary["direction_accuracy"], summary["baselines"], True)}
            for data, summary in entries]
    rows = _untrained_first(rows)
    task = entries[0][0]["tasks"]["opinion"]
    return {"rows": rows, "baselines": reference["baselines"], "n": reference["n"],
            "best_baseline": _best_baseline(reference["baselines"], True),
            "majority_direction": task.get("majority_direction"),
            "learned_on": task.get("majority_direction_learned_on", "not recorded")}


def render_portfolio(eval_dirs: Sequence[Path], out: Path, *, template: Path = PORTFOLIO_TEMPLATE,
                     config: Path | None = None) -> str:
    """Render the portfolio of the evaluations in `eval_dirs` to `out`; returns the Markdown."""
    evaluations = [load_metrics(d) for d in eval_dirs]
    context = portfolio_context(evaluations)
    context["config"] = {"path": str(config), "sha256": io.file_sha256(config)} if config and config.is_file() else None
    context["evaluations"] = [{"model": d["model"], "split": d["split"], "dir": str(p),
                               "model_sha256": d["provenance"]["model_sha256"]} for d, p in zip(evaluations, eval_dirs)]
    text = environment(template).render(**context)
    io.write_text(out, text)
    log.info("wrote %s (%d evaluations)", out, len(evaluations))
    return text
