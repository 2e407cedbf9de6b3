"""Reasoning-vocabulary expansion (#15): duplicated rows start equal to the rows they mirror (tied
and untied heads), reasoning ids never appear outside <think>, decoding maps them back, and the map
is saved beside the model and in every checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from grail_sim.model import reasoning_vocab as rv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(tiny_model_dir, tied: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, tie_word_embeddings=tied)
    if not tied:  # give the head its own values, so that copying the wrong matrix would show
        with torch.no_grad():
            model.get_output_embeddings().weight.copy_(torch.randn_like(model.get_output_embeddings().weight))
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_duplicated_rows_start_equal_to_the_rows_they_mirror(tiny_model_dir, tied):
    model = _model(tiny_model_dir, tied)
    base = model.get_input_embeddings().weight.shape[0]
    token_map = rv.expand_vocabulary(model, 5, mirrored_ids=[7, 8, 9, 100, 2])
    inputs, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert inputs.shape[0] == base + 5 and head.shape[0] == base + 5
    for offset, mirrored in enumerate([7, 8, 9, 100, 2]):
        assert torch.equal(inputs[base + offset], inputs[mirrored])
        assert torch.equal(head[base + offset], head[mirrored])
    assert (head.data_ptr() == inputs.data_ptr()) == tied  # tying survives the resize
    # The same logits for a reasoning id as for the token it mirrors, from the same hidden state.
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits[0, -1]
    assert torch.allclose(logits[base + 3], logits[100])


def test_a_full_duplicate_is_the_default_and_bad_sizes_fail(tiny_model_dir):
    model = _model(tiny_model_dir, True)
    base = model.get_input_embeddings().weight.shape[0]
    token_map = rv.expand_vocabulary(model, 4)
    assert token_map.mirrored_ids == [0, 1, 2, 3] and token_map.base_vocab_size == base
    assert rv.lora_trainable_tokens(token_map) == {"embed_tokens": [base, base + 1, base + 2, base + 3]}
    with pytest.raises(ValueError, match="needs 2 mirrored ids"):
        rv.expand_vocabulary(_model(tiny_model_dir, True), 2, mirrored_ids=[1])


def test_reasoning_ids_never_appear_outside_think(tiny_model_dir, tokenizer_dir):
    from transformers import AutoTokenizer, LogitsProcessorList

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = _model(tiny_model_dir, True)
    base = model.get_input_embeddings().weight.shape[0]
    token_map = rv.expand_vocabulary(model, base)  # the whole vocabulary duplicated
    processor = rv.make_logits_processor(tokenizer, token_map)
    for prefix, inside in (("Answer: <think>", True), ("<think>a</think><answer>", False), ("Hello", False)):
        ids = tokenizer(prefix, return_tensors="pt", add_special_tokens=False)["input_ids"]
        output = model.generate(ids, max_new_tokens=6, do_sample=False,
                                logits_processor=LogitsProcessorList([processor]), pad_token_id=0)
        new = output[0, ids.shape[1]:].tolist()
        plain = [token_map.mirror_of(i) for i in output[0].tolist()]
        for step, token in enumerate(new):
            is_open = rv.think_is_open(tokenizer.decode(plain[:ids.shape[1] + step]))
            assert is_open or token < base, (prefix, step, token)
        # Inside an open block the processor leaves every reasoning id's score as it was; outside it
        # masks them all.
        scores = torch.randn(1, 2 * base)
        kept = processor(ids, scores.clone())
        assert torch.equal(kept, scores) if inside else bool(torch.isinf(kept[0, base:]).all())


def test_decoding_maps_reasoning_ids_back_and_counts_them():
    token_map = rv.ReasoningTokenMap(base_vocab_size=10, mirrored_ids=[3, 4, 5])
    assert rv.decode_reasoning([1, 10, 12, 9, 11], token_map) == ([1, 3, 5, 9, 4], 3)


def test_the_map_is_saved_beside_the_model_and_in_every_checkpoint(tmp_path):
    from types import SimpleNamespace

    token_map = rv.ReasoningTokenMap(base_vocab_size=10, mirrored_ids=[3, 4])
    token_map.save(tmp_path)
    assert rv.ReasoningTokenMap.load(tmp_path) == token_map
    (tmp_path / "run" / "checkpoint-2").mkdir(parents=True)
    callback = rv.map_in_checkpoints(token_map)
    callback.on_save(SimpleNamespace(output_dir=str(tmp_path / "run")),
                     SimpleNamespace(global_step=2, is_world_process_zero=True), None)
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / rv.MAP_FILE).read_text())
    assert saved == {"base_vocab_size": 10, "mirrored_ids": [3, 4]}


def test_mirrored_decoding_reads_reasoning_ids_as_their_tokens(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    base = len(tokenizer)
    ids = tokenizer("<think>7 + 5 = 12</think><answer>12</answer>", add_special_tokens=False)["input_ids"]
    token_map = rv.ReasoningTokenMap(base_vocab_size=base, mirrored_ids=list(range(base)))
    rv.mirrored_decoding(tokenizer, token_map)
    # The think's tokens (the first seven) written as reasoning ids decode to the same text.
    reasoning = [base + i for i in ids[:7]] + ids[7:]
    assert tokenizer.decode(reasoning) == tokenizer.decode(ids)
    assert tokenizer.batch_decode([reasoning, ids]) == [tokenizer.decode(ids)] * 2
    assert rv.count_reasoning([reasoning, ids], token_map) == 7


@pytest.mark.slow
def test_grpo_with_a_reasoning_vocabulary_end_to_end(tiny_model_dir, tmp_path):
    """The math run with reasoning_vocab_size: the map in every checkpoint and final/, the share of
    reasoning ids logged, the new rows trained beside the LoRA adapter (peft's trainable tokens),
    and evaluation loading the adapter on the expanded base, with reasoning ids kept inside <think>."""
    from pathlib import Path

    from safetensors import safe_open

    from grail_sim import cli
    from grail_sim.model.loading import load_policy

    recipes = Path(__file__).resolve().parents[1] / "config" / "recipes"
    dataset, out = tmp_path / "math", tmp_path / "out"
    assert cli.main(["prompts", "math", "--out", str(dataset), "--train", "8", "--validation", "2",
                     "--test", "3"]) == 0
    argv = ["train", "--config", str(recipes / "math" / "grpo.yaml"), "--dataset", str(dataset), "--model",
            str(tiny_model_dir), "--out", str(out), "--max-steps", "2", "--threads", "1",
            "reasoning_vocab_size=49152", "per_device_train_batch_size=4", "num_generations=2",
            "max_completion_length=8", "save_steps=1", "report_to=none"]
    assert cli.main(argv) == 0
    expected = {"base_vocab_size": 49152, "mirrored_ids": list(range(49152))}
    for folder in ("checkpoint-1", "checkpoint-2", "final"):
        assert json.loads((out / folder / rv.MAP_FILE).read_text()) == expected, folder
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    fractions = [row["reasoning/token_fraction"] for row in rows if "reasoning/token_fraction" in row]
    assert len(fractions) == 2 and all(0.0 <= value <= 1.0 for value in fractions)
    with safe_open(str(out / "final" / "adapter_model.safetensors"), "pt") as saved:
        trainable_rows = [key for key in saved.keys() if "trainable_tokens" in key]
    assert trainable_rows, "the reasoning rows are not saved with the adapter"
    assert json.loads((out / "final" / "grail_sim.json").read_text())["reasoning_vocab_size"] == 49152

    model, tokenizer = load_policy(out / "final")
    assert model.get_input_embeddings().weight.shape[0] == 2 * 49152
    assert tokenizer.decode([49152 + 27]) == tokenizer.decode([27])
    evaluation = tmp_path / "eval"
    assert cli.main(["evaluate-math", "--model", str(out / "final"), "--dataset", str(dataset), "--out",
                     str(evaluation), "--samples", "2", "--max-new-tokens", "6", "--device", "cpu"]) == 0
    metrics = json.loads((evaluation / "math_metrics.json").read_text())
    assert metrics["reasoning_tokens"]["generated"] > 0
    assert 0 <= metrics["reasoning_tokens"]["used"] <= metrics["reasoning_tokens"]["generated"]


def _parse(recipe, *flags: str, dataset="D", model="M", out="OUT"):
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    return parse_recipe(["--config", str(recipe), "--dataset", str(dataset), "--model", str(model), "--out", str(out),
                         *flags], defaults=run_defaults)


def test_reasoning_vocabulary_refuses_vllm(tmp_path):
    from grail_sim.errors import RecipeError

    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("trainer: grpo\nreasoning_vocab_size: 8\nuse_vllm: true\n")
    with pytest.raises(RecipeError, match=r"grpo.yaml: reasoning_vocab_size needs use_vllm: false"):
        _parse(recipe)
    recipe.write_text("trainer: grpo\nreasoning_vocab_size: -1\n")
    with pytest.raises(RecipeError, match=r"grpo.yaml.*reasoning_vocab_size"):
        _parse(recipe)


def test_an_adapter_start_needs_every_weight_training():
    """The sft stage's adapter has no trainable tokens for the new rows: with LoRA on, a reasoning
    vocabulary must start from a full model; with use_peft false the adapter is merged first."""
    from types import SimpleNamespace

    from grail_sim.errors import RecipeError
    from grail_sim.training.policy import expand_reasoning_vocabulary

    run = SimpleNamespace(recipe=SimpleNamespace(source="recipe grpo.yaml"), model_dir="results/train/math_sft/final",
                          start_adapter="results/train/math_sft/final",
                          model_args=SimpleNamespace(reasoning_vocab_size=8, use_peft=True))
    with pytest.raises(RecipeError, match=r"grpo.yaml: reasoning_vocab_size with --model .* needs use_peft: false"):
        expand_reasoning_vocabulary(run, model=None, tokenizer=None)


def test_an_adapter_start_with_lora_off_merges_and_trains_every_weight(tiny_model_dir, tmp_path):
    """--model an adapter, use_peft false: the adapter is merged and every weight trains (peft had
    frozen the base to load it, so GRPO's first backward failed), reasoning rows included."""
    from pathlib import Path

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from grail_sim import cli
    from grail_sim.training.policy import get_model
    from grail_sim.training.run import make_run

    adapter = tmp_path / "sft_final"
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(str(adapter))
    (adapter / "grail_sim.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    dataset = tmp_path / "math"
    assert cli.main(["prompts", "math", "--out", str(dataset), "--train", "2", "--validation", "2",
                     "--test", "2"]) == 0
    recipe = Path(__file__).resolve().parents[1] / "config" / "recipes" / "math" / "grpo.yaml"
    run = make_run(_parse(recipe, "use_peft=false", "reasoning_vocab_size=16", dataset=dataset, model=adapter,
                          out=tmp_path / "out"), is_main=True)
    assert run.start_adapter == adapter
    tokenizer, model, token_map = get_model(run)
    assert not hasattr(model, "peft_config")  # merged
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert model.get_input_embeddings().weight.shape[0] == token_map.base_vocab_size + 16
