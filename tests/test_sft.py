"""The sft stage (issue #12): its recipe, completion-only loss, Contract 3 outputs and resume, and an
RL run that starts from its adapter and still loads through `load_policy`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train import RECIPES, make_prompt_dataset

from grail_sim import errors

# A tiny-model sft run: 2 rows a step, a checkpoint every step, no wandb.
TINY_SFT = ["per_device_train_batch_size=2", "save_steps=1", "report_to=none"]
# A tiny-model GRPO step (as tests/test_train.py's TINY, without the gail keys).
TINY_GRPO = ["per_device_train_batch_size=4", "num_generations=2", "max_completion_length=8", "save_steps=1",
             "report_to=none"]


# One intra-op torch thread for every test here (conftest.one_torch_thread says why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prompt_dataset(tmp_path_factory):
    return make_prompt_dataset(tmp_path_factory.mktemp("prompts") / "next_video", rows=8)


def _train(recipe: str, dataset: Path, model: Path, out: Path, overrides: list[str], max_steps: int) -> int:
    from grail_sim import cli

    # --recipe: the workflow's older spelling of TRL's --config, still accepted
    argv = ["train", "--recipe", str(RECIPES / f"{recipe}.yaml"), "--dataset", str(dataset), "--model", str(model),
            "--out", str(out), "--max-steps", str(max_steps), "--threads", "1"]
    for override in overrides:
        argv += ["--set", override]
    return cli.main(argv)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the recipe -----------------------------------------------------------------------------------


def _parse(recipe: Path, flags: list[str] = (), *, dataset="D", model="M", out="OUT", defaults=None):
    from grail_sim.training.parser import parse_recipe

    return parse_recipe(["--config", str(recipe), "--dataset", str(dataset), "--model", str(model), "--out", str(out),
                         *flags], defaults=defaults)


def test_sft_recipe_resolves_to_a_valid_sft_config(tmp_path):
    from trl import SFTConfig

    recipe = _parse(RECIPES / "sft.yaml", ["use_cpu=true", "bf16=false"], out=tmp_path)
    config = recipe.config
    assert isinstance(config, SFTConfig) and recipe.trainer == "sft" and config.output_dir == str(tmp_path)
    assert config.completion_only_loss is True and not config.packing
    # the laptop recipe: an empty think (the digit the evaluation scores), a small adapter on the top layers
    assert recipe.model.use_peft and config.think_template == "" and recipe.model.lora_top_layers == 2


def test_sft_recipe_refuses_unknown_keys_naming_key_and_file(tmp_path):
    recipe = tmp_path / "my-sft.yaml"
    recipe.write_text("trainer: sft\nnum_generations: 4\n")  # a GRPOConfig field, not an SFTConfig one
    with pytest.raises(errors.RecipeError, match=r"my-sft\.yaml.*num_generations.*SFTConfig"):
        _parse(recipe)
    recipe.write_text("trainer: sft\nwarmup_sft: {enabled: true}\n")  # no recipe has an in-train warm-up
    with pytest.raises(errors.RecipeError, match=r"my-sft\.yaml.*warmup_sft"):
        _parse(recipe)
    recipe.write_text("trainer: sft\nthink_template: 'Pick {gold}'\n")
    with pytest.raises(errors.RecipeError, match=r"my-sft\.yaml.*think_template.*gold"):
        _parse(recipe)
    with pytest.raises(errors.RecipeError, match=r"sft\.yaml.*lora_r"):
        _parse(RECIPES / "sft.yaml", ["lora_r=0"])


def test_train_help_lists_the_sft_keys(capsys):
    from grail_sim import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "SftRecipe (TRL's SFTConfig" in text and "\n  think_template" in text


# --- the loss mask --------------------------------------------------------------------------------


def test_sft_loss_is_on_the_completion_only(tiny_model_dir, prompt_dataset, tmp_path):
    """The labels TRL builds mask every prompt token: only the think/answer turn and its end of turn count."""
    from grail_sim.answers import gold_reply
    from grail_sim.training import policy, sft
    from grail_sim.training.run import make_run, run_defaults

    recipe = _parse(RECIPES / "sft.yaml", [*TINY_SFT, "--max_steps", "1"], dataset=prompt_dataset,
                    model=tiny_model_dir, out=tmp_path, defaults=run_defaults)
    run = make_run(recipe, is_main=True)
    data = sft.get_sft_dataset(run)
    tokenizer, model, _ = policy.get_model(run)
    trainer = sft.build_sft_trainer(run, model, tokenizer, data)
    assert trainer.completion_only_loss is True and trainer.args.completion_only_loss is True
    first = trainer.train_dataset[0]
    kept = [i for i, label in enumerate(first["labels"]) if label != -100]
    assert kept and kept == list(range(kept[0], len(first["input_ids"])))  # one trailing run: the completion
    completion = data[0]["completion"][0]["content"]
    assert completion == gold_reply(_first_row(prompt_dataset, run.seed), run.config.think_template)
    assert tokenizer.decode([first["labels"][i] for i in kept]) == completion + "<|im_end|>\n"
    assert "<|im_start|>assistant" in tokenizer.decode(first["input_ids"][:kept[0]])  # the prompt is masked
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert ((batch["labels"] == -100) | (batch["labels"] == batch["input_ids"])).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # padding is masked too


def _first_row(dataset: Path, seed: int) -> dict:
    from grail_sim.training.data import load_training_data

    return load_training_data(dataset, "train", need_grail=False, max_rows=None, seed=seed)[0]


# --- training through the CLI ---------------------------------------------------------------------


@pytest.mark.slow
def test_sft_trains_writes_contract_3_outputs_and_resumes(tiny_model_dir, prompt_dataset, tmp_path):
    import shutil

    from grail_sim import io

    out = tmp_path / "sft_gun"
    assert _train("sft", prompt_dataset, tiny_model_dir, out, TINY_SFT, max_steps=2) == 0
    for name in ("final/adapter_config.json", "final/grail_sim.json", "final/tokenizer_config.json",
                 "trainer_state.json", "metrics.jsonl", "resolved_recipe.yaml", "checkpoint-2/trainer_state.json"):
        assert (out / name).exists(), name
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["trainer"] == "sft" and provenance["adapter"] is True and provenance["global_step"] == 2
    assert provenance["think_template"] == ""  # the recipe's (empty), for the trained-think scoring
    assert provenance["base_model_path"] == str(Path(tiny_model_dir).resolve())
    assert provenance["base_model_sha256"] == io.file_sha256(tiny_model_dir)
    steps = [row for row in _rows(out / "metrics.jsonl") if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2] and "mean_token_accuracy" in steps[0]

    # Interrupted after checkpoint-1: the rerun resumes there and redoes step 2 once.
    shutil.rmtree(out / "checkpoint-2")
    shutil.rmtree(out / "final")
    (out / "metrics.jsonl").unlink()
    assert _train("sft", prompt_dataset, tiny_model_dir, out, TINY_SFT, max_steps=3) == 0
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["resumed_from"] == str(out / "checkpoint-1") and provenance["global_step"] == 3
    assert [row["step"] for row in _rows(out / "metrics.jsonl") if "loss" in row] == [1, 2, 3]


@pytest.mark.slow
def test_grpo_starts_from_the_sft_adapter_and_load_policy_loads_the_result(tiny_model_dir, prompt_dataset,
                                                                          tmp_path):
    """GRPO trains sft's adapter further on sft's base; the output records that base, so it loads as usual."""
    from safetensors.torch import load_file

    from grail_sim import io
    from grail_sim.model.loading import adapter_base, load_policy

    sft_out, grpo_out = tmp_path / "sft_gun", tmp_path / "grpo_gun"
    assert _train("sft", prompt_dataset, tiny_model_dir, sft_out,
                  TINY_SFT + ["learning_rate=0.01", "think_template=Option {index}"], 2) == 0
    assert _train("grpo", prompt_dataset, sft_out / "final", grpo_out, TINY_GRPO, max_steps=1) == 0
    provenance = json.loads((grpo_out / "final" / "grail_sim.json").read_text())
    assert provenance["start_model"] == str(sft_out / "final")
    # The think sft taught is the one the RL policy writes, and the evaluation scores it after.
    sft_template = json.loads((sft_out / "final" / "grail_sim.json").read_text())["think_template"]
    assert sft_template == "Option {index}" and provenance["think_template"] == sft_template
    assert provenance["base_model_sha256"] == io.file_sha256(tiny_model_dir)
    assert Path(adapter_base(grpo_out / "final")) == Path(tiny_model_dir).resolve()

    sft_weights = load_file(str(sft_out / "final" / "adapter_model.safetensors"))
    grpo_weights = load_file(str(grpo_out / "final" / "adapter_model.safetensors"))
    assert set(sft_weights) == set(grpo_weights)  # the same adapter, trained further
    lora_b = [name for name in sft_weights if "lora_B" in name]
    assert any(sft_weights[name].abs().max() > 0 for name in lora_b)  # sft moved off the identity
    for name in lora_b:  # one small RL step from sft's weights, not a fresh (zero) adapter
        assert (grpo_weights[name] - sft_weights[name]).abs().max() < 0.05 * max(1.0, sft_weights[name].abs().max())

    model, tokenizer = load_policy(grpo_out / "final")
    base, _ = load_policy(tiny_model_dir)
    merged = dict(model.named_parameters())
    assert any(not merged[name].equal(param) for name, param in base.named_parameters())
    assert tokenizer.padding_side == "left"


@pytest.mark.slow
def test_full_fine_tuned_sft_is_the_base_of_a_lora_grpo_run(tiny_model_dir, prompt_dataset, tmp_path):
    from grail_sim import io
    from grail_sim.model.loading import adapter_base, load_policy

    sft_out, grpo_out = tmp_path / "sft_full", tmp_path / "grpo_gun"
    assert _train("sft", prompt_dataset, tiny_model_dir, sft_out, TINY_SFT + ["use_peft=false"], 1) == 0
    assert (sft_out / "final" / "config.json").is_file() and not (sft_out / "final" / "adapter_config.json").exists()
    assert _train("grpo", prompt_dataset, sft_out / "final", grpo_out, TINY_GRPO, max_steps=1) == 0
    provenance = json.loads((grpo_out / "final" / "grail_sim.json").read_text())
    assert provenance["base_model_sha256"] == io.file_sha256(sft_out / "final")
    assert Path(adapter_base(grpo_out / "final")) == (sft_out / "final").resolve()
    load_policy(grpo_out / "final")
