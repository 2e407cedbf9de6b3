"""The portfolio report: every evaluated model beside every baseline, per issue, study and task.

`portfolio_context` decides the marks a template only displays: a model's cell is marked best
only when it is the best model and its confidence interval clears the best baseline's on the same
rows. Formatting and the template environment come from model_report.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io, issues
from grail_sim.evaluation import metrics
from grail_sim.report.model_report import (
    PORTFOLIO_TEMPLATE,
    _missing,
    environment,
    issue_studies,
    load_metrics,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- portfolio
def _best_baseline(baselines: dict[str, dict], higher_is_better: bool) -> tuple[str | None, dict | None]:
    """The name and figure of the strongest baseline with a value; (None, None) when none has one."""
    candidates = [(name, stat) for name, stat in baselines.items() if stat and not _missing(stat.get("value"))]
    if not candidates:
        return None, None
    # Among tied baselines the one with the wider reach wins: a model must clear the hardest one.
    if higher_is_better:
        return max(candidates, key=lambda item: (item[1]["value"], item[1].get("ci_high") or 0.0))
    return min(candidates, key=lambda item: (item[1]["value"], -(item[1].get("ci_low") or 0.0)))


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
        for task_metrics in data["tasks"].values():
            found |= set(task_metrics.get("by_issue", {}).keys())
            for study in (task_metrics.get("by_study") or {}):
                found.add(issues.STUDIES.get(study, "unknown"))
        for issue in sorted(found) or ["unknown"]:
            by_issue.setdefault(issue, []).append(data)

    sections = []
    for issue, group in sorted(by_issue.items()):
        studies = sorted({s for d in group for s in issue_studies(issue, d["tasks"])
                          if issues.STUDIES.get(s, issue) == issue})
        tables = []
        for study in ["all", *studies]:
            tables.append({"study": study, "next_video": _next_video_table(group, study),
                           "opinion": _opinion_table(group, study)})
        sections.append({"issue": issue, "label": issues.ISSUE_LABELS.get(issue, issue), "tables": tables,
                         "models": [{"model": d["model"], "split": d["split"], "rows": d.get("rows", {})}
                                    for d in group]})
    return {"sections": sections}


def _study_entries(group: Sequence[dict], study: str, task_name: str) -> list[tuple[dict, dict]]:
    """(evaluation, that study's summary) for every evaluation of `group` that has the task."""
    entries = []
    for data in group:
        task = data["tasks"].get(task_name)
        summary = _study_groups(task).get(study) if task else None
        if summary is not None:
            entries.append((data, summary))
    return entries


def _next_video_table(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    """One study's next-video rows (accuracy, parse and format rates) and baselines; None without the task."""
    entries = _study_entries(group, study, "next_video")
    if not entries:
        return None
    reference = entries[0][1]
    if not reference["n"]:
        return {"rows": [], "baselines": {}, "best_baseline": None, "n": 0}
    best_name, best_baseline = _best_baseline(reference["baselines"], higher_is_better=True)
    scored = [(d, s) for d, s in entries if not _missing(s["accuracy"]["value"])]
    top = max(scored, key=lambda item: item[1]["accuracy"]["value"])[0]["model"] if scored else None
    rows = [{
        "model": data["model"], "split": data["split"], "n": summary["n"],
        "accuracy": summary["accuracy"], "parsed_rate": summary["parsed_rate"], "format_rate": summary["format_rate"],
        "best": data["model"] == top and metrics.clears(summary["accuracy"], best_baseline),
        "same_rows": summary["n"] == reference["n"],
    } for data, summary in entries]
    return {"rows": rows, "baselines": reference["baselines"], "best_baseline": best_name, "n": reference["n"]}


def _opinion_table(group: Sequence[dict], study: str) -> dict[str, Any] | None:
    """One study's opinion rows (MAE, RMSE, direction accuracy) and baselines; None without the task."""
    entries = _study_entries(group, study, "opinion")
    if not entries:
        return None
    reference = entries[0][1]
    if not reference["n"]:
        return {"rows": [], "baselines": {}, "best_mae_baseline": None, "best_direction_baseline": None, "n": 0}
    mae_name, mae_baseline = _best_baseline({k: v["mae"] for k, v in reference["baselines"].items()}, False)
    dir_name, dir_baseline = _best_baseline(
        {k: v["direction_accuracy"] for k, v in reference["baselines"].items()}, True)
    complete = [(d, s) for d, s in entries if s["n"] and s["n_parsed"] == s["n"]]
    top_mae = min(complete, key=lambda e: e[1]["mae"]["value"])[0]["model"] if complete else None
    scored = [(d, s) for d, s in entries if not _missing(s["direction_accuracy"]["value"])]
    top_dir = max(scored, key=lambda e: e[1]["direction_accuracy"]["value"])[0]["model"] if scored else None
    rows = [{
        "model": data["model"], "split": data["split"], "n": summary["n"], "n_parsed": summary["n_parsed"],
        "mae": summary["mae"], "rmse": summary["rmse"], "direction_accuracy": summary["direction_accuracy"],
        "parsed_rate": summary["parsed_rate"],
        # MAE is over parsed rows; only a model that parsed every row is comparable to the baselines.
        "best_mae": data["model"] == top_mae and summary["n_parsed"] == summary["n"]
        and metrics.clears(summary["mae"], mae_baseline, higher_is_better=False),
        "best_direction": data["model"] == top_dir
        and metrics.clears(summary["direction_accuracy"], dir_baseline),
    } for data, summary in entries]
    return {"rows": rows, "baselines": reference["baselines"], "best_mae_baseline": mae_name,
            "best_direction_baseline": dir_name, "n": reference["n"]}


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
