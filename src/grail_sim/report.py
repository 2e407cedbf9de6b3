"""`grail-sim report`: render evaluation and training results as Markdown with Jinja2.

    grail-sim report --model grail --issue gun --eval results/eval/grail_gun/validation \
        results/eval/grail_gun/test --train-dir results/train/grail_gun --out reports/grail_gun.md
    grail-sim report portfolio --eval results/eval/*_gun/test --out reports/portfolio.md

Templates (`templates/*.md.j2`, or `--template`) are data: every number they show comes from
`metrics.json` / `metrics.jsonl` through the context built here, formatted by the filters below.
Figures are PNGs written beside the report (`--figures`) and embedded by relative path.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io, issues, metrics

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
MODEL_TEMPLATE = TEMPLATES / "model_report.md.j2"
PORTFOLIO_TEMPLATE = TEMPLATES / "portfolio.md.j2"
CURVES = (("reward", "reward"), ("kl", "KL to the reference"), ("completions/mean_length", "completion length (tokens)"))
NO_ROWS = "no rows"


class ReportError(RuntimeError):
    """Missing or unreadable report input; the message names the file."""


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=("model", "portfolio"), default="model",
                        help="model: one model on one issue (default); portfolio: every model side by side")
    parser.add_argument("--eval", nargs="+", required=True, metavar="DIR",
                        help="evaluation folders (Contract 4), each holding metrics.json; the folder name is the split")
    parser.add_argument("--out", required=True, help="Markdown file to write")
    parser.add_argument("--model", help="model name (model reports)")
    parser.add_argument("--issue", help="issue, short or long name (model reports)")
    parser.add_argument("--train-dir", help="training folder (Contract 3) with metrics.jsonl; omit for `base`")
    parser.add_argument("--config", help="workflow config file, hashed for provenance")
    parser.add_argument("--template", help="Jinja2 template (default: the packaged one for KIND)")
    parser.add_argument("--figures", help="folder for PNG figures (default: figures/ beside --out)")
    parser.add_argument("--constant-share", type=float, default=0.75,
                        help="flag a model whose most common answer has at least this share of parsed answers")
    parser.add_argument("--samples", type=int, default=3, help="sample prompts with responses shown per task")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    figures = Path(args.figures) if args.figures else out.parent / "figures"
    eval_dirs = [Path(d) for d in args.eval]
    if args.kind == "portfolio":
        render_portfolio(eval_dirs, out, template=Path(args.template) if args.template else PORTFOLIO_TEMPLATE,
                         config=Path(args.config) if args.config else None)
        return 0
    if not args.model or not args.issue:
        raise ReportError("a model report needs --model and --issue")
    render_model_report(
        model=args.model, issue=args.issue, eval_dirs=eval_dirs, out=out, figures=figures,
        train_dir=Path(args.train_dir) if args.train_dir else None,
        template=Path(args.template) if args.template else MODEL_TEMPLATE,
        config=Path(args.config) if args.config else None,
        constant_share=args.constant_share, samples=args.samples,
    )
    return 0


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
    import jinja2

    if not template.is_file():
        raise ReportError(f"template {template} does not exist")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template.parent)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(num=fmt_num, pct=fmt_pct, ci=fmt_ci, fence=fence)
    return env.get_template(template.name)


# --------------------------------------------------------------------------- inputs
def load_metrics(eval_dir: Path) -> dict[str, Any]:
    path = eval_dir / "metrics.json"
    if not path.is_file():
        raise ReportError(f"{path} does not exist: run `grail-sim evaluate --out {eval_dir}` first")
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}:{err.lineno}: corrupt JSON ({err.msg})") from None
    data["split"] = eval_dir.name
    return data


def load_training_log(train_dir: Path) -> list[dict]:
    path = train_dir / "metrics.jsonl"
    if not path.is_file():
        raise ReportError(f"{path} does not exist (Contract 3): a trained model needs its training log")
    return list(io.read_jsonl(path))


def curve(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for index, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(float(row.get("step", index)))
            values.append(float(value))
    return steps, values


def training_summary(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """First and last logged value of every numeric training metric, in first-seen key order."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in ("step", "epoch")]
    out = []
    for key in keys:
        _, values = curve(rows, key)
        if values:
            out.append({"key": key, "first": values[0], "last": values[-1], "n": len(values)})
    return out


# --------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(rows: Sequence[dict], path: Path) -> Path:
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


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


# --------------------------------------------------------------------------- model report
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
    constant_share: float = 0.75,
    samples: int = 3,
) -> str:
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


# --------------------------------------------------------------------------- portfolio
def _best_baseline(baselines: dict[str, dict], higher_is_better: bool) -> tuple[str | None, dict | None]:
    candidates = [(name, stat) for name, stat in baselines.items() if stat and not _missing(stat.get("value"))]
    if not candidates:
        return None, None
    # Among tied baselines the one with the wider reach wins: a model must clear the hardest one.
    if higher_is_better:
        return max(candidates, key=lambda item: (item[1]["value"], item[1].get("ci_high") or 0.0))
    return min(candidates, key=lambda item: (item[1]["value"], -(item[1].get("ci_low") or 0.0)))


def issue_studies(issue: str, tasks: dict[str, dict]) -> list[str]:
    """Every study of `issue` (an absent one renders as "no rows") plus any other study found."""
    known = [study for study, study_issue in issues.STUDIES.items() if study_issue == issue]
    found = {study for task in tasks.values() for study in task.get("by_study", {})}
    return known + sorted(found - set(known))


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
    evaluations = [load_metrics(d) for d in eval_dirs]
    context = portfolio_context(evaluations)
    context["config"] = {"path": str(config), "sha256": io.file_sha256(config)} if config and config.is_file() else None
    context["evaluations"] = [{"model": d["model"], "split": d["split"], "dir": str(p),
                               "model_sha256": d["provenance"]["model_sha256"]} for d, p in zip(evaluations, eval_dirs)]
    text = environment(template).render(**context)
    io.write_text(out, text)
    log.info("wrote %s (%d evaluations)", out, len(evaluations))
    return text
