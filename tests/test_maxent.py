"""MaxEnt-GRPO's weights (by hand and in their limits), adaptive KL control, their recipe keys, and
both through the real train CLI on the tiny model (#14)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from grail_sim import errors
from grail_sim.training.kl_control import BOUND_FACTOR, ERROR_CLIP, AdaptiveKLController
from grail_sim.training.maxent import maxent_weights, reference_scores

from test_train import RECIPES, _metric_rows, _train_cli, make_prompt_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _weights(utilities, refs=None, *, tau=0.2, beta=0.0, q_temperature=1.0, q_epsilon=0.0, group_size=3):
    ref_scores = None if refs is None else torch.tensor(refs, dtype=torch.float32)
    return maxent_weights(torch.tensor(utilities, dtype=torch.float32), ref_scores, group_size, tau=tau, beta=beta,
                          q_temperature=q_temperature, q_epsilon=q_epsilon).tolist()


# --- the weights ------------------------------------------------------------------------------------


def test_weights_match_a_hand_computation_on_a_toy_group():
    # u = (1, 0, 0.5), T_q = 1: q = e^u / (e + 1 + e^0.5) = (0.5065, 0.1863, 0.3072)
    # tau = 0.2, beta = 0.1: log w = (log q) / 0.3 + (0.1 / 0.3) * l with l = (-1, -2, -0.5)
    # log w = (-2.2670 - 0.3333, -5.6013 - 0.6667, -3.9346 - 0.1667) = (-2.6003, -6.2680, -4.1013)
    # w = softmax(log w) = (0.8008, 0.0205, 0.1787)
    weights = _weights([1.0, 0.0, 0.5], [-1.0, -2.0, -0.5], tau=0.2, beta=0.1)
    assert weights == pytest.approx([0.8008, 0.0205, 0.1787], abs=2e-4)
    assert sum(weights) == pytest.approx(1.0)


def test_epsilon_keeps_every_completion_in_the_support():
    # T_q small: q is one-hot up to eps; with eps = 0.01 and K = 3, q = (0.97 + 0.01, 0.01, 0.01).
    sharp = _weights([1.0, 0.0, 0.0], tau=0.0, beta=0.0, q_temperature=1e-4, q_epsilon=0.01)
    assert sharp == pytest.approx([0.98, 0.01, 0.01], abs=1e-6)


def test_limits_uniform_reference_and_argmax():
    utilities, refs = [1.0, 0.0, 0.5, 0.3, 0.9, 0.1], [-1.0, -2.0, -0.5, -3.0, -1.0, -2.0]
    # tau -> infinity: uniform.
    assert _weights(utilities, tau=1e9) == pytest.approx([1 / 3] * 6, abs=1e-6)
    # beta -> infinity with tau fixed: the reference's own distribution over the group.
    expected = torch.softmax(torch.tensor(refs).view(2, 3), dim=1).view(-1).tolist()
    assert _weights(utilities, refs, tau=0.2, beta=1e9) == pytest.approx(expected, abs=1e-5)
    # T_q -> 0 with beta = 0: all weight on each group's best completion.
    assert _weights(utilities, tau=0.2, q_temperature=1e-4, q_epsilon=1e-6) == pytest.approx(
        [1, 0, 0, 0, 1, 0], abs=1e-6)


def test_unscorable_completions_get_the_floor_and_an_unscorable_group_is_uniform():
    nan = math.nan
    weights = _weights([nan, 1.0, 0.0, nan, nan, nan], tau=1.0, q_epsilon=1e-3)
    assert weights[0] < 0.01 and weights[1] > weights[2]
    assert weights[3:] == pytest.approx([1 / 3] * 3)


def test_bad_groups_and_settings_fail_clearly():
    with pytest.raises(ValueError, match="groups of 4"):
        _weights([1.0, 0.0, 0.5], group_size=4)
    with pytest.raises(ValueError, match="reference scores"):
        _weights([1.0, 0.0, 0.5], beta=0.1)
    with pytest.raises(ValueError, match="maxent_q_epsilon"):
        _weights([1.0, 0.0, 0.5], q_epsilon=0.5)


def test_reference_scores_sum_or_average_over_completion_tokens():
    logps = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert reference_scores(logps, mask, length_normalize=False).tolist() == [-3.0, -1.5]
    assert reference_scores(logps, mask, length_normalize=True).tolist() == [-1.5, -0.5]


# --- adaptive KL control ----------------------------------------------------------------------------


def test_kl_controller_moves_beta_toward_the_target_and_stays_bounded():
    controller = AdaptiveKLController(init_kl_coeff=0.1, kl_target=0.05, kl_horizon=10)
    assert controller.update(0.10) == pytest.approx(0.1 * (1 + ERROR_CLIP / 10))  # far above: clipped rise
    rising = controller.value
    assert controller.update(0.06) == pytest.approx(rising * (1 + 0.2 / 10))  # 0.06 / 0.05 - 1 = 0.2
    high = controller.value
    assert controller.update(0.04) < high  # below target: falls
    assert controller.update(math.nan) == controller.value  # no measurement: unchanged
    for _ in range(100_000):  # a KL stuck at zero drives beta down, never to zero
        controller.update(0.0)
    assert controller.value == pytest.approx(0.1 / BOUND_FACTOR)
    for _ in range(100_000):
        controller.update(50.0)
    assert controller.value == pytest.approx(0.1 * BOUND_FACTOR)
    assert AdaptiveKLController.from_state(controller.state()) == controller


@pytest.mark.parametrize("kwargs, message", [({"init_kl_coeff": 0.0}, "init_kl_coeff"),
                                             ({"kl_target": 0.0}, "kl_target"), ({"kl_horizon": 0}, "kl_horizon")])
def test_kl_controller_refuses_settings_that_cannot_control(kwargs, message):
    settings = {"init_kl_coeff": 0.1, "kl_target": 0.05, "kl_horizon": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        AdaptiveKLController(**settings)


# --- recipe keys -----------------------------------------------------------------------------------


def _parse(recipe: str, *flags: str):
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    return parse_recipe(["--config", str(RECIPES / f"{recipe}.yaml"), "--dataset", "D", "--model", "M", "--out", "OUT",
                         *flags], defaults=run_defaults)


def test_the_maxent_recipe_takes_the_seed_flags_and_init_kl_coeff_sets_beta():
    recipe = _parse("maxent", "maxent_tau=0.5", "maxent_q_temperature=2", "maxent_q_epsilon=1e-4",
                    "maxent_length_normalize_ref=false", "init_kl_coeff=0.05", "kl_target=0.1", "kl_horizon=20")
    assert recipe.trainer == "maxent" and recipe.config.beta == 0.05
    settings = recipe.config.maxent_settings()
    assert (settings.tau, settings.q_temperature, settings.q_epsilon, settings.length_normalize_ref) == (
        0.5, 2.0, 1e-4, False)
    controller = recipe.config.kl_controller()
    assert (controller.value, controller.kl_target, controller.kl_horizon) == (0.05, 0.1, 20)
    assert _parse("grpo", "init_kl_coeff=0.1").config.beta == 0.1  # the recipe says beta: 0


@pytest.mark.parametrize("recipe, overrides, message", [
    ("grpo", ["maxent_tau=0.5"], r"grpo\.yaml.*maxent_tau.*trainer 'maxent' only"),
    ("grpo", ["kl_target=0.1"], r"grpo\.yaml: kl_target needs a starting KL coefficient"),
    ("maxent", ["maxent_q_temperature=0"], r"maxent\.yaml: maxent_q_temperature must be a number > 0"),
    ("maxent", ["maxent_tau=-1"], r"maxent\.yaml: maxent_tau must be"),
])
def test_kl_and_maxent_keys_fail_naming_the_key(recipe, overrides, message):
    with pytest.raises(errors.RecipeError, match=message):
        _parse(recipe, *overrides)


def test_docs_table_of_maxent_keys_matches_the_recipe_defaults():
    import dataclasses
    import re

    import yaml

    from grail_sim.training.arguments import GrpoRecipe

    defaults = {item.name: item.default for item in dataclasses.fields(GrpoRecipe)}
    text = (Path(__file__).resolve().parents[1] / "docs" / "train.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text.split("| recipe key | default |", 1)[1].split("\n\n", 1)[0],
                      flags=re.MULTILINE)
    assert len(rows) == 5
    for key, documented in rows:
        assert yaml.safe_load(documented.strip().replace("1e-6", "1.0e-6")) == defaults[key], key


# --- through the real CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maxent_dataset(tmp_path_factory):
    return make_prompt_dataset(tmp_path_factory.mktemp("maxent") / "next_video", rows=12)


@pytest.mark.slow
def test_maxent_trains_through_the_cli_with_a_gradient_and_adaptive_kl(tiny_model_dir, maxent_dataset, tmp_path):
    """A fresh adapter on the bare model, so the LoRA B matrices start at zero: non-zero after training
    means the weighted NLL had a gradient through the policy. beta moves and is logged every step, with the KL."""
    from safetensors.torch import load_file

    out = tmp_path / "maxent"
    assert _train_cli("maxent", maxent_dataset, tiny_model_dir, out, "init_kl_coeff=0.05", "kl_target=0.001",
                      "kl_horizon=2", "learning_rate=0.01", max_steps=2) == 0
    adapter = load_file(str(out / "final" / "adapter_model.safetensors"))
    assert any(float(tensor.abs().max()) > 0 for name, tensor in adapter.items() if "lora_B" in name)
    steps = [row for row in _metric_rows(out / "metrics.jsonl") if "beta" in row]
    assert len(steps) == 2 and all("kl" in row and "maxent/weight_entropy" in row for row in steps)
    # Step 1 samples from the reference itself (KL 0: beta falls by the clipped 0.2 / horizon); step 2's
    # policy has moved past the tiny target (beta rises by the same factor).
    assert steps[0]["kl"] == 0 and steps[1]["kl"] > 0.001
    assert [row["beta"] for row in steps] == pytest.approx([0.05 * 0.9, 0.05 * 0.9 * 1.1])
    saved = json.loads((out / "checkpoint-2" / "kl_controller.json").read_text())
    assert saved["value"] == pytest.approx(steps[1]["beta"])
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["trainer"] == "maxent"


@pytest.mark.slow
def test_grpo_resumes_beta_from_its_checkpoint(tiny_model_dir, maxent_dataset, tmp_path):
    out = tmp_path / "grpo"
    flags = ("init_kl_coeff=0.05", "kl_target=0.001", "kl_horizon=2", "learning_rate=0.01")
    assert _train_cli("grpo", maxent_dataset, tiny_model_dir, out, *flags, max_steps=1) == 0
    first = json.loads((out / "checkpoint-1" / "kl_controller.json").read_text())["value"]
    assert first == pytest.approx(0.05 * (1 - ERROR_CLIP / 2))  # step 1: KL 0
    assert _train_cli("grpo", maxent_dataset, tiny_model_dir, out, *flags, max_steps=2) == 0
    rows = [row for row in _metric_rows(out / "metrics.jsonl") if "beta" in row]
    assert [row["step"] for row in rows] == [1, 2]
    # The tiny model earns no reward, so GRPO's policy does not move and the KL stays 0: beta falls again,
    # from the checkpoint's value (a restart would log 0.05 * 0.9 once more).
    assert rows[-1]["kl"] == 0 and rows[-1]["beta"] == pytest.approx(first * (1 - ERROR_CLIP / 2))


def test_recipes_directory_has_the_entropy_variant_under_its_own_name():
    recipe = _parse("grpo-entropy")
    assert recipe.trainer == "grpo-entropy" and recipe.config.entropy_coef > 0
