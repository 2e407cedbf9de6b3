"""Trainer callbacks of a training run: the live metric log, and GRAIL's discriminator saved
inside each checkpoint so that it resumes with the policy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from grail_sim.training.resume import METRICS_LIVE_FILE


def get_callbacks(out_dir: Path, discriminator=None) -> list:
    """[JsonlMetrics] (+ DiscriminatorCheckpoint under GRAIL), as transformers TrainerCallbacks."""
    from transformers import TrainerCallback

    class JsonlMetrics(TrainerCallback):
        """Appends every `log` call to OUT/metrics.live.jsonl (flushed per line)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, "epoch": state.epoch}
            for key, value in logs.items():
                if isinstance(value, float) and not math.isfinite(value):
                    value = None
                row[key] = value
            with open(out_dir / METRICS_LIVE_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, default=str) + "\n")

    class DiscriminatorCheckpoint(TrainerCallback):
        """Saves the discriminator inside each checkpoint folder, so it resumes with the policy."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    discriminator.save(folder / "discriminator")

    callbacks = [JsonlMetrics()]
    if discriminator is not None:
        callbacks.append(DiscriminatorCheckpoint())
    return callbacks
