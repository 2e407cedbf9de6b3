"""Safe resume: only complete checkpoints count, and only when the run's content fingerprint
(recipe, base model and prompts) matches the one that made them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from grail_sim import io

METRICS_FILE = "metrics.jsonl"


# Appended to while training; copied to metrics.jsonl at the end. Snakemake deletes a job's declared
# outputs before a rerun, so the log that a resumed run continues must not be one of them.
METRICS_LIVE_FILE = "metrics.live.jsonl"

LOG = logging.getLogger(__name__)


def complete_checkpoints(out_dir: Path, need_discriminator: bool) -> list[Path]:
    """Checkpoint folders that finished writing (trainer_state.json last), oldest first."""
    found = []
    for folder in out_dir.glob("checkpoint-*"):
        suffix = folder.name.split("-", 1)[1]
        if not folder.is_dir() or not (suffix.isascii() and suffix.isdigit()) or not (folder / "trainer_state.json").is_file():
            continue
        if need_discriminator and not (folder / "discriminator" / "discriminator_state.json").is_file():
            continue
        found.append(folder)
    return sorted(found, key=lambda folder: int(folder.name.split("-", 1)[1]))


# Keys that may change between an interrupted run and its resumption (a longer run continues training).
RESUMABLE_KEYS = ("max_steps", "num_train_epochs", "save_steps", "save_total_limit", "logging_steps", "report_to",
                  "heldout_rows", "log_completions", "disable_tqdm")


# Keys that say where a run's services listen, where it reads and writes, not what it trains. A
# server-mode job picks fresh ports at every start (training/vllm_server.orchestrate): were they in
# the fingerprint, a restarted or requeued job would delete its checkpoints and start from zero. The
# dataset and the model enter the fingerprint by content instead of by path.
LOCATION_KEYS = ("vllm_server_host", "vllm_server_port", "vllm_group_port", "vllm_server_base_url",
                 "vllm_server_timeout", "vllm_server_log", "logging_dir", "output_dir", "dataset_name",
                 "model_name_or_path")


FINGERPRINT_FILE = "run_fingerprint.json"


def fingerprinted_settings(values: dict) -> dict:
    """The recipe's values that decide whether checkpoints can be resumed: all but RESUMABLE_KEYS
    and LOCATION_KEYS."""
    return {key: value for key, value in values.items() if key not in RESUMABLE_KEYS and key not in LOCATION_KEYS}


def run_fingerprint(values: dict, dataset_dir, model_dir) -> str:
    """Hash of everything that makes checkpoints reusable: recipe (fingerprinted_settings), data, model."""
    import hashlib

    settings = fingerprinted_settings(values)
    # Contents, not paths: a rebuilt base model or regenerated prompts at the same path must not be
    # resumed from checkpoints trained on the old ones (a few seconds of hashing for a 135M model).
    blob = json.dumps({"settings": settings, "dataset": io.file_sha256(dataset_dir) if dataset_dir else None,
                       "model": io.file_sha256(model_dir)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare_output(out: Path, fingerprint: str) -> None:
    """Drop checkpoints and the live log left by a run with other settings (they cannot be resumed)."""
    record = out / FINGERPRINT_FILE
    if record.is_file():
        previous = json.loads(record.read_text(encoding="utf-8")).get("fingerprint")
        if previous != fingerprint:
            stale = [p for p in out.glob("checkpoint-*")] + [out / "discriminator"]
            removed = [p.name for p in stale if p.exists()]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
            (out / METRICS_LIVE_FILE).unlink(missing_ok=True)
            LOG.warning("recipe, data or model changed since %s was written: starting over (removed %s)",
                        record, removed or "nothing")
    io.write_json(record, {"fingerprint": fingerprint})


def trim_metrics(path: Path, last_step: int) -> int:
    """Keep metric rows up to the resumed step (rows after it, and end-of-run summaries, are redone)."""
    if not path.is_file():
        return 0
    rows = list(io.read_jsonl(path))
    kept = [row for row in rows if int(row.get("step", 0)) <= last_step and "train_runtime" not in row]
    if len(kept) != len(rows):
        io.write_jsonl(path, kept)
    return len(rows) - len(kept)
