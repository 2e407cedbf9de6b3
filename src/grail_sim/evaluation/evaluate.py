"""The evaluate stage's orchestration: load Contract-2 prompt datasets, score and/or generate each
row, and write Contract 4 (`grail-sim evaluate` in cli.py is a thin wrapper around `evaluate`).

Outputs in `out_dir`:
- `scores.jsonl`: per scored row, the policy's log-likelihood of every allowed answer, its
  distribution and the baselines' (likelihood.py, scorers.py);
- `predictions.jsonl`: per generated row, the reply and its parsed answer;
- `metrics.json`: likelihood figures with every baseline (choice_metrics.py), generation figures
  (metrics.py), provenance, throughput and a few sample responses.

`evaluate.mode` picks `score`, `generate` or `both`. Each kind of record streams to a partial file
that a killed run resumes from (streaming.py). Model code lives in scorers.py and generators.py and
statistics in the metrics modules, so this module holds neither.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from grail_sim import answers, io
from grail_sim.errors import EvaluationError
from grail_sim.evaluation import likelihood, metrics, scorers, vllm_engine
from grail_sim.evaluation.direction_metrics import direction_metrics
from grail_sim.config import resolve_section
from grail_sim.data.demo_oracle import Oracle, load_truth
from grail_sim.evaluation.generators import DEFAULTS, GenerationSettings, make_generator
from grail_sim.evaluation.provenance import provenance as provenance_of
from grail_sim.evaluation.streaming import RecordStream, progress_bar, run_batches
from grail_sim.rows import finite, opinion_direction, with_system_prompt

log = logging.getLogger(__name__)


# The Contract-2 columns evaluation reads; a dataset without one is refused up front, not mid-run.
REQUIRED_COLUMNS = (
    "id", "prompt", "gold_index", "n_options", "issue", "participant_study", "participant_id",
    "opinion_before", "opinion_after",
)

# Library callers get the schema's defaults (written once, there), as the CLI and workflow do.
PROMPT_DEFAULTS = resolve_section("prompts", {})

# Record files (`{name}.jsonl`, streamed through `{name}.partial.jsonl`).
SCORES = "scores"
PREDICTIONS = "predictions"


# --------------------------------------------------------------------------- inputs
def load_task_split(prompts_dir: Path, task: str, split: str):
    """The `split` of `prompts_dir/task` (a saved DatasetDict); fails naming folder, split or column."""
    from datasets import load_from_disk

    folder = prompts_dir / task
    if not folder.is_dir():
        raise EvaluationError(f"prompt dataset {folder} does not exist (expected Contract 2: {prompts_dir}/{{task}}/)")
    try:
        dataset_dict = load_from_disk(str(folder))
    except Exception as err:  # datasets raises several types for an unreadable folder
        raise EvaluationError(f"cannot load prompt dataset {folder}: {type(err).__name__}: {err}") from err
    if not hasattr(dataset_dict, "keys") or split not in dataset_dict:
        available = ", ".join(sorted(dataset_dict.keys())) if hasattr(dataset_dict, "keys") else "none (not a DatasetDict)"
        raise EvaluationError(f"prompt dataset {folder} has no split {split!r}; splits: {available}")
    dataset = dataset_dict[split]
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise EvaluationError(f"prompt dataset {folder} split {split!r} lacks required column(s): {', '.join(missing)}")
    if task == "opinion" and "answer" in dataset.column_names and len(dataset):
        target = str(dataset[0]["answer"])
        if target not in answers.DIRECTIONS and answers.parse_opinion(f"<answer>{target}</answer>") is None:
            raise EvaluationError(
                f"prompt dataset {folder} asks for opinion answers like {target!r}, neither a 0-1 index nor one "
                f"of {', '.join(answers.DIRECTIONS)}")
    return dataset


def has_split(prompts_dir: Path, task: str, split: str) -> bool:
    """Whether the saved DatasetDict `prompts_dir/task` has `split` (without loading it)."""
    return (prompts_dir / task / split).is_dir()


def select_rows(dataset, max_rows: int, seed: int) -> list[int]:
    """Row indices to evaluate: all, or a seeded sample of `max_rows` kept in dataset order."""
    n = len(dataset)
    if not max_rows or max_rows >= n:
        return list(range(n))
    import numpy as np

    chosen = np.random.default_rng(seed).choice(n, size=max_rows, replace=False)
    return sorted(int(i) for i in chosen)


def score_row(task: str, row: dict, raw_output: str, tolerance: float) -> dict[str, Any]:
    """A Contract-4 prediction record; an unparsable answer is `parsed: null`, never a fallback.

    Opinion rows are read by what their prompt asked for: a 0-1 index (scored by its direction
    against the real change, at `tolerance`) or a direction word (scored against the real direction).
    """
    before, after = finite(row["opinion_before"]), finite(row["opinion_after"])
    record: dict[str, Any] = {
        "id": str(row["id"]), "task": task, "raw_output": raw_output,
        "n_options": int(row["n_options"]), "issue": row["issue"],
        "participant_study": row["participant_study"], "participant_id": row["participant_id"],
        "opinion_before": before, "opinion_after": after,
        "format_ok": answers.has_format(raw_output),
    }
    if task == "next_video":
        parsed = answers.parse_choice(raw_output, int(row["n_options"]))
        gold = int(row["gold_index"])
        record.update(parsed=parsed, gold=gold, correct=parsed == gold)
    elif str(row.get("answer")) in answers.DIRECTIONS:
        parsed, gold = answers.parse_direction(raw_output), row.get("opinion_direction")
        record.update(target="direction", parsed=parsed, gold=gold,
                      correct=None if gold not in answers.DIRECTIONS else parsed == gold)
    else:
        parsed = answers.parse_opinion(raw_output)
        correct = None
        if before is not None and after is not None:
            correct = parsed is not None and (
                opinion_direction(before, parsed, tolerance) == opinion_direction(before, after, tolerance))
        record.update(target="index", parsed=parsed, gold=after, correct=correct)
    return record


# --------------------------------------------------------------------------- orchestration
MODES = ("score", "generate", "both")


def evaluate(
    *,
    model_dir: Path,
    prompts_dir: Path,
    tasks: Sequence[str],
    split: str,
    out_dir: Path,
    settings: GenerationSettings,
    mode: str = DEFAULTS["mode"],
    generate_rows: int = DEFAULTS["generate_rows"],
    score_rows: int = DEFAULTS["score_rows"],
    score_batch_size: int = DEFAULTS["score_batch_size"],
    score_think: str = DEFAULTS["score_think"],
    train_split_dir: Path | None = None,
    model_name: str | None = None,
    bootstrap_samples: int = DEFAULTS["bootstrap_samples"],
    confidence: float = DEFAULTS["confidence"],
    direction_tolerance: float = PROMPT_DEFAULTS["direction_tolerance"],
    report_samples: int = DEFAULTS["report_samples"],
    demo_truth: Path | None = None,
) -> dict[str, Any]:
    """Score and/or generate (resuming), then write scores.jsonl, predictions.jsonl and metrics.json.

    `score_rows` and `generate_rows` cap the rows scored and generated per task (0 = all; a seeded
    sample in dataset order otherwise). Both files are always written (empty for a mode not run),
    so a workflow's outputs do not depend on the mode. `demo_truth` (a demo capsule's ground truth)
    adds the demo's oracle to the likelihood figures as the ceiling. `score_think` says what is
    forced before each scored answer (evaluation/scorers.py). Returns the metrics.
    """
    if mode not in MODES:
        raise EvaluationError(f"evaluate.mode must be one of {', '.join(MODES)} (got {mode!r})")
    if not model_dir.is_dir():
        raise EvaluationError(f"model folder {model_dir} does not exist")
    think = scorers.think_forcing(model_dir, score_think)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets_by_task = {task: load_task_split(prompts_dir, task, split) for task in tasks}
    provenance = provenance_of(model_dir, prompts_dir, tasks, split)
    if "next_video" in datasets_by_task:  # the task trainers learn from: scored with the prompts it learned from
        system = provenance["prompt_overrides"].get("system_prompt")
        datasets_by_task["next_video"] = with_system_prompt(datasets_by_task["next_video"], system)
    inputs = {"model_sha256": provenance["model_sha256"], "base_model_sha256": provenance["base_model_sha256"],
              "prompts_sha256": provenance["prompts_sha256"], "split": split, "tasks": list(tasks)}
    jobs = _plan(datasets_by_task, mode, generate_rows, score_rows, settings.seed)
    train = {task: _train_split(train_split_dir, prompts_dir, task) for task in tasks}
    options = {"samples": bootstrap_samples, "seed": settings.seed, "confidence": confidence}
    oracle = Oracle(load_truth(demo_truth)) if demo_truth is not None else None
    result: dict[str, Any] = {
        "model": model_name or _infer_model_name(model_dir), "mode": mode, "provenance": provenance,
        "rows": {task: {"available": len(ds), "scored": len(jobs["score"][task]),
                        "generated": len(jobs["generate"][task])} for task, ds in datasets_by_task.items()},
    }

    context = engine_context(datasets_by_task, settings.max_new_tokens)
    try:  # scoring and generation share one vLLM engine (evaluation/vllm_engine.py), shut down after both
        score_stream = RecordStream(out_dir, SCORES, {**inputs, "score_rows": score_rows, "dtype": settings.dtype,
                                                      **think.describe()})
        result["scoring"] = _run_scoring(model_dir, split, settings, score_batch_size, think, datasets_by_task,
                                         jobs["score"], score_stream, context)
        scores = score_stream.records(tasks)
        result["likelihood"] = {
            task: likelihood.likelihood_metrics(task, scores[task], _rows_for(scores[task], datasets_by_task[task]),
                                                _rows_of(train[task]), options, oracle=oracle)
            for task in tasks if scores[task]}

        generation_stream = RecordStream(out_dir, PREDICTIONS, {
            **inputs, "generate_rows": generate_rows, "direction_tolerance": direction_tolerance, **settings.fingerprint()})
        result["generation"] = _run_generation(model_dir, split, settings, datasets_by_task, jobs["generate"],
                                               generation_stream, direction_tolerance, context)
        predictions = generation_stream.records(tasks)
        result["tasks"] = {task: _task_metrics(task, predictions[task], train[task], direction_tolerance, options)
                           for task in tasks if predictions[task]}
        result["samples"] = {task: _samples(datasets_by_task[task], jobs["generate"][task], predictions[task],
                                            report_samples) for task in tasks if predictions[task]}

        count = score_stream.finish(record for task in tasks for record in scores[task])
        count += generation_stream.finish(record for task in tasks for record in predictions[task])
    finally:
        vllm_engine.close_engines()
    io.write_json(out_dir / "metrics.json", result)
    log.info("wrote %d scored and generated records and metrics to %s", count, out_dir)
    return result


# Tokens beyond the longest prompt that an engine's context must hold besides the new tokens: the
# chat template's own, the forced think and answer tag of a scored row, the longest candidate.
CONTEXT_MARGIN = 96


def engine_context(datasets_by_task: dict[str, Any], max_new_tokens: int) -> int | None:
    """The context a vLLM engine needs for these rows (Contract 2's `prompt_tokens`), None when the
    rows do not count their tokens (then the model's own maximum)."""
    return vllm_engine.needed_context(datasets_by_task.values(), max_new_tokens, CONTEXT_MARGIN)


def _rows_for(records: Sequence[dict], dataset) -> list[dict]:
    """The dataset rows of `records`, in the records' order."""
    index = {str(row_id): i for i, row_id in enumerate(dataset["id"])}
    return [dataset[index[record["id"]]] for record in records]


def _rows_of(dataset) -> list[dict] | None:
    return None if dataset is None else dataset.to_list()


def _plan(datasets_by_task: dict[str, Any], mode: str, generate_rows: int, score_rows: int,
          seed: int) -> dict[str, dict[str, list[int]]]:
    """Row indices to score and to generate, per task (an unscorable task is only generated)."""
    jobs: dict[str, dict[str, list[int]]] = {"score": {}, "generate": {}}
    for task, dataset in datasets_by_task.items():
        scored = mode in ("score", "both") and likelihood.scorable(task, dataset)
        jobs["score"][task] = select_rows(dataset, score_rows, seed) if scored else []
        jobs["generate"][task] = select_rows(dataset, generate_rows, seed) if mode in ("generate", "both") else []
        log.info("%s [%d rows]: %d to score, %d to generate", task, len(dataset), len(jobs["score"][task]),
                 len(jobs["generate"][task]))
        if mode == "score" and not scored:
            log.warning("%s rows ask for an opinion index: scoring covers choices and directions only, "
                        "so this task has no figures in mode `score` (use `both`)", task)
    return jobs


def _pending(stream: RecordStream, task: str, dataset, indices: list[int]) -> list[int]:
    done = stream.done_ids()
    return [i for i in indices if (task, str(dataset[i]["id"])) not in done]


def _run_scoring(model_dir: Path, split: str, settings: GenerationSettings, batch_size: int,
                 think: scorers.ThinkForcing, datasets_by_task: dict[str, Any], jobs: dict[str, list[int]],
                 stream: RecordStream, context: int | None = None) -> dict[str, Any]:
    """Score the rows not yet in `stream`; returns the run's throughput record."""
    def load():
        scorer = scorers.make_scorer(model_dir, backend=settings.backend, batch_size=batch_size,
                                     device=settings.device, dtype=settings.dtype, seed=settings.seed, think=think,
                                     max_model_len=context)
        return scorer, lambda task, batch: likelihood.score_batch(scorer, task, batch)

    record = _run_pending(load, f"score {model_dir.name} [{split}]", datasets_by_task, jobs, stream,
                          count_key="scored_rows", rate_key="rows_per_second")
    return {**record, "batch_size": batch_size, "dtype": settings.dtype, **think.describe()}


def _run_generation(model_dir: Path, split: str, settings: GenerationSettings, datasets_by_task: dict[str, Any],
                    jobs: dict[str, list[int]], stream: RecordStream, tolerance: float,
                    context: int | None = None) -> dict[str, Any]:
    """Generate the rows not yet in `stream`; returns the run's throughput record."""
    def load():
        generator = make_generator(model_dir, settings, context)

        def work(task: str, batch: list[dict]) -> list[dict]:
            outputs = generator.generate([row["prompt"] for row in batch])
            return [score_row(task, row, text, tolerance) for row, text in zip(batch, outputs)]
        return generator, work

    record = _run_pending(load, f"generate {model_dir.name} [{split}]", datasets_by_task, jobs, stream,
                          count_key="generated_rows", rate_key="prompts_per_second")
    return {**record, **settings.fingerprint(), "batch_size": settings.batch_size}


def _run_pending(load, label: str, datasets_by_task: dict[str, Any], jobs: dict[str, list[int]],
                 stream: RecordStream, *, count_key: str, rate_key: str) -> dict[str, Any]:
    """Run the worker `load()` returns over the rows of `jobs` not yet in `stream`.

    `load` gives (engine, work): the engine (scorer or generator) has `backend`, `chunk_size` and
    `prompt_length`, and `work(task, batch)` turns rows into records. The model is loaded only
    when rows are left, so a finished run re-scores its records for free.
    """
    pending = {task: _pending(stream, task, datasets_by_task[task], jobs[task]) for task in jobs}
    total = sum(len(v) for v in pending.values())
    record = {"backend": None, count_key: 0, "seconds": 0.0, rate_key: None,
              "resumed_rows": sum(len(v) for v in jobs.values()) - total}
    if not total:
        return record
    engine, work = load()
    record["backend"] = engine.backend
    progress = progress_bar(total, label)
    for task, indices in pending.items():
        seconds, count = run_batches(
            datasets_by_task[task], indices, length=lambda row: engine.prompt_length(row["prompt"]),
            chunk_size=engine.chunk_size, work=lambda batch, task=task: work(task, batch), stream=stream,
            progress=progress, label=f"{label} {task}")
        record["seconds"] += seconds
        record[count_key] += count
    if progress is not None:
        progress.close()
    record[rate_key] = record[count_key] / record["seconds"] if record["seconds"] else None
    log.info("%s: %d rows in %.1f s", label, record[count_key], record["seconds"])
    return record


def _train_split(train_split_dir: Path | None, prompts_dir: Path, task: str):
    """The train split the baselines are learned on: `train_split_dir`'s (required), else the prompts' (optional)."""
    base_dir = train_split_dir or prompts_dir
    train = load_task_split(base_dir, task, "train") if has_split(base_dir, task, "train") else None
    if train_split_dir is not None and train is None:
        raise EvaluationError(f"--train-split-dir {train_split_dir}/{task} has no `train` split")
    return train


def _task_metrics(task: str, records: list[dict], train, tolerance: float, options: dict[str, Any]) -> dict[str, Any]:
    """metrics.py's generation figures for one task, with baselines learned on `train` when there is one."""
    if task == "next_video":
        return metrics.next_video_metrics(
            records, train_gold_indices=None if train is None else train["gold_index"], **options)
    if records and records[0].get("target") == "direction":
        return direction_metrics(
            records, train_directions=None if train is None else train["opinion_direction"], **options)
    return metrics.opinion_metrics(
        records, train_after_values=None if train is None else train["opinion_after"],
        train_before_values=None if train is None else train["opinion_before"], tolerance=tolerance, **options)


def _samples(dataset, selected: list[int], records: list[dict], count: int) -> list[dict]:
    """The first `count` evaluated prompts with the model's full responses, for the report."""
    by_id = {r["id"]: r for r in records}
    out = []
    for index in selected:
        if len(out) >= count:
            break
        row = dataset[index]
        record = by_id.get(str(row["id"]))
        if record is None:
            continue
        out.append({"id": record["id"], "prompt": row["prompt"], "raw_output": record["raw_output"],
                    "parsed": record["parsed"], "gold": record["gold"], "format_ok": record["format_ok"]})
    return out


def _infer_model_name(model_dir: Path) -> str:
    """`base` for results/models/base, the trainer for results/train/{trainer}_{short}/final."""
    name = model_dir.name if model_dir.name != "final" else model_dir.parent.name
    return name.rsplit("_", 1)[0] if model_dir.name == "final" and "_" in name else name
