"""The evaluate stage's orchestration: load Contract-2 prompt datasets, generate answers, score
each row and write Contract 4 (`grail-sim evaluate` in cli.py is a thin wrapper around `evaluate`).

Outputs in `out_dir`: `predictions.jsonl` (one row per prompt) and `metrics.json` (metrics.py's
figures with their baselines, provenance, throughput and a few sample responses).

Generations stream to `predictions.partial.jsonl` as they are produced, so memory stays flat and
a killed run resumes where it stopped (rows whose id is already there are skipped). The partial
file is only reused when `predictions.partial.json` shows the same model content, prompts and
generation settings; the finished `predictions.jsonl` appears atomically at the end.

The model itself is behind generators.py (HF `generate` or vLLM); scoring figures come from
metrics.py, so this module holds no model code and no statistics.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from grail_sim import answers, io
from grail_sim.errors import EvaluationError
from grail_sim.evaluation import metrics
from grail_sim.evaluation.generators import GenerationSettings, make_generator
from grail_sim.rows import finite, opinion_direction

log = logging.getLogger(__name__)


# The Contract-2 columns scoring reads; a dataset without one is refused up front, not mid-run.
REQUIRED_COLUMNS = (
    "id", "prompt", "gold_index", "n_options", "issue", "participant_study", "participant_id",
    "opinion_before", "opinion_after",
)


# Generated records stream here (flushed per batch) and its fingerprint sits beside it, so a
# killed run resumes only what was made from the same model, prompts and settings.
PARTIAL = "predictions.partial.jsonl"
PARTIAL_META = "predictions.partial.json"


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
        # Opinion rows are scored as a 0-1 index; a dataset built with `prompts.opinion_target:
        # direction` asks for words, which would all count as parse failures: refuse instead.
        target = str(dataset[0]["answer"])
        if answers.parse_opinion(f"<answer>{target}</answer>") is None:
            raise EvaluationError(
                f"prompt dataset {folder} asks for opinion answers like {target!r}; evaluation scores the 0-1 "
                "index only (set prompts.opinion_target: index)")
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
    """A Contract-4 prediction record; an unparsable answer is `parsed: null`, never a fallback."""
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
    else:
        parsed = answers.parse_opinion(raw_output)
        correct = None
        if before is not None and after is not None:
            correct = parsed is not None and (
                opinion_direction(before, parsed, tolerance) == opinion_direction(before, after, tolerance))
        record.update(parsed=parsed, gold=after, correct=correct)
    return record


# --------------------------------------------------------------------------- resume
def read_done_ids(partial: Path) -> set[tuple[str, str]]:
    """(task, id) pairs already in a partial predictions file; a corrupt line fails with file:line."""
    if not partial.exists():
        return set()
    return {(row.get("task"), row.get("id")) for row in io.read_jsonl(partial)}


def _open_partial(out_dir: Path, fingerprint: dict[str, Any]) -> Path:
    """The partial predictions file, emptied when it was made with other inputs or settings."""
    partial, meta_path = out_dir / PARTIAL, out_dir / PARTIAL_META
    previous = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if partial.exists() and previous != fingerprint:
        log.warning("discarding %s: it was generated with other model, prompts or settings", partial)
        partial.unlink()
    io.write_json(meta_path, fingerprint)
    return partial


def _adapter_base_sha256(model_dir: Path) -> str | None:
    """Content hash of the base model an adapter folder is merged into; None for a full model."""
    model_dir = Path(model_dir)
    if not (model_dir / "adapter_config.json").is_file():
        return None
    from grail_sim.model.loading import adapter_base, recorded_base_sha256

    base = Path(adapter_base(model_dir))
    if not base.exists():
        return None
    # adapter_base has just verified a recorded hash against this folder: no need to hash 0.5 GB again.
    return recorded_base_sha256(model_dir) or io.file_sha256(base)


def _git_revision() -> str | None:
    """The code's git commit for provenance; None outside a checkout (an installed wheel)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _versions() -> dict[str, str]:
    """Installed versions of the packages that shape generation and scoring (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("grail-sim", "torch", "transformers", "trl", "datasets", "vllm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def _progress(total: int, description: str):
    """A tqdm bar over prompts, or None (then progress is logged per batch)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm ships with transformers; keep working without it
        return None
    return tqdm(total=total, desc=description, unit="prompt", mininterval=5.0)


# --------------------------------------------------------------------------- orchestration
def evaluate(
    *,
    model_dir: Path,
    prompts_dir: Path,
    tasks: Sequence[str],
    split: str,
    out_dir: Path,
    settings: GenerationSettings,
    max_rows: int = 0,
    train_split_dir: Path | None = None,
    model_name: str | None = None,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    direction_tolerance: float = 1e-6,
    report_samples: int = 3,
) -> dict[str, Any]:
    """Generate (resuming), score and write `predictions.jsonl` and `metrics.json`; returns metrics."""
    if not model_dir.is_dir():
        raise EvaluationError(f"model folder {model_dir} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets_by_task, selected = _select_rows(prompts_dir, tasks, split, max_rows, settings.seed)
    provenance = _provenance(model_dir, prompts_dir, tasks, split)
    fingerprint = {
        "model_sha256": provenance["model_sha256"], "base_model_sha256": provenance["base_model_sha256"],
        "prompts_sha256": provenance["prompts_sha256"],
        "split": split, "tasks": list(tasks), "selected": {t: len(v) for t, v in selected.items()},
        "max_rows": max_rows, "direction_tolerance": direction_tolerance, **settings.fingerprint(),
    }
    partial = _open_partial(out_dir, fingerprint)
    done = read_done_ids(partial)
    pending = {task: [i for i in selected[task] if (task, str(datasets_by_task[task][i]["id"])) not in done]
               for task in tasks}
    generation = _generate_pending(model_dir, split, settings, tasks, datasets_by_task, pending, partial,
                                   resumed_rows=len(done), tolerance=direction_tolerance)
    records = _read_records(partial, tasks)
    result: dict[str, Any] = {
        "model": model_name or _infer_model_name(model_dir),
        "provenance": provenance,
        "generation": generation,
        "rows": {task: {"available": len(datasets_by_task[task]), "evaluated": len(records[task])} for task in tasks},
        "tasks": {},
        "samples": {},
    }
    options = {"samples": bootstrap_samples, "seed": settings.seed, "confidence": confidence}
    for task in tasks:
        train = _train_split(train_split_dir, prompts_dir, task)
        result["tasks"][task] = _task_metrics(task, records[task], train, direction_tolerance, options)
        result["samples"][task] = _samples(datasets_by_task[task], selected[task], records[task], report_samples)
    _write_outputs(out_dir, partial, tasks, records, result)
    return result


def _select_rows(prompts_dir: Path, tasks: Sequence[str], split: str, max_rows: int,
                 seed: int) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Each task's `split` dataset and the row indices of it to evaluate."""
    datasets_by_task = {task: load_task_split(prompts_dir, task, split) for task in tasks}
    selected = {task: select_rows(ds, max_rows, seed) for task, ds in datasets_by_task.items()}
    for task, ds in datasets_by_task.items():
        log.info("%s/%s [%s]: %d of %d rows selected", prompts_dir, task, split, len(selected[task]), len(ds))
    return datasets_by_task, selected


def _provenance(model_dir: Path, prompts_dir: Path, tasks: Sequence[str], split: str) -> dict[str, Any]:
    """What the predictions were made from: content hashes of model and prompts, code and library versions."""
    log.info("hashing %s and the prompt datasets for provenance", model_dir)
    return {
        "model_dir": str(model_dir),
        "model_sha256": io.file_sha256(model_dir),
        # An adapter's predictions also depend on the base it is merged into.
        "base_model_sha256": _adapter_base_sha256(model_dir),
        "prompts_dir": str(prompts_dir),
        "prompts_sha256": {task: io.file_sha256(prompts_dir / task) for task in tasks},
        "split": split,
        "git_revision": _git_revision(),
        "versions": _versions(),
    }


def _generate_pending(model_dir: Path, split: str, settings: GenerationSettings, tasks: Sequence[str],
                      datasets_by_task: dict[str, Any], pending: dict[str, list[int]], partial: Path, *,
                      resumed_rows: int, tolerance: float) -> dict[str, Any]:
    """Generate and append to `partial` the rows not yet there; returns the run's throughput record.

    The model is loaded only when something is left to generate, so a finished run re-scores for free.
    """
    n_pending = sum(len(v) for v in pending.values())
    log.info("%d predictions already on disk, %d to generate", resumed_rows, n_pending)
    generation = {"backend": None, "generated_rows": 0, "seconds": 0.0, "prompts_per_second": None,
                  "resumed_rows": resumed_rows, **settings.fingerprint(), "batch_size": settings.batch_size}
    if not n_pending:
        return generation
    generator = make_generator(model_dir, settings)
    generation["backend"] = generator.backend
    progress = _progress(n_pending, f"evaluate {model_dir.name} [{split}]")
    with open(partial, "a", encoding="utf-8") as handle:
        for task in tasks:
            seconds, count = _generate_task(generator, task, datasets_by_task[task], pending[task], handle,
                                            tolerance, progress)
            generation["seconds"] += seconds
            generation["generated_rows"] += count
    if progress is not None:
        progress.close()
    if generation["seconds"] > 0:
        generation["prompts_per_second"] = generation["generated_rows"] / generation["seconds"]
    log.info("generated %d rows in %.1f s", generation["generated_rows"], generation["seconds"])
    return generation


def _read_records(partial: Path, tasks: Sequence[str]) -> dict[str, list[dict]]:
    """The partial file's prediction records by task (rows of tasks not asked for are left out)."""
    records: dict[str, list[dict]] = {task: [] for task in tasks}
    for row in io.read_jsonl(partial):
        if row.get("task") in records:
            records[row["task"]].append(row)
    return records


def _train_split(train_split_dir: Path | None, prompts_dir: Path, task: str):
    """The train split the baselines are learned on: `train_split_dir`'s (required), else the prompts' (optional)."""
    base_dir = train_split_dir or prompts_dir
    train = load_task_split(base_dir, task, "train") if has_split(base_dir, task, "train") else None
    if train_split_dir is not None and train is None:
        raise EvaluationError(f"--train-split-dir {train_split_dir}/{task} has no `train` split")
    return train


def _task_metrics(task: str, records: list[dict], train, tolerance: float, options: dict[str, Any]) -> dict[str, Any]:
    """metrics.py's figures for one task, with baselines learned on `train` when there is one."""
    if task == "next_video":
        return metrics.next_video_metrics(
            records, train_gold_indices=None if train is None else train["gold_index"], **options)
    return metrics.opinion_metrics(
        records, train_after_values=None if train is None else train["opinion_after"], tolerance=tolerance, **options)


def _write_outputs(out_dir: Path, partial: Path, tasks: Sequence[str], records: dict[str, list[dict]],
                   result: dict[str, Any]) -> None:
    """Write predictions.jsonl (task by task) and metrics.json, then drop the partial file and its fingerprint."""

    def ordered() -> Iterator[dict]:
        for task in tasks:
            yield from records[task]

    count = io.write_jsonl(out_dir / "predictions.jsonl", ordered())
    io.write_json(out_dir / "metrics.json", result)
    partial.unlink()
    (out_dir / PARTIAL_META).unlink(missing_ok=True)
    log.info("wrote %d predictions and metrics to %s", count, out_dir)


def _generate_task(generator, task, dataset, indices, handle, tolerance, progress,
                   block_size: int = 512) -> tuple[float, int]:
    """Generate `indices` of `dataset` in length-sorted batches, appending records to `handle`.

    Rows are read a block at a time, so memory does not grow with the size of the split.
    """
    seconds, count = 0.0, 0
    for block_start in range(0, len(indices), block_size):
        rows = [dataset[i] for i in indices[block_start:block_start + block_size]]
        # Similar lengths share a batch, so little compute goes to padding; longest first, so an
        # out-of-memory batch shows at the start of a block rather than at its end.
        order = sorted(range(len(rows)), key=lambda k: -generator.prompt_length(rows[k]["prompt"]))
        for start in range(0, len(order), generator.chunk_size):
            batch = [rows[k] for k in order[start:start + generator.chunk_size]]
            began = time.perf_counter()
            outputs = generator.generate([row["prompt"] for row in batch])
            seconds += time.perf_counter() - began
            for row, text in zip(batch, outputs):
                handle.write(json.dumps(score_row(task, row, text, tolerance)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            count += len(batch)
            if progress is not None:
                progress.update(len(batch))
            else:
                log.info("%s: %d/%d rows", task, count, len(indices))
    return seconds, count


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
