"""Evaluation on CPU: the vLLM backend (vLLM's CPU build) against the HF backend, side by side in one run.

Runs `grail_sim.evaluation.evaluate.evaluate`, the code path of `grail-sim evaluate`, on the real
study-2 next-video rows of ../shared/real (about 930 tokens each, imported as the external dataset
is), scoring `--score-rows` rows and generating `--generate-rows`, once per backend and size. The
time is the whole call: model loading, for vLLM the import and the engine's start-up, scoring,
generation. float32 on both backends (vLLM's `auto` would cast to bf16). Needs .venv-vllm:

    HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/vllm_backend.py --sizes 8:2,48:8 \
        --out benchmarks/vllm_backend.json

Prints a Markdown table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "next_video_study2.jsonl"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--sizes", default="8:2,48:8", help="score_rows:generate_rows pairs")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--out", default=None)
    return parser.parse_args()


def measure(model: str, backend: str, score_rows: int, generate_rows: int, max_new_tokens: int) -> dict:
    """One evaluation in this process (a fresh one per measurement: vLLM's import counts)."""
    started = time.perf_counter()
    from grail_sim.evaluation.evaluate import evaluate
    from grail_sim.evaluation.generators import GenerationSettings
    from grail_sim.prompts import importer, settings as prompt_settings

    with tempfile.TemporaryDirectory() as scratch:
        prompts = Path(scratch) / "external"
        importer.write_import(importer.import_jsonl(REAL, prompt_settings.load_settings()), prompts / "next_video")
        imported = time.perf_counter()
        result = evaluate(model_dir=Path(model), prompts_dir=prompts, tasks=["next_video"], split="test",
                          out_dir=Path(scratch) / "eval", mode="both", score_rows=score_rows,
                          generate_rows=generate_rows, bootstrap_samples=0,
                          settings=GenerationSettings(max_new_tokens=max_new_tokens, batch_size=1, backend=backend,
                                                      device="cpu", dtype="float32"))
        scores = [json.loads(line) for line in (Path(scratch) / "eval" / "scores.jsonl").read_text().splitlines()]
    return {"backend": result["scoring"]["backend"], "score_rows": score_rows, "generate_rows": generate_rows,
            "seconds": time.perf_counter() - imported, "import_seconds": imported - started,
            "scoring_seconds": result["scoring"].get("seconds"), "generation_seconds": result["generation"].get("seconds"),
            "log_likelihoods": {row["id"]: row["log_likelihoods"] for row in scores}}


def main() -> None:
    args = parse_args()
    if args.one:
        backend, score_rows, generate_rows = args.one.split(":")
        print(json.dumps(measure(args.model, backend, int(score_rows), int(generate_rows), args.max_new_tokens)))
        return
    if args.model is None:
        from grail_sim.model.embedded import embedded_model_dir

        args.model = str(embedded_model_dir())
    rows = []
    for size in args.sizes.split(","):
        score_rows, generate_rows = (int(x) for x in size.split(":"))
        for backend in ("hf", "vllm"):
            wall = time.perf_counter()
            output = subprocess.run([sys.executable, __file__, "--model", args.model, "--one",
                                     f"{backend}:{score_rows}:{generate_rows}", "--max-new-tokens",
                                     str(args.max_new_tokens)], capture_output=True, text=True, check=True)
            figures = json.loads(output.stdout.strip().splitlines()[-1])
            figures["process_seconds"] = time.perf_counter() - wall
            rows.append(figures)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {args.model}\n")
    print("| score rows | generated rows | backend | whole process (s) | evaluate() (s) | scoring (s) | generation (s) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['score_rows']} | {row['generate_rows']} | {row['backend']} | {row['process_seconds']:.1f} | "
              f"{row['seconds']:.1f} | {row['scoring_seconds'] or 0:.1f} | {row['generation_seconds'] or 0:.1f} |")
    for hf, vllm in zip(rows[::2], rows[1::2]):
        # By row id: each backend writes its records in its own order (longest prompts first, by tokens
        # for HF and by characters for vLLM).
        assert hf["log_likelihoods"].keys() == vllm["log_likelihoods"].keys()
        gap = max((abs(a - b) for row, values in hf["log_likelihoods"].items()
                   for a, b in zip(values, vllm["log_likelihoods"][row])), default=0.0)
        hf["largest_log_likelihood_difference"] = vllm["largest_log_likelihood_difference"] = gap
        print(f"\n{hf['score_rows']} rows: vLLM / HF time {vllm['process_seconds'] / hf['process_seconds']:.2f}; "
              f"largest log-likelihood difference {gap:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                              "cores": os.cpu_count(), "model": args.model,
                                              "rows": [{k: v for k, v in row.items() if k != "log_likelihoods"}
                                                       for row in rows]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
