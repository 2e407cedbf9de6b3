"""The GPU smoke check (#23): what one GPU can show of the cluster path, in one run under 8 minutes.

    bash benchmarks/gpu_smoke.sh prepare      # here, once: wheels the GPU image lacks, the tokenizer
    bash benchmarks/gpu_smoke.sh              # there (device run, carry .whl .gpu_smoke): this script

Through the project's own CLI and training code, on a random model of SmolLM2-135M's shape (the
embedded GGUF is too large to carry; a random model exercises every GPU code path and gives the
same FLOPs per token):

1. a demo capsule, clean and prompts (CPU);
2. sft with the GPU recipe (config/recipes/gpu/sft.yaml: bf16, LoRA): seconds a step, tokens/s, MFU
   against the card's dense bf16 peak (6 x parameters x tokens/s / peak);
3. grpo and grail from sft's adapter with the GPU recipes, HF generation (vLLM's CUDA wheels are
   hundreds of MB: they cannot be carried), GRAIL's discriminator on CUDA;
4. grail interrupted (SIGKILL after its checkpoint-2) and rerun: its log must say it resumed;
5. evaluation of the grail model (scoring and generation, bf16 HF backend).

Writes a JSON summary (`--out`) and prints a table; exits 1 if any check failed. Without CUDA it
says so and stops, unless --allow-cpu (the mechanics with the CPU recipes, no GPU figures).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_check import device_facts, parameter_count, throughput  # noqa: E402

# SmolLM2-135M's width and depth (build_tiny_model derives heads from the width).
SHAPE = {"hidden_size": 576, "num_layers": 30}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(ROOT / ".gpu_smoke" / "tokenizer"))
    parser.add_argument("--work", default="/tmp/gpu_smoke")
    parser.add_argument("--out", default=None, help="JSON summary")
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--sft-steps", type=int, default=10)
    parser.add_argument("--rl-steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=32, help="validation rows scored and generated")
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (the CPU mechanics check)")
    return parser.parse_args()


def cli(*args: str, log: Path) -> subprocess.Popen:
    """`python -m grail_sim.cli ARGS` with its output in `log`, in a session of its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "grail_sim.cli", *args], stdout=handle, stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT, start_new_session=True)


def run_cli(*args: str, log: Path, timeout: float = 600) -> None:
    process = cli(*args, log=log)
    if process.wait(timeout=timeout) != 0:
        raise RuntimeError(f"grail-sim {' '.join(args[:2])} failed; last lines of {log}:\n"
                           + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))


def train_args(recipe: Path, dataset: Path, model: Path, out: Path, steps: int, *overrides: str) -> list[str]:
    argv = ["train", "--config", str(recipe), "--dataset", str(dataset), "--model", str(model), "--out", str(out),
            "--max_steps", str(steps)]
    for override in ("report_to=none", *overrides):
        argv += ["--set", override]
    return argv


def step_figures(out: Path) -> dict:
    summary = json.loads((out / "final" / "grail_sim.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tokens = next((row["num_tokens"] for row in reversed(rows) if row.get("num_tokens") is not None), None)
    steps = summary["global_step"] - (int(Path(summary["resumed_from"]).name.split("-")[1])
                                      if summary.get("resumed_from") else 0)
    return {"steps": summary["global_step"], "seconds_per_step": summary["seconds_per_step"],
            "tokens_per_second": tokens / summary["train_seconds"] if tokens and not summary.get("resumed_from")
            else None, "resumed_from": summary.get("resumed_from"), "steps_this_run": steps}


def main() -> int:
    args = parse_args()
    facts = device_facts()
    if not facts["cuda"] and not args.allow_cpu:
        print("no CUDA device here: nothing measured (pass --allow-cpu to check the mechanics on CPU)")
        return 0
    gpu = facts["cuda"]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recipes = ROOT / "config" / "recipes" / ("gpu" if gpu else "")
    started = time.perf_counter()
    checks: dict[str, dict] = {}

    def check(name: str, body) -> None:
        began = time.perf_counter()
        try:
            checks[name] = {"ok": True, **(body() or {})}
        except Exception as err:  # noqa: BLE001 - every check is reported, the run goes on
            checks[name] = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
        checks[name]["seconds"] = round(time.perf_counter() - began, 1)
        print(f"{name}: {'ok' if checks[name]['ok'] else 'FAILED ' + checks[name]['error']} "
              f"({checks[name]['seconds']} s)", flush=True)

    model, data = work / "model", work / "prompts" / "gun_control"
    sft, grpo, grail = work / "sft", work / "grpo", work / "grail"
    # The GPU recipes' vLLM server mode needs vLLM and 2 GPUs: HF generation on one GPU here.
    rl = ["use_vllm=false", "save_steps=2", "logging_steps=1", "per_device_train_batch_size=8",
          "gradient_accumulation_steps=1", "num_generations=4", "max_completion_length=48"]

    def build_model():
        from grail_sim.model.loading import build_tiny_model

        shape = {"hidden_size": 64, "num_layers": 2} if args.tiny else SHAPE
        build_tiny_model(model, args.tokenizer, **shape)
        return {"parameters": parameter_count(str(model)), **shape}

    def build_data():
        config = work / "config.yaml"
        config.write_text(json.dumps({"data": {"demo": {"participants": args.participants, "seed": 3}}}))
        run_cli("demo-capsule", "--out", str(work / "capsule"), "--config", str(config), log=work / "demo.log")
        config.write_text(json.dumps({"data": {"source": "demo", "capsule_dir": str(work / "capsule")}}))
        run_cli("clean", "--capsule", str(work / "capsule"), "--config", str(config),
                "--out", str(work / "interactions.parquet"), "--stats", str(work / "stats.json"), log=work / "clean.log")
        run_cli("prompts", "build", "--interactions", str(work / "interactions.parquet"), "--issue", "gun_control",
                "--tokenizer", str(model), "--out-dir", str(data), log=work / "prompts.log")
        return {"next_video_rows": json.loads((data / "stats.json").read_text())["next_video"]["rows_kept"]}

    def train_sft():
        run_cli(*train_args(recipes / "sft.yaml", data / "next_video", model, sft, args.sft_steps, "save_steps=1000"),
                log=work / "sft.log")
        figures = step_figures(sft)
        peak = facts.get("peak_bf16")
        parameters = checks["model"].get("parameters")
        if peak and figures["tokens_per_second"] and parameters:
            figures["mfu"] = 6 * parameters * figures["tokens_per_second"] / peak
        return figures

    def train_grpo():
        run_cli(*train_args(recipes / "grpo.yaml", data / "next_video", sft / "final", grpo, args.rl_steps, *rl),
                log=work / "grpo.log")
        return step_figures(grpo)

    def train_grail_interrupted_and_resumed():
        argv = train_args(recipes / "grail.yaml", data / "next_video", sft / "final", grail, args.rl_steps, *rl,
                          *(["gail_device=cuda"] if gpu else []))
        first = cli(*argv, log=work / "grail.first.log")
        deadline = time.monotonic() + 600
        while not (grail / "checkpoint-2" / "discriminator" / "discriminator_state.json").is_file():
            if first.poll() is not None:
                raise RuntimeError(f"grail ended (code {first.returncode}) before checkpoint-2; see "
                                   f"{work / 'grail.first.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("no checkpoint-2 within 600 s")
            time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)  # an interruption: a node failure, a time limit
        first.wait()
        run_cli(*argv, log=work / "grail.log")
        log = (work / "grail.log").read_text(errors="replace")
        if "resuming from" not in log:
            raise RuntimeError("the rerun did not resume from a checkpoint")
        figures = step_figures(grail)
        provenance = json.loads((grail / "final" / "grail_sim.json").read_text())
        figures["gail_seconds"] = provenance.get("gail_seconds")
        figures["discriminator_device"] = "cuda" if gpu else "cpu"
        return figures

    def evaluate():
        return throughput(str(grail / "final"), str(data / "next_video"), args.rows, gpu, work)

    check("model", build_model)
    check("data", build_data)
    check("sft", train_sft)
    check("grpo", train_grpo)
    check("grail_resume", train_grail_interrupted_and_resumed)
    check("evaluate", evaluate)
    summary = {"machine": facts, "checks": checks, "wall_seconds": round(time.perf_counter() - started, 1),
               "all_ok": all(item["ok"] for item in checks.values())}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\n| {facts['device']} | torch {facts['torch']} | {summary['wall_seconds']} s |\n|---|---|---|")
    for name, item in checks.items():
        shown = {k: v for k, v in item.items() if k not in ("trace", "ok")}
        print(f"| {name} | {'ok' if item['ok'] else 'FAILED'} | {shown} |")
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
