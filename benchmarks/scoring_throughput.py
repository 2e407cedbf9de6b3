"""Scoring vs generation on the same rows and model, side by side in one run (#11).

    python benchmarks/scoring_throughput.py --model results/models/base \
        --prompts results/prompts/gun_control --rows 16 --out benchmarks/scoring_throughput.md

Measures, on one machine in one process:
- the dense matmul rate of this CPU (or GPU) in fp32 and bf16 (2048 x 2048, the threads torch uses),
  the ceiling the prefill rate is read against;
- likelihood scoring (evaluation/scorers.py, HF backend) at each batch size in fp32, and in bf16
  where this CPU has native bf16: rows/s, prompt tokens/s
  and the achieved prefill rate, 2 x (non-embedding parameters) x tokens per second, as a share of
  the same dtype's matmul rate (attention's own FLOPs are left out, so the share is a lower bound);
- greedy generation of the evaluate defaults (max_new_tokens, batch size) on the same rows;
- agreement of bf16 with fp32 scoring: the largest absolute difference in option probability, the
  mean absolute difference in per-row NLL of the gold option, and the share of rows whose argmax agrees.
Prints a Markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import time
from pathlib import Path


def cpu_description() -> str:
    """The CPU's model name and its vector extensions that matter to fp32 / bf16 speed."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(wanted) or 'no AVX2'})"


def matmul_rate(dtype, device: str, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matmul in `dtype` (best of `repeats` after a warm-up)."""
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return 2 * size ** 3 / best / 1e9


def score_rows(model_dir: Path, rows: list[dict], dtype: str, device: str, batch_size: int):
    from grail_sim.evaluation import scorers

    scorer = scorers.HFScorer(model_dir, batch_size=batch_size, device=device, dtype=dtype)
    embedding = scorer.model.get_input_embeddings().weight.numel()
    non_embedding = sum(p.numel() for p in scorer.model.parameters()) - embedding
    batch = [(row["prompt"], scorers.candidate_answers("next_video", int(row["n_options"]))) for row in rows]
    scorer.score(batch[:1])  # warm-up
    tokens = sum(scorer.prompt_length(row["prompt"]) for row in rows)
    order = sorted(range(len(batch)), key=lambda i: -scorer.prompt_length(batch[i][0]))
    results = [None] * len(batch)
    began = time.perf_counter()
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, scored in zip(chunk, scorer.score([batch[i] for i in chunk])):
            results[i] = scored
    seconds = time.perf_counter() - began
    return results, seconds, tokens, non_embedding


def generate_rows(model_dir: Path, rows: list[dict], device: str) -> float:
    from grail_sim.evaluation.generators import GenerationSettings, HFGenerator

    settings = GenerationSettings(device=device)
    generator = HFGenerator(model_dir, settings)
    generator.generate([rows[0]["prompt"]])  # warm-up
    began = time.perf_counter()
    for start in range(0, len(rows), settings.batch_size):
        generator.generate([row["prompt"] for row in rows[start:start + settings.batch_size]])
    return time.perf_counter() - began


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True, help="Contract-2 issue folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,8", help="scoring batch sizes to compare (fp32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/scoring_throughput.md")
    args = parser.parse_args()
    from grail_sim.evaluation.evaluate import load_task_split

    dataset = load_task_split(Path(args.prompts), "next_video", args.split)
    rows = [dataset[i] for i in range(min(args.rows, len(dataset)))]
    model = Path(args.model)
    peak = {"float32": matmul_rate(torch.float32, args.device)}
    # A CPU without native bf16 (no AVX-512 BF16 / AMX) emulates it some 100x slower: probe on a
    # small matmul first, and only score in bf16 where it is native.
    probe = {dtype: matmul_rate(dtype, args.device, size=512, repeats=3) for dtype in (torch.float32, torch.bfloat16)}
    bf16_native = probe[torch.bfloat16] >= probe[torch.float32]
    peak["bfloat16"] = matmul_rate(torch.bfloat16, args.device) if bf16_native else probe[torch.bfloat16]
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    runs = [("float32", size) for size in sizes] + ([("bfloat16", sizes[0])] if bf16_native else [])
    scored = {run: score_rows(model, rows, run[0], args.device, run[1]) for run in runs}
    generation_seconds = generate_rows(model, rows, args.device)

    lines = [f"# Scoring vs generation, {len(rows)} `{args.split}` rows of `{args.prompts}`", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_description()}, "
             f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"device {args.device}, model `{model}`; generation with the evaluate defaults. Produced by "
             "`benchmarks/scoring_throughput.py`.", "",
             "| run | seconds | rows/s | vs generation | prompt tokens/s | prefill GFLOP/s | share of matmul rate |",
             "|---|---|---|---|---|---|---|"]
    generation_rate = len(rows) / generation_seconds
    lines.append(f"| generation (greedy, fp32) | {generation_seconds:.1f} | {generation_rate:.2f} | 1.0× | | | |")
    for (dtype, size), (_, seconds, tokens, non_embedding) in scored.items():
        gflops = 2 * non_embedding * tokens / seconds / 1e9
        lines.append(f"| scoring {dtype}, batch {size} | {seconds:.1f} | {len(rows) / seconds:.2f} | "
                     f"{len(rows) / seconds / generation_rate:.1f}× | {tokens / seconds:.0f} | {gflops:.0f} | "
                     f"{gflops / peak[dtype]:.0%} of {peak[dtype]:.0f} |")
    lines += ["", f"Matmul rate here: fp32 {peak['float32']:.0f} GFLOP/s, bf16 {peak['bfloat16']:.0f} GFLOP/s"
              f"{'' if bf16_native else ' (512 x 512 probe: not native on this CPU, so bf16 scoring was skipped)'}."]
    if bf16_native:
        lines += ["", agreement(scored[("float32", sizes[0])][0], scored[("bfloat16", sizes[0])][0], rows)]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")


def agreement(full, half, rows) -> str:
    """How far bf16 scoring is from fp32 on the same rows."""
    largest = max(abs(a - b) for f, h in zip(full, half) for a, b in zip(f.probabilities, h.probabilities))
    nll_gap = sum(abs(math.log(f.probabilities[int(r["gold_index"]) - 1]) - math.log(h.probabilities[int(r["gold_index"]) - 1]))
                  for f, h, r in zip(full, half, rows)) / len(rows)
    same = sum(max(range(len(f.probabilities)), key=f.probabilities.__getitem__)
               == max(range(len(h.probabilities)), key=h.probabilities.__getitem__) for f, h in zip(full, half))
    return (f"bf16 vs fp32 scoring: largest option-probability difference {largest:.4f}; mean |ΔNLL| of the "
            f"gold option {nll_gap:.4f} nats; argmax agrees on {same} of {len(rows)} rows.")


if __name__ == "__main__":
    main()
