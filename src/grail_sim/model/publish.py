"""Push a trained model's `final/` folder to the Hugging Face Hub, opt in.

What goes up: the adapter (or full model) files, the tokenizer, `grail_sim.json` (provenance) and a
model card (`README.md`) built from the provenance and, when given, the model's report. Nothing else:
no checkpoints, no optimizer state, no logs, and never a token (huggingface_hub reads `HF_TOKEN` or
the login cache itself; this module never sees or prints it).

    grail-sim publish --model results/train/grail_gun/final --repo-id you/grail-gun \
        [--report reports/grail_gun.md] [--private] [--dry-run]

A recipe's `push_to_hub: true` with `hub_model_id` pushes `final/` the same way at the end of
training (there is no report yet then); TRL's own checkpoint pushes stay off.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from grail_sim.errors import ModelError
from grail_sim.model.loading import PROVENANCE_FILE

LOG = logging.getLogger(__name__)

CARD_FILE = "README.md"
# Files of a final/ folder that are published; anything else (a stray log, a .env) stays local.
PUBLISHED_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model", ".md")
NEVER_PUBLISHED = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth")


def upload_plan(final_dir: Path, report: Path | None = None) -> dict[str, Any]:
    """What a push of `final_dir` would upload: {"files": [relative paths], "model_card": text}."""
    final_dir = Path(final_dir)
    if not (final_dir / PROVENANCE_FILE).is_file():
        raise ModelError(f"{final_dir} is not a trained model's final/ folder (no {PROVENANCE_FILE})")
    files = sorted(path.relative_to(final_dir).as_posix() for path in final_dir.rglob("*")
                   if path.is_file() and path.suffix in PUBLISHED_SUFFIXES and path.name not in NEVER_PUBLISHED
                   and not any(part.startswith(".") for part in path.relative_to(final_dir).parts)
                   and path.name != CARD_FILE)
    return {"files": files + [CARD_FILE], "model_card": model_card(final_dir, report)}


def model_card(final_dir: Path, report: Path | None = None) -> str:
    """A Hub model card: YAML metadata from grail_sim.json, a summary, and the report's text when given."""
    record = json.loads((Path(final_dir) / PROVENANCE_FILE).read_text(encoding="utf-8"))
    trainer = record.get("trainer", "unknown")
    base = record.get("base_model_name") or Path(str(record.get("base_model", "unknown"))).name
    adapter = bool(record.get("adapter"))
    lines = ["---", f"library_name: {'peft' if adapter else 'transformers'}",
             "tags: [grail-sim, trl, " + ("grpo" if trainer != "sft" else "sft") + "]", "---", "",
             f"# grail-sim {trainer} policy", "",
             "A simulator of a YouTube viewer's next click, trained by grail-sim "
             f"(trainer `{trainer}`, {'a LoRA adapter on' if adapter else 'a full fine-tune of'} `{base}`).", "",
             "| item | value |", "|---|---|"]
    for key in ("trainer", "rewards", "reward_weights", "think_template", "train_rows", "global_step",
                "quantization_bits", "base_model_sha256"):
        if record.get(key) is not None:
            lines.append(f"| {key} | `{json.dumps(record[key])}` |")
    if report is not None:
        report = Path(report)
        if not report.is_file():
            raise ModelError(f"report {report} does not exist")
        lines += ["", "## Evaluation report", "", report.read_text(encoding="utf-8")]
    else:
        lines += ["", "No evaluation report was attached: read the figures in the project's reports/ before "
                      "using this model."]
    return "\n".join(lines) + "\n"


def push_final(final_dir: Path, repo_id: str, *, report: Path | None = None, private: bool = True,
               api: Any = None) -> dict[str, Any]:
    """Create `repo_id` (private by default) and upload the plan's files and card; returns the plan."""
    plan = upload_plan(final_dir, report)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_file(path_or_fileobj=plan["model_card"].encode("utf-8"), path_in_repo=CARD_FILE, repo_id=repo_id,
                    repo_type="model", commit_message="grail-sim model card")
    api.upload_folder(folder_path=str(final_dir), repo_id=repo_id, repo_type="model",
                      allow_patterns=[name for name in plan["files"] if name != CARD_FILE],
                      commit_message="grail-sim final model")
    LOG.info("pushed %d files of %s to %s", len(plan["files"]), final_dir, repo_id)
    return plan
