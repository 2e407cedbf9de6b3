"""QLoRA loading (#13): the recipe's quantization section, bitsandbytes' config, and a clear error on CPU."""

from __future__ import annotations

import pytest

from grail_sim import errors
from grail_sim.training import recipe as training_recipe

from test_train import RECIPES, _train_cli, make_prompt_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("recipe", ["grpo", "sft"])
def test_the_section_builds_bitsandbytes_configs(recipe):
    script, _ = training_recipe.load_recipe(RECIPES / f"{recipe}.yaml", ["quantization.bits=4",
                                                                         "quantization.quant_type=fp4"])
    config = script.quantization.to_bitsandbytes()
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "fp4" and config.bnb_4bit_use_double_quant
    script, _ = training_recipe.load_recipe(RECIPES / f"{recipe}.yaml", ["quantization.bits=8"])
    assert script.quantization.to_bitsandbytes().load_in_8bit
    script, _ = training_recipe.load_recipe(RECIPES / f"{recipe}.yaml")
    assert not script.quantization.enabled


@pytest.mark.parametrize("overrides, message", [
    (["quantization.bits=3"], r"quantization.bits must be >= 4"),
    (["quantization.bits=6"], r"quantization.bits must be 4, 8 or null"),
    (["quantization.quant_type=int4"], r"quantization.quant_type must be one of nf4, fp4"),
    (["quantization.bits=4", "lora.enabled=false"], r"needs lora.enabled: true"),
])
def test_bad_quantization_settings_fail_naming_the_key(overrides, message):
    with pytest.raises(errors.RecipeError, match=message):
        training_recipe.load_recipe(RECIPES / "grpo.yaml", overrides)


def test_quantized_training_on_cpu_exits_2_naming_the_key(tiny_model_dir, tmp_path, capsys):
    dataset = make_prompt_dataset(tmp_path / "next_video", rows=4)
    assert _train_cli("grpo", dataset, tiny_model_dir, tmp_path / "out", "quantization.bits=4", max_steps=1) == 2
    err = capsys.readouterr().err
    assert "quantization.bits 4 needs a GPU" in err and "Traceback" not in err
