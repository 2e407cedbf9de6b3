"""The per-model report, and what the portfolio report shares with it.

Holds the number filters (`num`, `pct`, `ci`, `fence`) and the Jinja2 environment, the readers of
an evaluation's `metrics.json` and a training run's `metrics.jsonl`, and `render_model_report`,
which builds one model's context and renders `templates/model_report.md.j2`. The CLI is
report/cli.py; the portfolio is portfolio.py.

Templates are data: every number they show comes from `metrics.json` / `metrics.jsonl` through
the context built here, formatted by the filters below. Figures are PNGs written beside the
report and embedded by relative path, so the report folder can be moved as a whole.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io, issues
from grail_sim.config import resolve_section
from grail_sim.errors import ReportError
from grail_sim.evaluation.choice_metrics import ORACLE, clears_best_baseline
from grail_sim.report.plots import (
    curve,
    discriminator_gap,
    plot_discriminator,
    plot_mean_distribution,
    plot_positions,
    plot_reliability,
    plot_training_curves,
)

log = logging.getLogger(__name__)


TEMPLATES = Path(__file__).resolve().parent / "templates"
MODEL_TEMPLATE = TEMPLATES / "model_report.md.j2"
PORTFOLIO_TEMPLATE = TEMPLATES / "portfolio.md.j2"
# What a figure of an empty group (metrics.py gives None, never NaN) reads as.
NO_ROWS = "no rows"
# A trained model's report in place of the opinion section when its evaluation did not run the task
# (the default: every trainer learns the next-video choice only).
OPINION_NOT_TRAINED = ("Opinion is not evaluated for trained models: no trainer is trained for opinion (the base "
                       "model's report and the portfolio show the opinion baselines; `evaluate.trained_model_tasks` "
                       "adds it).")


# --------------------------------------------------------------------------- formatting
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt_num(value: Any, digits: int = 3) -> str:
    return NO_ROWS if _missing(value) else f"{float(value):.{digits}f}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    return NO_ROWS if _missing(value) else f"{100 * float(value):.{digits}f}%"


def fmt_small(value: Any) -> str:
    """A probability that may be vanishingly small (a collapsed policy's valid mass): never rounds to 0."""
    if _missing(value):
        return NO_ROWS
    return f"{float(value):.3f}" if float(value) >= 1e-3 or float(value) == 0 else f"{float(value):.1e}"


def fmt_ci(stat: dict | None, digits: int = 3, percent: bool = False, small: bool = False) -> str:
    """`value [low, high]`, or "no rows" for an empty group; `small` formats with `fmt_small`."""
    if not stat or _missing(stat.get("value")):
        return NO_ROWS
    show = fmt_small if small else (lambda v: fmt_pct(v, 1)) if percent else (lambda v: fmt_num(v, digits))
    if _missing(stat.get("ci_low")) or _missing(stat.get("ci_high")):
        return show(stat["value"])
    return f"{show(stat['value'])} [{show(stat['ci_low'])}, {show(stat['ci_high'])}]"


def fence(text: str, language: str = "") -> str:
    """A fenced code block that survives backticks inside `text`."""
    longest, run = 0, 0
    for char in text or "":
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    marks = "`" * max(3, longest + 1)
    return f"{marks}{language}\n{text or ''}\n{marks}"


def environment(template: Path):
    """The compiled `template` with the filters above; an undefined name fails instead of rendering blank."""
    import jinja2

    if not template.is_file():
        raise ReportError(f"template {template} does not exist")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template.parent)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(num=fmt_num, pct=fmt_pct, ci=fmt_ci, fence=fence, small=fmt_small)
    return env.get_template(template.name)


# --------------------------------------------------------------------------- inputs
# What every report reads from an evaluation's metrics.json (Contract 4).
METRICS_KEYS = ("model", "tasks")


def load_metrics(eval_dir: Path) -> dict[str, Any]:
    """An evaluation's metrics.json, with `split` set from its folder name (results/eval/{model}/{split})."""
    path = eval_dir / "metrics.json"
    data = io.read_json_file(path, what="evaluation metrics", error=ReportError,
                             hint=f": run `grail-sim evaluate --out {eval_dir}` first")
    missing = [key for key in METRICS_KEYS if key not in data]
    if missing:
        raise ReportError(f"{path} lacks key(s) {missing} (Contract 4 in docs/DESIGN.md); rerun `grail-sim evaluate`")
    data["split"] = eval_dir.name
    return data


def load_training_log(train_dir: Path) -> list[dict]:
    """A training run's per-step metric log (Contract 3)."""
    path = train_dir / "metrics.jsonl"
    if not path.is_file():
        raise ReportError(f"{path} does not exist (Contract 3): a trained model needs its training log")
    return list(io.read_jsonl(path))


def training_summary(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """First and last logged value of every numeric training metric, in first-seen key order."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in ("step", "epoch")]
    out = []
    for key in keys:
        _, values = curve(rows, key)
        if values:
            out.append({"key": key, "first": values[0], "last": values[-1], "n": len(values)})
    return out


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


# --------------------------------------------------------------------------- likelihood
POLICY = "policy"
# How each source reads in a table; a source not listed shows its own name.
SOURCE_LABELS = {"uniform": "uniform 1/n", "position_prior": "position prior (train shares per n)",
                 "choice_model": "fitted choice model", "direction_prior": "direction prior (train shares)",
                 ORACLE: "oracle (the demo's ceiling)"}
TASK_TITLES = {"next_video": "Next-video choice", "opinion": "Opinion direction"}
# Below this total probability on valid answers the policy's own generation would mostly not answer.
VALID_MASS_WARNING = 0.5
LIKELIHOOD_BREAKDOWNS = (("by_study", "By study", "study"), ("by_treatment_arm", "By treatment arm", "arm"),
                         ("by_viewer_leaning", "By viewer leaning", "leaning"),
                         ("by_n_options", "By number of options", "options"))
# Describe-dict entries shown elsewhere or too long for one table cell.
_DESCRIBE_SKIP = ("name", "features", "coefficients", "by_n_options")
# Baselines from the simplest to the strongest, so a table reads as a ladder the policy must climb.
BASELINE_ORDER = ("uniform", "position_prior", "direction_prior", "choice_model")


def _sources(group: dict[str, Any]) -> list[str]:
    """The policy first, then the baselines in BASELINE_ORDER, any other source by name, the oracle last."""
    def rank(name: str) -> tuple[int, str]:
        if name == POLICY:
            return -1, name
        if name == ORACLE:  # the ceiling closes the ladder
            return len(BASELINE_ORDER) + 1, name
        return (BASELINE_ORDER.index(name) if name in BASELINE_ORDER else len(BASELINE_ORDER)), name
    return sorted(group, key=rank)


def baselines_of(names: Sequence[str]) -> list[str]:
    """The sources a model's ★ is decided against: all but the policy and the oracle (the ceiling)."""
    return [name for name in names if name not in (POLICY, ORACLE)]


def _describe(describe: Any) -> str:
    """A baseline's describe() dict as `key: value` pairs, nested dicts flattened one level."""
    if not isinstance(describe, dict):
        return str(describe)
    parts = []
    for key, value in describe.items():
        if key in _DESCRIBE_SKIP:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


def _fitting(baselines: dict[str, Any]) -> dict[str, Any]:
    """How the baselines were fitted: where, each one's settings, the choice model's feature list."""
    models = {name: value for name, value in baselines.items() if name != "learned_on"}
    choice = models.get("choice_model") if isinstance(models.get("choice_model"), dict) else {}
    coefficients = choice.get("coefficients") or {}
    strongest = sorted(coefficients.items(), key=lambda item: -abs(item[1]))[:10]
    return {"learned_on": baselines.get("learned_on", "not recorded"),
            "models": [{"name": name, "label": SOURCE_LABELS.get(name, name), "text": _describe(value)}
                       for name, value in models.items()],
            "features": choice.get("features") or [], "strongest": strongest}


def _breakdown_rows(groups: dict[str, dict], order: Sequence[str]) -> list[dict[str, Any]]:
    """One row per group (those of `order` first, absent ones as no rows), sources policy first."""
    keys = list(order) + [k for k in groups if k not in order]
    rows = []
    for key in keys:
        group = groups.get(key)
        if not group:
            rows.append({"key": key, "n": None, "cells": [], "accuracy": None})
            continue
        names = _sources(group)
        rows.append({"key": key, "n": group[names[0]]["n"], "cells": [group[n]["nll"] for n in names],
                     "accuracy": group.get(POLICY, {}).get("accuracy_at_1")})
    return rows


def _generation_line(summary: dict | None) -> dict[str, Any] | None:
    """The small generation sample's parse and format rates, shown beside the likelihood figures."""
    if not summary or not summary.get("overall", {}).get("n"):
        return None
    o = summary["overall"]
    parsed = round((o["parsed_rate"]["value"] or 0.0) * o["n"])
    return {"n": o["n"], "parsed": parsed, "parsed_rate": o["parsed_rate"], "format_rate": o.get("format_rate")}


def likelihood_section(task: str, lik: dict[str, Any], *, model: str, generation: dict | None,
                       studies: Sequence[str], constant_share: float, figure_stem: Path, out_dir: Path,
                       title: str) -> dict[str, Any]:
    """One scored task's context: the sources' table with stars, warnings, figures and breakdowns."""
    overall = lik.get("overall") or {}
    section = {"task": task, "title": TASK_TITLES.get(task, task), "lik": lik, "n": lik.get("n_eligible", 0),
               "generation": _generation_line(generation), "fitting": _fitting(lik.get("baselines") or {})}
    if not section["n"] or POLICY not in overall:
        return section
    names = _sources(overall)
    baselines = baselines_of(names)
    section["header"] = [SOURCE_LABELS.get(n, n) for n in names if n != POLICY]  # the breakdowns' columns
    reference = lik.get("reference")
    section["reference_label"] = SOURCE_LABELS.get(reference, reference) if reference else "no reference"
    section["rows"] = [{"name": n, "label": SOURCE_LABELS.get(n, n), "policy": n == POLICY, "oracle": n == ORACLE,
                        "reference": n == lik.get("reference"), **overall[n]} for n in names]
    # The recovered share exists only beside an oracle (demo data): a column, and the oracle's notes.
    section["recovered"] = "recovered_share" in overall[POLICY]
    section["oracle"] = lik.get("oracle")
    section["star"] = {metric: clears_best_baseline(overall, POLICY, baselines, metric)
                       for metric in ("nll", "accuracy_at_1")}
    mass = lik.get("valid_mass") or {}
    section["valid_mass"] = mass
    section["collapsed"] = not _missing(mass.get("value")) and mass["value"] < VALID_MASS_WARNING
    shares = overall[POLICY].get("mean_distribution") or {}
    labels = lik.get("candidates") if isinstance(lik.get("candidates"), list) else None
    top = max(shares, key=lambda k: shares[k]) if shares else None
    if top is not None and shares[top] >= constant_share:
        section["constant"] = {"position": labels[int(top) - 1] if labels else top, "share": shares[top]}
    display = {n: model if n == POLICY else SOURCE_LABELS.get(n, n) for n in names}
    reliability = plot_reliability(overall, figure_stem.with_name(f"{figure_stem.name}_reliability.png"), title,
                                   order=names, names=display)
    distribution = plot_mean_distribution(overall, figure_stem.with_name(f"{figure_stem.name}_mean_positions.png"),
                                          title, position_labels=labels, order=names, names=display)
    section["reliability_figure"] = _relative(reliability, out_dir)
    section["distribution_figure"] = _relative(distribution, out_dir)
    section["breakdowns"] = [{"title": heading, "label": label,
                              "rows": _breakdown_rows(lik.get(key) or {}, studies if key == "by_study" else ())}
                             for key, heading, label in LIKELIHOOD_BREAKDOWNS]
    return section


# --------------------------------------------------------------------------- model report
# Library callers that pass no value get the schema's `report:` defaults (written once, there).
_REPORT_DEFAULTS = resolve_section("report", {})


def render_model_report(
    *,
    model: str,
    issue: str,
    eval_dirs: Sequence[Path],
    out: Path,
    figures: Path,
    train_dir: Path | None = None,
    template: Path = MODEL_TEMPLATE,
    config: Path | None = None,
    constant_share: float = _REPORT_DEFAULTS["constant_share"],
    samples: int = _REPORT_DEFAULTS["samples"],
) -> str:
    """Render one model's report (every split in `eval_dirs`, training curves when `train_dir` is given) to `out`."""
    issue = issues.issue_name(issue)
    short = issues.ISSUE_TO_SHORT[issue]
    figures.mkdir(parents=True, exist_ok=True)  # a declared output even when nothing is plotted
    options = {"model": model, "issue": issue, "figures": figures, "out_dir": out.parent,
               "constant_share": constant_share, "samples": samples}
    splits = [split_context(load_metrics(eval_dir), eval_dir, **options) for eval_dir in eval_dirs]
    training = training_context(train_dir, figures / f"{model}_{short}_training.png", out.parent) if train_dir else None
    context = {
        "model": model,
        "issue": issue,
        "issue_label": issues.ISSUE_LABELS[issue],
        "short": short,
        "splits": splits,
        "training": training,
        "config": {"path": str(config), "sha256": io.file_sha256(config)} if config and config.is_file() else None,
        "constant_share": constant_share,
        "opinion_not_trained": OPINION_NOT_TRAINED,
    }
    text = environment(template).render(**context)
    io.write_text(out, text)
    log.info("wrote %s (%d splits, training curves: %s)", out, len(splits), "yes" if training else "none")
    return text


def evaluation_mode(data: dict[str, Any]) -> str:
    """The evaluate mode; metrics written before scoring existed had generation only."""
    return data.get("mode") or ("both" if data.get("likelihood") else "generate")


def _row_counts(data: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Rows available, scored and generated per task (older metrics named the generated ones `evaluated`)."""
    out = {}
    for task, counts in (data.get("rows") or {}).items():
        generated = counts.get("generated", counts.get("evaluated", 0))
        out[task] = {"available": counts.get("available", 0), "scored": counts.get("scored", 0), "generated": generated}
    return out


def split_context(data: dict[str, Any], eval_dir: Path, *, model: str, issue: str, figures: Path, out_dir: Path,
                  constant_share: float, samples: int) -> dict[str, Any]:
    """One split's context: mode, row counts, likelihood sections, generation figures and samples."""
    short = issues.ISSUE_TO_SHORT[issue]
    stem = figures / f"{model}_{short}_{data['split']}"
    mode = evaluation_mode(data)
    likelihood = data.get("likelihood") or {}
    studies = issue_studies(issue, {**data["tasks"], **{f"likelihood/{k}": v for k, v in likelihood.items()}})
    split = {"name": data["split"], "dir": str(eval_dir), "data": data, "position_figure": None, "mode": mode,
             "rows": _row_counts(data), "studies": studies,
             "show_likelihood": mode in ("score", "both"), "show_generation": mode in ("generate", "both"),
             # The forced assistant prefix the policy was scored after, quoted wherever the report warns.
             "prefix": (data.get("scoring") or {}).get("prefix") or "the forced answer prefix",
             "think_template": (data.get("scoring") or {}).get("think_template") or ""}
    split["likelihood"] = [
        likelihood_section(task, lik, model=model, generation=data["tasks"].get(task), studies=studies,
                           constant_share=constant_share, figure_stem=stem.with_name(f"{stem.name}_{task}"),
                           out_dir=out_dir, title=f"{model} on {short}, {data['split']}: {task}")
        for task, lik in likelihood.items()]
    next_video = data["tasks"].get("next_video")
    if next_video and next_video["n_eligible"]:
        figure = plot_positions(next_video["position_distribution"], f"{model} on {short}, {data['split']}",
                                stem.with_name(f"{stem.name}_positions.png"))
        split["position_figure"] = _relative(figure, out_dir)
    split["samples"] = {task: rows[:samples] for task, rows in data.get("samples", {}).items()}
    # Whether this evaluation ran the opinion task at all (a trained model's does only when
    # `evaluate.trained_model_tasks` asks): its figures, its row counts or its prompts' hash.
    split["opinion_evaluated"] = any("opinion" in (block or {}) for block in (
        data["tasks"], data.get("rows"), (data.get("provenance") or {}).get("prompts_sha256")))
    return split


def training_context(train_dir: Path, figure: Path, out_dir: Path) -> dict[str, Any]:
    """A training run's log summary, curves and recipe hash."""
    rows = load_training_log(train_dir)
    plot_training_curves(rows, figure)
    discriminator = plot_discriminator(rows, figure.with_name(f"{figure.stem}_discriminator.png"))
    recipe = train_dir / "resolved_recipe.yaml"
    return {
        "dir": str(train_dir),
        "n_logged_steps": len(rows),
        "last_step": rows[-1].get("step") if rows else None,
        "figure": _relative(figure, out_dir),
        "discriminator_figure": _relative(discriminator, out_dir) if discriminator else None,
        "discriminator_gap": discriminator_gap(rows),
        "summary": training_summary(rows),
        "recipe_sha256": io.file_sha256(recipe) if recipe.is_file() else None,
        "recipe": str(recipe) if recipe.is_file() else None,
    }


def issue_studies(issue: str, tasks: dict[str, dict]) -> list[str]:
    """Every study of `issue` (an absent one renders as "no rows") plus any other study found."""
    known = [study for study, study_issue in issues.STUDIES.items() if study_issue == issue]
    found = {study for task in tasks.values() for study in task.get("by_study", {})}
    return known + sorted(found - set(known))
