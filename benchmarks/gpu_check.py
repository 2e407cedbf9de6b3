"""The GPU check (#13): run whenever a CUDA machine is at hand, and record its table in benchmarks/.

Through the project's own code paths (grail_sim.training.main.train, grail_sim.evaluation.evaluate):

1. SFT steps with the GPU recipe (config/recipes/gpu/sft.yaml: bf16, LoRA): seconds a step, tokens/s,
   and MFU against the card's dense bf16 peak (6 x parameters x tokens/s / peak);
2. GRPO steps with the GPU recipe and HF generate (use_vllm off: vLLM needs its own GPU or colocate
   memory, and the check must run where vLLM is not installed): seconds a step;
3. likelihood scoring and greedy generation throughput on validation rows (backend auto: vLLM where
   it is installed, else batched HF, said in the table).

    python benchmarks/gpu_check.py --model results/models/base \
        --dataset results/prompts/gun_control/next_video --out benchmarks/gpu_check.json

Without CUDA it says so and stops, unless --allow-cpu (the mechanics only: float32, the CPU recipes'
dtype, no MFU), which the test suite does not run; the CPU figures are not a GPU measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by a substring of the device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="results/models/base")
    parser.add_argument("--dataset", default="results/prompts/gun_control/next_video")
    parser.add_argument("--sft-steps", type=int, default=10)
    parser.add_argument("--grpo-steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64, help="validation rows scored and generated")
    parser.add_argument("--allow-cpu", action="store_true", help="run the mechanics on CPU (no GPU figures)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    return parser.parse_args()


def device_facts() -> dict:
    import torch

    facts = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.cuda.is_available()}
    if facts["cuda"]:
        name = torch.cuda.get_device_name(0)
        facts.update(device=name, devices=torch.cuda.device_count(),
                     memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                     peak_bf16=next((peak for key, peak in PEAK_BF16.items() if key in name), None))
    else:
        facts.update(device=f"CPU ({platform.processor() or platform.machine()})", devices=0, peak_bf16=None)
    try:
        import vllm  # noqa: F401

        facts["vllm"] = vllm.__version__
    except ImportError:
        facts["vllm"] = None
    return facts


def parameter_count(model_dir: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def train_steps(recipe: str, model: str, dataset: str, steps: int, overrides: list[str], work: Path) -> dict:
    """`steps` steps of `recipe` as `grail-sim train --config RECIPE ... --max_steps STEPS KEY=VALUE...` runs them."""
    from grail_sim import io
    from grail_sim.training.main import train
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    out = work / Path(recipe).stem
    argv = ["--config", recipe, "--dataset", dataset, "--model", model, "--out", str(out), "--max_steps", str(steps),
            *overrides]
    summary = train(parse_recipe(argv, defaults=run_defaults))
    rows = [row for row in io.read_jsonl(out / "metrics.jsonl") if row.get("num_tokens") is not None]
    tokens = float(rows[-1]["num_tokens"]) if rows else None
    return {"steps": summary["global_step"], "seconds_per_step": summary["seconds_per_step"],
            "tokens": tokens, "tokens_per_second": tokens / summary["train_seconds"] if tokens else None}


def throughput(model: str, dataset: str, rows: int, cuda: bool, work: Path) -> dict:
    from grail_sim.evaluation.evaluate import evaluate
    from grail_sim.evaluation.generators import GenerationSettings

    settings = GenerationSettings(max_new_tokens=64, batch_size=32 if cuda else 4, backend="auto",
                                  device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32")
    result = evaluate(model_dir=Path(model), prompts_dir=Path(dataset).parent, tasks=["next_video"],
                      split="validation", out_dir=work / "eval", settings=settings, mode="both",
                      score_rows=rows, generate_rows=rows, score_batch_size=16 if cuda else 1)
    return {"scoring_backend": result["scoring"].get("backend"),
            "scored_rows_per_second": result["scoring"].get("rows_per_second"),
            "generation_backend": result["generation"].get("backend"),
            "generated_prompts_per_second": result["generation"].get("prompts_per_second")}


def main() -> None:
    args = parse_args()
    facts = device_facts()
    if not facts["cuda"] and not args.allow_cpu:
        print("no CUDA device here: nothing measured (pass --allow-cpu to check the mechanics on CPU)")
        return
    gpu = facts["cuda"]
    recipes = ROOT / "config" / "recipes" / ("gpu" if gpu else "")
    common = ["report_to=none", "save_steps=1000"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        sft = train_steps(str(recipes / "sft.yaml"), args.model, args.dataset, args.sft_steps, common, work)
        grpo = train_steps(str(recipes / "grpo.yaml"), args.model, args.dataset, args.grpo_steps,
                           common + ["use_vllm=false"], work)
        rates = throughput(args.model, args.dataset, args.rows, gpu, work)
    parameters = parameter_count(args.model)
    mfu = None
    if facts["peak_bf16"] and sft["tokens_per_second"]:
        mfu = 6 * parameters * sft["tokens_per_second"] / facts["peak_bf16"]
    figures = {"machine": facts, "parameters": parameters, "sft": sft, "grpo_hf_generate": grpo, **rates,
               "sft_mfu": mfu, "wall_seconds": time.perf_counter() - started}
    print(f"| device | {facts['device']} ({facts['devices']} visible); torch {facts['torch']}; "
          f"vLLM {facts['vllm'] or 'not installed: HF backends'} |")
    print("|---|---|")
    print(f"| sft, {sft['steps']} steps | {sft['seconds_per_step']:.2f} s a step; "
          f"{sft['tokens_per_second'] or 0:,.0f} tokens/s; MFU {'n/a' if mfu is None else f'{mfu:.1%}'} |")
    print(f"| grpo (HF generate), {grpo['steps']} steps | {grpo['seconds_per_step']:.2f} s a step |")
    print(f"| scoring ({rates['scoring_backend']}) | {rates['scored_rows_per_second'] or 0:.2f} rows/s |")
    print(f"| generation ({rates['generation_backend']}) | {rates['generated_prompts_per_second'] or 0:.2f} "
          "prompts/s |")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
