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
from grail_sim.report.plots import curve, plot_positions, plot_training_curves

log = logging.getLogger(__name__)


TEMPLATES = Path(__file__).resolve().parent / "templates"
MODEL_TEMPLATE = TEMPLATES / "model_report.md.j2"
PORTFOLIO_TEMPLATE = TEMPLATES / "portfolio.md.j2"
# What a figure of an empty group (metrics.py gives None, never NaN) reads as.
NO_ROWS = "no rows"


# --------------------------------------------------------------------------- formatting
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt_num(value: Any, digits: int = 3) -> str:
    return NO_ROWS if _missing(value) else f"{float(value):.{digits}f}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    return NO_ROWS if _missing(value) else f"{100 * float(value):.{digits}f}%"


def fmt_ci(stat: dict | None, digits: int = 3, percent: bool = False) -> str:
    """`value [low, high]`, or "no rows" for an empty group."""
    if not stat or _missing(stat.get("value")):
        return NO_ROWS
    show = (lambda v: fmt_pct(v, 1)) if percent else (lambda v: fmt_num(v, digits))
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
    env.filters.update(num=fmt_num, pct=fmt_pct, ci=fmt_ci, fence=fence)
    return env.get_template(template.name)


# --------------------------------------------------------------------------- inputs
# What every report reads from an evaluation's metrics.json (Contract 4).
METRICS_KEYS = ("model", "tasks")


def load_metrics(eval_dir: Path) -> dict[str, Any]:
    """An evaluation's metrics.json, with `split` set from its folder name (results/eval/{model}/{split})."""
    path = eval_dir / "metrics.json"
    if not path.is_file():
        raise ReportError(f"{path} does not exist: run `grail-sim evaluate --out {eval_dir}` first")
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}:{err.lineno}: corrupt JSON ({err.msg})") from None
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
    prefix = f"{model}_{short}"
    figures.mkdir(parents=True, exist_ok=True)  # a declared output even when nothing is plotted
    splits = []
    for eval_dir in eval_dirs:
        data = load_metrics(eval_dir)
        split = {"name": data["split"], "dir": str(eval_dir), "data": data, "position_figure": None}
        next_video = data["tasks"].get("next_video")
        if next_video and next_video["n_eligible"]:
            figure = plot_positions(next_video["position_distribution"], f"{model} on {short}, {data['split']}",
                                    figures / f"{prefix}_{data['split']}_positions.png")
            split["position_figure"] = _relative(figure, out.parent)
        split["samples"] = {task: rows[:samples] for task, rows in data.get("samples", {}).items()}
        split["studies"] = issue_studies(issue, data["tasks"])
        splits.append(split)

    training = None
    if train_dir is not None:
        rows = load_training_log(train_dir)
        figure = plot_training_curves(rows, figures / f"{prefix}_training.png")
        recipe = train_dir / "resolved_recipe.yaml"
        training = {
            "dir": str(train_dir),
            "n_logged_steps": len(rows),
            "last_step": rows[-1].get("step") if rows else None,
            "figure": _relative(figure, out.parent),
            "summary": training_summary(rows),
            "recipe_sha256": io.file_sha256(recipe) if recipe.is_file() else None,
            "recipe": str(recipe) if recipe.is_file() else None,
        }

    context = {
        "model": model,
        "issue": issue,
        "issue_label": issues.ISSUE_LABELS[issue],
        "short": short,
        "splits": splits,
        "training": training,
        "config": {"path": str(config), "sha256": io.file_sha256(config)} if config and config.is_file() else None,
        "constant_share": constant_share,
    }
    text = environment(template).render(**context)
    io.write_text(out, text)
    log.info("wrote %s (%d splits, training curves: %s)", out, len(splits), "yes" if training else "none")
    return text


def issue_studies(issue: str, tasks: dict[str, dict]) -> list[str]:
    """Every study of `issue` (an absent one renders as "no rows") plus any other study found."""
    known = [study for study, study_issue in issues.STUDIES.items() if study_issue == issue]
    found = {study for task in tasks.values() for study in task.get("by_study", {})}
    return known + sorted(found - set(known))
