"""The recipe's prompt overrides (#14): `chat_template` (file or inline) on the tokenizer and in
provenance, `system_prompt` in place of the prompts stage's, inherited from sft by RL, applied by
evaluation, shown in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grail_sim import errors
from grail_sim.rows import replace_system
from grail_sim.training import prompting

from test_train import RECIPES, _train_cli, make_prompt_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_replace_system_replaces_the_first_system_message_or_puts_one_first():
    chat = [{"role": "system", "content": "old"}, {"role": "user", "content": "u"}]
    assert replace_system(chat, "new") == [{"role": "system", "content": "new"}, {"role": "user", "content": "u"}]
    assert replace_system(chat[1:], "new")[0] == {"role": "system", "content": "new"}
    assert chat[0]["content"] == "old"  # the input is not modified


def _parse(recipe: str, *flags: str):
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    return parse_recipe(["--config", str(RECIPES / f"{recipe}.yaml"), "--dataset", "D", "--model", "M", "--out", "OUT",
                         *flags], defaults=run_defaults)


def test_chat_template_is_inline_or_a_file_and_a_missing_file_fails_at_recipe_load(tmp_path):
    file = tmp_path / "chat.jinja"
    file.write_text(TEMPLATE)
    assert prompting.chat_template_text(TEMPLATE) == (TEMPLATE, "inline")
    assert prompting.chat_template_text(str(file)) == (TEMPLATE, str(file))
    for recipe in ("grpo", "sft"):
        config = _parse(recipe, f"chat_template={file}", "system_prompt=Pick one.").config
        assert (config.chat_template, config.system_prompt) == (str(file), "Pick one.")
        with pytest.raises(errors.RecipeError, match=rf"{recipe}\.yaml: chat_template 'nowhere.jinja' is neither"):
            _parse(recipe, "chat_template=nowhere.jinja")


def test_a_template_that_does_not_render_fails_naming_its_source(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with pytest.raises(errors.RecipeError, match="chat_template from inline does not render"):
        prompting.apply_chat_template(tokenizer, "{% for m in messages %}{{ m.content | nofilter }}{% endfor %}")
    record = prompting.apply_chat_template(tokenizer, TEMPLATE)
    assert record["source"] == "inline" and len(record["sha256"]) == 64 and tokenizer.chat_template == TEMPLATE


@pytest.mark.slow
def test_sft_records_its_overrides_grpo_inherits_the_system_prompt_and_evaluation_applies_it(
        tiny_model_dir, tmp_path, monkeypatch):
    from grail_sim.evaluation import evaluate as evaluation_evaluate
    from grail_sim.evaluation.generators import GenerationSettings

    prompts = make_prompt_dataset(tmp_path / "prompts" / "next_video", rows=8)
    template = tmp_path / "chat.jinja"
    template.write_text(TEMPLATE)
    sft_out = tmp_path / "sft"
    argv = ["train", "--config", str(RECIPES / "sft.yaml"), "--dataset", str(prompts), "--model", str(tiny_model_dir),
            "--out", str(sft_out), "--max-steps", "1", "--threads", "1"]
    for override in ("per_device_train_batch_size=2", "report_to=none", "system_prompt=Name the option.",
                     f"chat_template={template}"):
        argv += ["--set", override]
    from grail_sim import cli

    assert cli.main(argv) == 0
    recorded = json.loads((sft_out / "final" / "grail_sim.json").read_text())["prompt_overrides"]
    assert recorded["system_prompt"] == "Name the option." and recorded["chat_template"]["source"] == str(template)
    saved = json.loads((sft_out / "final" / "tokenizer_config.json").read_text()).get("chat_template") or \
        (sft_out / "final" / "chat_template.jinja").read_text()
    assert saved == TEMPLATE

    grpo_out = tmp_path / "grpo"
    assert _train_cli("grpo", prompts, sft_out / "final", grpo_out, max_steps=1) == 0
    inherited = json.loads((grpo_out / "final" / "grail_sim.json").read_text())["prompt_overrides"]
    assert inherited["system_prompt"] == "Name the option." and inherited["chat_template"] is None

    seen = []
    run_scoring = evaluation_evaluate._run_scoring

    def watch(model_dir, split, settings, batch_size, think, datasets_by_task, *rest):
        seen.append(datasets_by_task["next_video"][0]["prompt"][0])
        return run_scoring(model_dir, split, settings, batch_size, think, datasets_by_task, *rest)

    monkeypatch.setattr(evaluation_evaluate, "_run_scoring", watch)
    result = evaluation_evaluate.evaluate(
        model_dir=grpo_out / "final", prompts_dir=prompts.parent, tasks=["next_video"], split="test",
        out_dir=tmp_path / "eval", settings=GenerationSettings(max_new_tokens=4, batch_size=2, backend="hf",
                                                               device="cpu"),
        mode="score", score_rows=2)
    assert seen == [{"role": "system", "content": "Name the option."}]
    assert result["provenance"]["prompt_overrides"]["system_prompt"] == "Name the option."


def test_the_report_shows_the_training_recipe_overrides(tmp_path):
    from test_report import _report, constant_records, write_eval

    from grail_sim import io

    folder = write_eval(tmp_path / "eval" / "grpo_gun" / "test", "grpo", constant_records(), None)
    data = json.loads((folder / "metrics.json").read_text())
    assert "system prompt, from the training recipe" not in _report(tmp_path, folder, model="grpo")
    data["provenance"]["prompt_overrides"] = {"system_prompt": "Name the option | now.",
                                              "chat_template": {"source": "chat.jinja", "sha256": "ef" * 32}}
    io.write_json(folder / "metrics.json", data)
    text = _report(tmp_path, folder, model="grpo")
    assert "| system prompt, from the training recipe (test) | Name the option \\| now. (in place of" in text
    assert "| chat template, from the training recipe (test) | chat.jinja · sha256 `efefefefefefefef` |" in text
