"""Evaluation throughput: prompts/s of batched generation vs one prompt at a time.

Runs `grail_sim.evaluate.HFGenerator` (the code path `grail-sim evaluate` and `evaluate-math` use)
for the tiny random model and, unless `--skip-embedded`, the converted SmolLM2-135M. Greedy decoding,
a fixed number of new tokens per prompt. The prompts are real next-video prompts from
../shared/real/next_video_study2.jsonl (~930 tokens), or with `--task math` the generated math problems
(`math_task.math_rows`, ~70 tokens), whose replies are short too: whether batching pays depends on
the prompt length, so each task is measured on its own.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/eval_benchmark.py --rows 16 --max-new-tokens 48
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/eval_benchmark.py --task math --rows 48 \
        --max-new-tokens 40 --batch-sizes 1,4,16,48 --skip-tiny --out benchmarks/eval_throughput_math.json

Writes benchmarks/eval_throughput.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "next_video_study2.jsonl"


def real_prompts(path: Path, rows: int) -> list[list[dict]]:
    from grail_sim import io

    prompts = []
    for record in io.read_jsonl(path):
        prompts.append(record["messages"])
        if len(prompts) >= rows:
            break
    return prompts


def math_prompts(rows: int) -> list[list[dict]]:
    """The first `rows` generated math prompts of the test split's seed (levels in equal shares)."""
    from grail_sim.prompts.math_task import math_rows

    return [row["prompt"] for row in math_rows(rows, seed=2)]


def measure(model_dir: Path, prompts: list[list[dict]], batch_sizes: list[int], max_new_tokens: int) -> list[dict]:
    import torch

    from grail_sim.evaluation.generators import GenerationSettings, HFGenerator

    results = []
    for batch_size in batch_sizes:
        settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, device="cpu")
        generator = HFGenerator(model_dir, settings)
        # Force exactly max_new_tokens per prompt so batch sizes are compared on equal work.
        generator.model.generation_config.eos_token_id = None
        generator.generate(prompts[:1])  # warm-up: first-call allocations are not throughput
        lengths = [generator.prompt_length(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        began = time.perf_counter()
        for start in range(0, len(order), batch_size):
            generator.generate([prompts[i] for i in order[start:start + batch_size]])
        seconds = time.perf_counter() - began
        results.append({
            "batch_size": batch_size, "prompts": len(prompts), "seconds": round(seconds, 2),
            "prompts_per_second": round(len(prompts) / seconds, 3),
            "mean_prompt_tokens": round(sum(lengths) / len(lengths), 1), "max_new_tokens": max_new_tokens,
            "torch_threads": torch.get_num_threads(),
        })
        print(json.dumps({"model": model_dir.name, **results[-1]}), flush=True)
        del generator
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--task", choices=("next_video", "math"), default="next_video",
                        help="next_video: real study-2 prompts; math: generated math problems")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "eval_throughput.json"))
    args = parser.parse_args()

    from grail_sim import io
    from grail_sim.model.loading import build_tiny_model
    from grail_sim.model.embedded import embedded_model_dir, embedded_tokenizer_dir

    prompts = math_prompts(args.rows) if args.task == "math" else real_prompts(REAL, args.rows)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    # The load average shows how much other work shared the cores during the measurement.
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
              "data": "generated math problems (math_rows, seed 2)" if args.task == "math"
              else str(REAL.relative_to(ROOT.parent)), "runs": {}}
    if not args.skip_tiny:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = build_tiny_model(Path(tmp) / "tiny", embedded_tokenizer_dir())
            report["runs"]["tiny (hidden 64, 2 layers, SmolLM2 tokenizer)"] = measure(
                Path(tiny), prompts, batch_sizes, args.max_new_tokens)
    if not args.skip_embedded:
        report["runs"]["SmolLM2-135M-Instruct (embedded, float32)"] = measure(
            Path(embedded_model_dir()), prompts, batch_sizes, args.max_new_tokens)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    io.write_json(args.out, report)

    print("\n| model | batch size | prompts | prompt tokens (mean) | new tokens | prompts/s |")
    print("|---|---|---|---|---|---|")
    for name, runs in report["runs"].items():
        for run in runs:
            print(f"| {name} | {run['batch_size']} | {run['prompts']} | {run['mean_prompt_tokens']} | "
                  f"{run['max_new_tokens']} | {run['prompts_per_second']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
