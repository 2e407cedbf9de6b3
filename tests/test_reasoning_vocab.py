"""Reasoning-vocabulary expansion (#15): duplicated rows start equal to the rows they mirror (tied
and untied heads), reasoning ids never appear outside <think>, decoding maps them back, and the map
is saved beside the model and in every checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from grail_sim.training import reasoning_vocab as rv

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
