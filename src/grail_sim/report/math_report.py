"""The math task's report (#15): every evaluated model of one math run side by side (the zero-shot
base first), the paired gain of the trained model over each of the others, its training curves and
sample replies. Renders `templates/math_report.md.j2`.

    grail-sim report math --model grpo --eval results/eval/math_base/test results/eval/math_sft/test \
        results/eval/math_grpo/test --train-dir results/train/math_grpo --out reports/math_grpo.md

Every figure comes from the evaluations' `math_metrics.json` and `math_predictions.jsonl`
(grail_sim.evaluation.math_eval). A gain is the mean over problems of (trained correct - other
correct) with a bootstrap interval over problems, paired on the problem ids both models answered:
the interval that says whether training raised pass@1, rather than two overlapping intervals.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io
from grail_sim.errors import ReportError
from grail_sim.report.model_report import _relative, environment, training_context

log = logging.getLogger(__name__)

MATH_TEMPLATE = Path(__file__).resolve().parent / "templates" / "math_report.md.j2"
GAIN_KEYS = ("pass@1_greedy", "format_rate")


def load_math_evaluation(eval_dir: Path) -> dict[str, Any]:
    """One model's math evaluation: its metrics and its per-problem records, named by its folder
    (results/eval/math_{model}/{split})."""
    metrics = io.read_json_file(eval_dir / "math_metrics.json", what="math evaluation metrics", error=ReportError,
                                hint=f": run `grail-sim evaluate-math --out {eval_dir}` first")
    path = eval_dir / "math_predictions.jsonl"
    if not path.is_file():
        raise ReportError(f"{path} does not exist: rerun `grail-sim evaluate-math --out {eval_dir}`")
    name = eval_dir.parent.name
    return {"name": name[len("math_"):] if name.startswith("math_") else name, "dir": str(eval_dir),
            "metrics": metrics, "records": list(io.read_jsonl(path))}


def paired_gain(trained: Sequence[dict], other: Sequence[dict], *, bootstrap: int, confidence: float,
                seed: int = 0) -> dict[str, Any]:
    """Mean (trained - other) of each GAIN_KEYS score over the problems both answered, with a
    bootstrap interval over problems; `clears` says whether the pass@1 interval lies above 0."""
    from grail_sim.evaluation.metrics import bootstrap_means

    fields = {"pass@1_greedy": "correct", "format_rate": "format_ok"}
    theirs = {r["id"]: r for r in other}
    ids = [r["id"] for r in trained if r["id"] in theirs]
    mine = {r["id"]: r for r in trained}
    scores = {key: [float(mine[i][field]) - float(theirs[i][field]) for i in ids] for key, field in fields.items()}
    gain = bootstrap_means(ids, scores, samples=bootstrap, seed=seed, confidence=confidence)
    low = gain["pass@1_greedy"].get("ci_low")
    return {"n_problems": len(ids), **gain, "clears": low is not None and low > 0}


def render_math_report(*, model: str, eval_dirs: Sequence[Path], out: Path, figures: Path,
                       train_dir: Path | None = None, template: Path = MATH_TEMPLATE, config: Path | None = None,
                       samples: int) -> str:
    """Render the math report of `model` (one of the evaluations in `eval_dirs`) to `out`; the gains'
    intervals use the trained model's evaluation settings (bootstrap resamples, confidence, seed)."""
    evaluations = [load_math_evaluation(Path(d)) for d in eval_dirs]
    names = [e["name"] for e in evaluations]
    if model not in names:
        raise ReportError(f"--model {model!r} is none of the evaluated models {names} (from the --eval folders)")
    trained = evaluations[names.index(model)]
    settings = trained["metrics"]
    missing = [key for key in ("bootstrap_samples", "confidence", "seed") if key not in settings]
    if missing:
        raise ReportError(f"{trained['dir']}/math_metrics.json lacks {missing}: rerun `grail-sim evaluate-math`")
    bootstrap, confidence = settings["bootstrap_samples"], settings["confidence"]
    gains = [{"against": e["name"], **paired_gain(trained["records"], e["records"], bootstrap=bootstrap,
                                                   confidence=confidence, seed=settings["seed"])}
             for e in evaluations if e is not trained]
    figures.mkdir(parents=True, exist_ok=True)
    training = None
    if train_dir is not None:
        training = training_context(train_dir, figures / f"math_{model}_training.png", out.parent)
    context = {
        "model": model, "evaluations": evaluations, "trained": trained, "gains": gains, "training": training,
        "dataset": _dataset_stats(trained["metrics"].get("dataset")), "confidence": confidence,
        "samples": trained["records"][:samples],
        "config": {"path": str(config), "sha256": io.file_sha256(config)} if config and config.is_file() else None,
        "figures_dir": _relative(figures, out.parent),
    }
    text = environment(template).render(**context)
    io.write_text(out, text)
    log.info("wrote %s (%d models, training curves: %s)", out, len(evaluations), "yes" if training else "none")
    return text


def _dataset_stats(dataset: str | None) -> dict[str, Any]:
    """The math prompt dataset's stats.json (source, style, rows, drops), when it is there."""
    path = Path(dataset or "") / "stats.json"
    stats = io.read_json_file(path, what="math dataset stats", error=ReportError) if dataset and path.is_file() else {}
    return {"path": dataset, "source": "unknown (no stats.json)", "style": "unknown", "rows": {}, "dropped": {}, **stats}
