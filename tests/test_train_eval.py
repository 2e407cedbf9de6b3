"""Evaluation during training (#14): the recipe keys it needs, enforced; eval rows capped; eval
metrics in the JSONL log; GRAIL's discriminator frozen while the trainer evaluates."""

from __future__ import annotations

import pytest

from grail_sim import errors

from test_train import RECIPES, _metric_rows, _train_cli, make_prompt_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _parse(recipe: str, *flags: str):
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    return parse_recipe(["--config", str(RECIPES / f"{recipe}.yaml"), "--dataset", "D", "--model", "M", "--out", "OUT",
                         *flags], defaults=run_defaults)


@pytest.mark.parametrize("overrides, message", [
    (["do_eval=true"], r"grpo\.yaml: evaluation during training needs eval_strategy: steps \(got 'no'"),
    (["eval_strategy=epoch"], r"grpo\.yaml: evaluation during training needs eval_strategy: steps \(got 'epoch'"),
    (["eval_strategy=steps"], r"grpo\.yaml: eval_strategy: steps needs eval_steps > 0 \(got None\)"),
    (["eval_strategy=steps", "eval_steps=0"], r"grpo\.yaml: eval_strategy: steps needs eval_steps > 0 \(got 0"),
])
def test_evaluation_during_training_needs_steps_and_a_positive_eval_steps(overrides, message):
    with pytest.raises(errors.RecipeError, match=message):
        _parse("grpo", *overrides)


def test_a_complete_evaluation_setting_is_accepted_and_switches_do_eval_on():
    from grail_sim.training.arguments import evaluates_during_training

    recipe = _parse("grail", "eval_strategy=steps", "eval_steps=5", "max_eval_samples=16", "dataset_test_split=test")
    assert recipe.config.do_eval is True and evaluates_during_training(recipe.config)
    assert (recipe.script.max_eval_samples, recipe.script.dataset_test_split) == (16, "test")
    assert not evaluates_during_training(_parse("grpo").config)


@pytest.fixture(scope="module")
def eval_dataset(tmp_path_factory):
    return make_prompt_dataset(tmp_path_factory.mktemp("evaluation") / "next_video", rows=8)


@pytest.mark.slow
def test_grail_evaluates_every_step_with_its_discriminator_frozen(tiny_model_dir, eval_dataset, tmp_path,
                                                                   monkeypatch):
    import torch

    from grail_sim.training import trainers

    watched = []
    evaluate = trainers.GrailSimGRPOTrainer.evaluate

    def evaluate_and_compare(self, *args, **kwargs):
        gail = next(func for func in self.reward_funcs if getattr(func, "__name__", "") == "gail")
        model = gail.discriminator.model
        before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        updates = gail.discriminator.updates
        result = evaluate(self, *args, **kwargs)
        unchanged = updates == gail.discriminator.updates and all(
            torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
        watched.append({"unchanged": unchanged, "rows": len(self.eval_dataset)})
        return result

    monkeypatch.setattr(trainers.GrailSimGRPOTrainer, "evaluate", evaluate_and_compare)
    out = tmp_path / "grail"
    assert _train_cli("grail", eval_dataset, tiny_model_dir, out, "eval_strategy=steps", "eval_steps=1",
                      "max_eval_samples=2", "per_device_eval_batch_size=4", max_steps=2) == 0
    assert len(watched) == 2 and all(item["unchanged"] for item in watched)
    assert all(item["rows"] == 2 for item in watched)  # 8 validation rows, capped at 2
    rows = _metric_rows(out / "metrics.jsonl")
    evaluated = [row for row in rows if "eval_reward" in row]
    assert [row["step"] for row in evaluated] == [1, 2]
    assert all("eval_rewards/gail/mean" in row for row in evaluated)
    # The discriminator did learn while training: its update counter moved on the training steps.
    assert any(row.get("gail/loss") is not None for row in rows if "reward" in row)
