"""What an evaluation was made from: content hashes of the model (and an adapter's base) and of
the prompt datasets, the code's git revision and the versions of the libraries that shape the
numbers. Recorded in metrics.json, and the model and prompt hashes fingerprint resumable files.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io
from grail_sim.model.loading import trained_prompt_overrides

log = logging.getLogger(__name__)


def adapter_base_sha256(model_dir: Path) -> str | None:
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


def git_revision() -> str | None:
    """The code's git commit; None outside a checkout (an installed wheel)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape generation and scoring (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("grail-sim", "torch", "transformers", "trl", "datasets", "scikit-learn", "vllm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def provenance(model_dir: Path, prompts_dir: Path, tasks: Sequence[str], split: str) -> dict[str, Any]:
    """The provenance record of metrics.json."""
    log.info("hashing %s and the prompt datasets for provenance", model_dir)
    return {
        "model_dir": str(model_dir),
        "model_sha256": io.file_sha256(model_dir),
        # An adapter's predictions also depend on the base it is merged into.
        "base_model_sha256": adapter_base_sha256(model_dir),
        "prompts_dir": str(prompts_dir),
        "prompts_sha256": {task: io.file_sha256(prompts_dir / task) for task in tasks},
        "split": split,
        # The chat template and system prompt the model was trained with, when its recipe set them.
        "prompt_overrides": trained_prompt_overrides(model_dir),
        "git_revision": git_revision(),
        "versions": versions(),
    }
