"""QLoRA loading (#13): the recipe's load_in_4bit / load_in_8bit (TRL's ModelConfig), bitsandbytes'
config, and a clear error on CPU."""

from __future__ import annotations

import pytest

from grail_sim import errors

from test_train import RECIPES, _train_cli, make_prompt_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _parse(recipe: str, *flags: str):
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    return parse_recipe(["--config", str(RECIPES / f"{recipe}.yaml"), "--dataset", "D", "--model", "M", "--out", "OUT",
                         *flags], defaults=run_defaults)


@pytest.mark.parametrize("recipe", ["grpo", "sft"])
def test_the_section_builds_bitsandbytes_configs(recipe):
    from trl import get_quantization_config

    model = _parse(recipe, "load_in_4bit=true", "bnb_4bit_quant_type=fp4", "use_bnb_nested_quant=true").model
    config = get_quantization_config(model)
    assert model.quantized and config.load_in_4bit and config.bnb_4bit_quant_type == "fp4"
    assert config.bnb_4bit_use_double_quant
    model = _parse(recipe, "load_in_8bit=true").model
    assert model.quantized and get_quantization_config(model).load_in_8bit
    model = _parse(recipe).model
    assert not model.quantized and get_quantization_config(model) is None


@pytest.mark.parametrize("overrides, message", [
    (["load_in_4bit=true", "load_in_8bit=true"], r"grpo\.yaml.*8 bit and 4 bit"),
    (["load_in_4bit=maybe"], r"grpo\.yaml.*load_in_4bit.*maybe"),
    (["bnb_4bit_quant_type=int4"], r"grpo\.yaml.*bnb_4bit_quant_type.*'int4'.*'fp4', 'nf4'"),
    (["load_in_4bit=true", "use_peft=false"], r"grpo\.yaml: load_in_4bit / load_in_8bit need use_peft: true"),
])
def test_bad_quantization_settings_fail_naming_the_key(overrides, message):
    with pytest.raises(errors.RecipeError, match=message):
        _parse("grpo", *overrides)


def test_quantized_training_on_cpu_exits_2_naming_the_key(tiny_model_dir, tmp_path, capsys):
    dataset = make_prompt_dataset(tmp_path / "next_video", rows=4)
    assert _train_cli("grpo", dataset, tiny_model_dir, tmp_path / "out", "load_in_4bit=true", max_steps=1) == 2
    err = capsys.readouterr().err
    assert "load_in_4bit needs a GPU" in err and "Traceback" not in err
