"""Colocated vLLM generation in training, for real, with vLLM's CPU build (`make test-vllm`).

TRL builds a vLLM engine inside the training process and, before each generation step, pushes the
policy's weights into it (a LoRA adapter is merged first). grpo and grail train 2 steps that way
through `grail-sim train`; and the weight sync itself is checked directly: after the policy's LoRA
weights change, vLLM's log-probability of a fixed completion differs from the policy's until the
sync and equals it after (within SYNC_TOLERANCE).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

from grail_sim import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "config" / "recipes"
COLOCATE = ["use_vllm=true", "vllm_mode=colocate", "report_to=none", "per_device_train_batch_size=2",
            "num_generations=2", "max_completion_length=8", "heldout_rows=0", "save_steps=100",
            "gail_batch_size=4"]


def colocate_overrides(trainer: str) -> list[str]:
    """COLOCATE as `--set` words; a `gail_*` key only for grail (another trainer's recipe rejects it)."""
    words = []
    for override in COLOCATE:
        if trainer != "grail" and override.startswith("gail_"):
            continue
        words += ["--set", override]
    return words


# TRL's own metric of the sync: the largest per-token difference between vLLM's sampling log-probs
# and the policy's, each step (bf16 in vLLM, see SUM_TOLERANCE).
SYNC_TOLERANCE = 0.1
# The summed log-probability of a forced 6-token completion (about -64 nats), vLLM against the
# policy. TRL builds the colocated engine with vLLM's default dtype, `auto`, which vLLM's CPU build
# turns into bfloat16 for this float32 model: bf16 rounding of ~-10 nats a token.
SUM_TOLERANCE = {"torch.float32": 1e-2, "torch.bfloat16": 1.0}


@pytest.fixture(scope="module")
def peaky_model(vllm_model, tmp_path_factory):
    """The tiny model with its output layer scaled up: a random model's next-token distribution is
    nearly uniform (about -10.8 nats for every token), which no change of its layers would move."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("peaky") / "model"
    shutil.copytree(vllm_model, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("trainer", ["grpo", "grail"])
def test_colocated_training_runs_two_steps(trainer, peaky_model, prompts, tmp_path):
    argv = ["train", "--config", str(RECIPES / f"{trainer}.yaml"), "--dataset", str(prompts), "--model",
            str(peaky_model), "--out", str(tmp_path / trainer), "--max_steps", "2", "--threads", "2",
            *colocate_overrides(trainer)]
    assert cli.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / trainer / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "sampling/sampling_logp_difference/mean" in row]
    assert [row["step"] for row in steps] == [1, 2]
    # TRL's own check of the sync: vLLM's sampling log-probs against the policy's, per token.
    largest = [row["sampling/sampling_logp_difference/max"] for row in steps]
    print(f"\n{trainer}: largest per-token log-prob difference, vLLM against the policy, per step: {largest}")
    assert all(value < SYNC_TOLERANCE for value in largest)


def test_weight_sync_moves_vllm_to_the_policy(peaky_model, prompts, tmp_path):
    import torch
    from vllm import SamplingParams

    from grail_sim.training import main as training_main
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.policy import get_model, get_peft_model
    from grail_sim.training.run import make_run, run_defaults

    # `grail-sim train`'s steps (grail_sim.training.main.train), up to the built trainer.
    recipe = parse_recipe(["--config", str(RECIPES / "grpo.yaml"), "--dataset", str(prompts), "--model",
                           str(peaky_model), "--out", str(tmp_path / "out"), "--max_steps", "1",
                           *colocate_overrides("grpo")], defaults=run_defaults)
    run = make_run(recipe, is_main=True)
    data, eval_data = training_main.get_datasets(run)
    tokenizer, model, token_map = get_model(run)
    model = get_peft_model(run, model, token_map)
    reward_funcs, discriminator, gail = training_main.get_reward_funcs(run)
    trainer = training_main.build_trainer(run, model, tokenizer, data, eval_data, reward_funcs, discriminator, gail,
                                          token_map)
    llm = trainer.vllm_generation.llm
    prompt = tokenizer("Which video next?", add_special_tokens=False)["input_ids"]
    completion = tokenizer("<think></think><answer>2</answer>", add_special_tokens=False)["input_ids"][:6]
    ids = prompt + completion

    def vllm_logprob() -> float:
        out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0),
                           use_tqdm=False)[0]
        return sum(out.prompt_logprobs[p][ids[p]].logprob for p in range(len(prompt), len(ids)))

    def policy_logprob() -> float:
        trainer.model.eval()  # no LoRA dropout
        with torch.no_grad():
            logits = trainer.model(input_ids=torch.tensor([ids])).logits[0].float()
        trainer.model.train()
        logprobs = torch.log_softmax(logits, dim=-1)
        return float(sum(logprobs[p - 1, ids[p]] for p in range(len(prompt), len(ids))))

    tolerance = SUM_TOLERANCE[str(llm.llm_engine.model_config.dtype)]
    trainer.vllm_generation.sync_weights()
    first, start = vllm_logprob(), policy_logprob()
    assert first == pytest.approx(start, abs=tolerance), llm.llm_engine.model_config.dtype
    with torch.no_grad():  # more than a training step's change: every LoRA B matrix, zero at the start
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 2.0)
    stale, moved = vllm_logprob(), policy_logprob()
    assert abs(stale - moved) > 3 * tolerance, (stale, moved)  # vLLM still holds the old weights
    trainer.vllm_generation.sync_weights()  # TRL merges the adapter and loads the weights into the engine
    synced = vllm_logprob()
    print(f"\nvLLM {llm.llm_engine.model_config.dtype}: synced {first:.3f} vs policy {start:.3f}; after the change "
          f"vLLM {stale:.3f} (stale) vs policy {moved:.3f}; synced again {synced:.3f}")
    assert synced == pytest.approx(moved, abs=tolerance)
