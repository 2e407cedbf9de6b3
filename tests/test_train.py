"""The train stage end to end on the tiny model: recipes, the real CLI, resume, outputs (Contract 3)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from grail_sim import config as grail_config
from grail_sim import errors as errors
from grail_sim.evaluation import provenance as evaluation_provenance
from grail_sim.training import data as training_data
from grail_sim.training import recipe as training_recipe
from grail_sim.training import resume as training_resume
from grail_sim.training import settings as settings_lib
from grail_sim.training import warmup as training_warmup

TOPICS = ["gun rights", "gun control", "hunting", "self defense", "policy debate", "news"]


def make_prompt_rows(count: int, seed: int = 0, id_prefix: str = "s") -> list[dict]:
    """Contract-2 next-video rows whose gold option shares the viewer's stated topic (a learnable signal)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        n_options = rng.randint(3, 5)
        topic = rng.choice(TOPICS)
        others = [t for t in TOPICS if t != topic]
        gold = rng.randint(1, n_options)
        slate = []
        for option in range(1, n_options + 1):
            subject = topic if option == gold else rng.choice(others)
            slate.append({"id": f"vid{index:03d}{option:02d}aa", "title": f"Video about {subject}",
                          "channel": f"Channel {option}", "duration_s": 300.0, "view_count": None,
                          "like_count": None, "comment_count": None})
        history = [{"id": "histvideo01", "title": f"Earlier video about {topic}", "channel": "Hist",
                    "watched_s": 100.0, "total_s": 200.0}]
        options = "\n".join(f"{i}. {item['title']} ({item['channel']})" for i, item in enumerate(slate, start=1))
        profile = f"The viewer cares about {topic}."
        prompt = [
            {"role": "system", "content": "Answer as <think>...</think><answer>N</answer>."},
            {"role": "user", "content": f"{profile}\nWatched: {history[0]['title']}\nOptions:\n{options}\nWhich next?"},
        ]
        rows.append({
            "id": f"{id_prefix}{index}:0", "prompt": prompt, "gold_index": gold, "n_options": n_options,
            "slate_items": json.dumps(slate), "viewer_profile": profile, "history": json.dumps(history),
            "issue": "gun_control", "participant_study": "study1", "participant_id": f"p{index:04d}",
            "opinion_before": 0.5, "opinion_after": 0.55, "opinion_direction": "increase",
            "gold_id": slate[gold - 1]["id"],
        })
    return rows


def make_prompt_dataset(out_dir, rows: int = 16, seed: int = 0) -> Path:
    """A small Contract-2 DatasetDict saved with save_to_disk."""
    from datasets import Dataset, DatasetDict

    splits = {name: Dataset.from_list(make_prompt_rows(count, seed + offset, name[:2]))
              for offset, (name, count) in enumerate([("train", rows), ("validation", 8), ("test", 8)])}
    DatasetDict(splits).save_to_disk(str(out_dir))
    return Path(out_dir)


RECIPES = Path(__file__).resolve().parents[1] / "config" / "recipes"
# Keeps a tiny-model run to a few seconds per step: 2 prompts x 2 completions, 8 new tokens. These runs
# start from the bare tiny model, so the in-train warm-up (off in the recipes, which start from sft) is on.
TINY = ["warmup_sft.enabled=true", "warmup_sft.steps=2", "warmup_sft.batch_size=2", "per_device_train_batch_size=4", "num_generations=2",
        "max_completion_length=8", "save_steps=1", "report_to=none", "gail.batch_size=4"]


def _train_cli(recipe: str, dataset: Path, model: Path, out: Path, *extra: str, max_steps: int = 2) -> int:
    from grail_sim import cli

    argv = ["train", "--recipe", str(RECIPES / f"{recipe}.yaml"), "--dataset", str(dataset), "--model", str(model),
            "--out", str(out), "--max-steps", str(max_steps), "--threads", "1"]
    for override in TINY + list(extra):
        if recipe != "grail" and override.startswith("gail."):
            continue
        argv += ["--set", override]
    return cli.main(argv)


# One intra-op torch thread for every test here (conftest.one_torch_thread says why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _metric_rows(path: Path) -> list[dict]:
    from grail_sim import io

    return list(io.read_jsonl(path))


@pytest.fixture(scope="module")
def prompt_dataset(tmp_path_factory):
    return make_prompt_dataset(tmp_path_factory.mktemp("prompts") / "next_video", rows=12)


# --- recipes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["grpo", "grail", "maxent", "grpo-entropy"])
def test_shipped_recipes_resolve_to_valid_grpo_configs(name, tmp_path):
    from trl import GRPOConfig

    from grail_sim.training import rewards

    script, grpo = training_recipe.load_recipe(RECIPES / f"{name}.yaml")
    assert script.trainer == name
    for reward in script.rewards:
        rewards.get_reward(reward)
    grpo.pop("reward_weights")
    grpo.update(use_cpu=True, bf16=False)
    config = GRPOConfig(output_dir=str(tmp_path), **grpo)
    assert config.max_completion_length <= 32 and config.num_generations >= 2
    assert (script.gail is not None) == (name == "grail")
    if name == "grpo-entropy":
        assert config.entropy_coef > 0


def test_unknown_recipe_key_fails_naming_it(tmp_path):


    recipe = tmp_path / "bad.yaml"
    recipe.write_text("trainer: grpo\nlearning_rate: 1.0e-5\nkl_coef: 0.1\n")  # a PPO key, not a GRPOConfig field
    with pytest.raises(errors.RecipeError, match=r"kl_coef.*bad.yaml"):
        training_recipe.load_recipe(recipe)
    recipe.write_text("trainer: grpo\nlora: {rank: 8}\n")
    with pytest.raises(errors.RecipeError, match=r"rank.*'lora'"):
        training_recipe.load_recipe(recipe)


def test_a_recipe_inherits_its_base_and_names_a_registered_trainer(tmp_path):
    """grail.yaml is grpo.yaml plus its trainer and discriminator: every other value comes from the base."""
    grail, grail_args = training_recipe.load_recipe(RECIPES / "grail.yaml")
    grpo, grpo_args = training_recipe.load_recipe(RECIPES / "grpo.yaml")
    assert grail_args == grpo_args and grail.lora == grpo.lora and grail.rewards == grpo.rewards
    assert (grail.trainer, grpo.trainer) == ("grail", "grpo") and grail.gail is not None and grpo.gail is None
    assert training_recipe.recipe_chain(RECIPES / "grail.yaml") == [RECIPES / "grail.yaml",
                                                                     (RECIPES / "grpo.yaml").resolve()]
    # A section merges key by key over its base's.
    (tmp_path / "parent.yaml").write_text("trainer: grpo\nlora: {r: 4, alpha: 8}\nlearning_rate: 0.5\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nlora: {r: 2}\n")
    child, child_args = training_recipe.load_recipe(tmp_path / "child.yaml")
    assert (child.lora.r, child.lora.alpha, child_args["learning_rate"]) == (2, 8, 0.5)
    (tmp_path / "parent.yaml").write_text("base: child.yaml\ntrainer: grpo\n")
    with pytest.raises(errors.RecipeError, match=r"child.yaml: base: child.yaml makes a loop"):
        training_recipe.load_recipe(tmp_path / "child.yaml")
    for text, message in (("max_steps: 1\n", r"none.yaml has no trainer: key; one of sft, grpo, grail"),
                          ("trainer: ppo\n", r"none.yaml names trainer 'ppo'; one of sft, grpo"),
                          ("trainer: grail\n", r"trainer 'grail' needs a gail: section"),
                          ("trainer: grpo\ngail: {weight: 0.5}\n", r"trainer 'grpo' has a gail: section")):
        (tmp_path / "none.yaml").write_text(text)
        with pytest.raises(errors.RecipeError, match=message):
            training_recipe.load_recipe(tmp_path / "none.yaml")


def test_a_config_override_reaches_only_the_recipes_that_read_it():
    """The workflow passes each training rule only these, so a key reruns exactly its trainers."""
    overrides = ["gail.weight=0.5", "num_generations=2", "learning_rate=1e-5", "think_template=''"]
    read = {name: training_recipe.overrides_read_by(RECIPES / f"{name}.yaml", overrides)
            for name in ("sft", "grpo", "grail", "maxent")}
    assert read["grail"] == ["gail.weight=0.5", "num_generations=2", "learning_rate=1e-5"]
    assert read["grpo"] == read["maxent"] == ["num_generations=2", "learning_rate=1e-5"]
    assert read["sft"] == ["learning_rate=1e-5", "think_template=''"]


def test_overrides_and_max_steps_reach_nested_sections():


    script, grpo = training_recipe.load_recipe(RECIPES / "grail.yaml", ["gail.weight=0.5", "learning_rate=2e-5",
                                                                "lora.enabled=false"], max_steps=3)
    assert script.gail.weight == 0.5 and script.lora.enabled is False
    assert script.lora.r == 16  # the rest of the section keeps its values
    assert grpo["max_steps"] == 3 and float(grpo["learning_rate"]) == 2e-5
    with pytest.raises(errors.RecipeError, match="key=value"):
        training_recipe.load_recipe(RECIPES / "grpo.yaml", ["learning_rate"])


def test_environment_overrides_are_recipe_overrides_that_set_wins_over():
    env = {"GAIL_USE": "0", "GAIL_WEIGHT": "0.7", "GAIL_ALPHA": "2", "GAIL_LR": "1e-3",
           "GAIL_DISC_MODEL": "/models/encoder", "GAIL_DEVICE": "cpu", "GRAIL_MAX_HISTORY": "5",
           "UNRELATED": "x", "GAIL_SEED": "9"}
    overrides = grail_config.env_overrides(env)
    assert overrides == ["gail.use=0", "gail.weight=0.7", "gail.alpha=2", "gail.lr=1e-3",
                         "gail.disc_model=/models/encoder", "gail.device=cpu", "gail.max_history=5"]
    assert grail_config.env_overrides({"GAIL_USE": "", "GAIL_DEVICE": "  "}) == []
    script, _ = training_recipe.load_recipe(RECIPES / "grail.yaml", overrides)
    gail = script.gail
    assert (gail.use, gail.weight, gail.alpha, gail.lr) == (False, 0.7, 2.0, 1e-3)
    assert (gail.disc_model, gail.device, gail.max_history) == ("/models/encoder", "cpu", 5)
    script, _ = training_recipe.load_recipe(RECIPES / "grail.yaml", overrides + ["gail.weight=0.1"])
    assert script.gail.weight == 0.1  # --set comes after the environment and wins
    # A value YAML would not read back as itself is quoted for the string keys.
    tricky = grail_config.env_overrides({"GAIL_DISC_MODEL": "null", "GAIL_DEVICE": "cuda:1"})
    script, _ = training_recipe.load_recipe(RECIPES / "grail.yaml", tricky)
    assert (script.gail.disc_model, script.gail.device) == ("null", "cuda:1")
    # The environment does not switch GRAIL on for a recipe without a gail: section.
    script, _ = training_recipe.load_recipe(RECIPES / "grpo.yaml", overrides)
    assert script.gail is None
    with pytest.raises(errors.RecipeError, match=r"grail\.yaml.*gail\.weight.*heavy"):
        training_recipe.load_recipe(RECIPES / "grail.yaml", grail_config.env_overrides({"GAIL_WEIGHT": "heavy"}))
    with pytest.raises(errors.RecipeError, match="dsic_lr"):
        training_recipe.load_recipe(RECIPES / "grail.yaml", ["gail.dsic_lr=1.0"])


def test_environment_overrides_land_in_train_overrides_and_set_wins():
    from grail_sim import config

    values: dict = {}
    messages = config.apply_environment(values, {"GAIL_USE": "0", "GRAIL_MAX_HISTORY": "0"})
    overrides = values["train"]["overrides"]
    assert overrides == {"gail.use": "0", "gail.max_history": "0"} and values["prompts"]["max_history"] == 0
    assert any("GAIL_USE" in m and "gail.use" in m for m in messages)
    assert any("GRAIL_MAX_HISTORY" in m and "gail.max_history" in m for m in messages)
    texts = config.recipe_overrides(overrides) + ["gail.use=true"]
    script, _ = training_recipe.load_recipe(RECIPES / "grail.yaml", texts)
    assert script.gail.use is True and script.gail.max_history == 0  # --set (last) wins; 0 = full history


def test_config_overrides_skip_keys_only_the_other_kind_of_recipe_has(caplog):
    """`train.overrides` reach every run of the DAG, sft included: a GRPO-only key (the cluster docs'
    `vllm_mode: colocate`) is skipped for the sft recipe, not a failure of its job; a typo still fails,
    and so does the same key given to sft by `--set`."""
    shared = grail_config.recipe_overrides({"vllm_mode": "colocate", "num_generations": 4, "learning_rate": 3e-5})
    with caplog.at_level("INFO", logger="grail_sim.training.recipe"):
        for_sft = training_recipe.shared_overrides_for(RECIPES / "sft.yaml", shared)
    assert for_sft == ["learning_rate=3e-05"]
    assert "vllm_mode=colocate skipped" in caplog.text and "num_generations=4 skipped" in caplog.text
    _, sft_args = training_recipe.load_recipe(RECIPES / "sft.yaml", for_sft)
    assert sft_args["learning_rate"] == 3e-5
    for_grpo = training_recipe.shared_overrides_for(RECIPES / "grpo.yaml", shared)
    assert for_grpo == shared
    _, grpo_args = training_recipe.load_recipe(RECIPES / "grpo.yaml", for_grpo)
    assert grpo_args["vllm_mode"] == "colocate" and grpo_args["num_generations"] == 4
    typo = training_recipe.shared_overrides_for(RECIPES / "sft.yaml", ["num_generaitons=4"])
    with pytest.raises(errors.RecipeError, match="num_generaitons"):
        training_recipe.load_recipe(RECIPES / "sft.yaml", typo)
    with pytest.raises(errors.RecipeError, match="num_generations"):
        training_recipe.load_recipe(RECIPES / "sft.yaml", ["num_generations=4"])


@pytest.mark.parametrize("override, key", [
    ("lora.dropout=1.5", "lora.dropout"), ("lora.r=0", "lora.r"), ("warmup_sft.steps=-1", "warmup_sft.steps"),
    ("warmup_sft.enabled=maybe", "warmup_sft.enabled"), ("gail.reward_form=linear", "gail.reward_form"),
    ("gail.max_history=-2", "gail.max_history"), ("gail.num_layers=0", "gail.num_layers"),
    ("gail.batch_size=1", "gail.batch_size"), ("dtype=float8", "dtype"), ("heldout_rows=-1", "heldout_rows"),
    ("vllm_server.gpu_memory_utilization=1.5", "vllm_server.gpu_memory_utilization"),
    ("lora=[1, 2]", "lora"),
])
def test_a_bad_value_fails_in_post_init_naming_the_key_and_the_file(override, key):
    with pytest.raises(errors.RecipeError, match=rf"grail\.yaml.*{key}"):
        training_recipe.load_recipe(RECIPES / "grail.yaml", [override])
    # The dataclass alone fails the same way, in __post_init__.
    section, _, name = key.rpartition(".")
    kind = training_recipe.SECTIONS[section] if section else training_recipe.ScriptArguments
    with pytest.raises(errors.RecipeError, match=key) as caught:
        kind(**{name: training_recipe.parse_override(override)[1]})
    assert "__post_init__" in {entry.name for entry in caught.traceback}


def test_every_recipe_field_has_help_and_train_help_lists_them(capsys):
    import dataclasses

    from grail_sim import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    keys = []
    for item in dataclasses.fields(training_recipe.ScriptArguments):
        assert item.metadata["help"], item.name
        keys.append(item.name)
        section = training_recipe.SECTIONS.get(item.name)
        for sub in dataclasses.fields(section) if section else ():
            assert sub.metadata["help"], f"{item.name}.{sub.name}"
            keys.append(f"{item.name}.{sub.name}")
    assert set(training_recipe.SCRIPT_KEYS) == {"chat_template", "system_prompt", "trainer", "dtype", "rewards",
                                                "train_split", "max_train_rows", "lora", "quantization",
                                                "warmup_sft", "gail", "heldout_rows", "accelerate_config",
                                                "vllm_server", "dataset_mixture", "eval_split", "max_eval_samples",
                                                "init_kl_coeff", "kl_target", "kl_horizon",
                                                "maxent_tau", "maxent_q_temperature", "maxent_q_epsilon",
                                                "maxent_length_normalize_ref", "reasoning_vocab_size"}
    for key in keys:
        assert f"\n  {key}" in text or f"\n    {key}" in text, key
    assert "GRPOConfig field" in text and "GAIL_USE" in text and "0 = full history" in text


def test_sections_default_once_and_lora_becomes_a_peft_config():
    script, _ = training_recipe.load_recipe(RECIPES / "grail.yaml")
    peft_config = script.lora.to_peft()
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (16, 32, 0.05)
    assert set(peft_config.target_modules) == set(script.lora.target_modules)
    assert script["lora"]["r"] == 16  # read by key too (benchmarks/choice_probe.py)
    assert peft_config.layers_to_transform is None
    top = settings_lib.LoraSettings(top_layers=8).to_peft(30)
    assert top.layers_to_transform == list(range(22, 30))
    with pytest.raises(errors.RecipeError, match="lora.top_layers 40 exceeds the model's 30"):
        settings_lib.LoraSettings(top_layers=40).to_peft(30)
    with pytest.raises(errors.RecipeError, match="lora.top_layers"):
        settings_lib.LoraSettings(top_layers=0)
    defaults = training_recipe.ScriptArguments()
    assert defaults.warmup_sft == settings_lib.WarmupSettings() and defaults.gail is None
    assert training_recipe.ScriptArguments(gail={}).gail == settings_lib.GailSettings()


def test_dataset_missing_a_contract_column_fails_naming_it(tmp_path):
    from datasets import Dataset, DatasetDict



    rows = make_prompt_rows(4)
    for row in rows:
        del row["gold_index"]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(errors.TrainingDataError, match="gold_index"):
        training_data.load_training_data(tmp_path / "ds", "train", need_grail=False, max_rows=None, seed=0)


def test_warmup_target_teaches_the_answer_format():
    from grail_sim import answers

    row = make_prompt_rows(1)[0]
    target = training_warmup.warmup_target(row, "Pick {title}")
    assert answers.has_format(target)
    assert answers.parse_choice(target, row["n_options"]) == row["gold_index"]
    assert "Video about" in target


def test_warmup_target_ends_with_the_chat_templates_end_of_turn(tokenizer_dir):
    from transformers import AutoTokenizer



    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    row = make_prompt_rows(1)[0]
    prompt_text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    turn = training_warmup.assistant_turn(tokenizer, row["prompt"], prompt_text, "<think>t</think><answer>2</answer>")
    # The token generation stops on (generation_config.eos_token_id), not the chat's next <|im_start|>.
    assert turn == "<think>t</think><answer>2</answer><|im_end|>\n"
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id


def test_balanced_warmup_order_does_not_teach_the_position_prior():
    import random
    from collections import Counter

    from datasets import Dataset



    golds = [1] * 60 + [2] * 25 + [3] * 10 + [4] * 5  # skewed like the real data
    data = Dataset.from_dict({"gold_index": golds})
    order = training_warmup.balanced_order(data, random.Random(0))
    first = Counter(golds[i] for i in order[:40])
    assert set(first.values()) == {10}  # each position equally often
    assert len(set(order[:20])) == 20


def test_warmup_think_template_fields():


    row = make_prompt_rows(1)[0]
    target = training_warmup.warmup_target(row, "Next: {short_title} [{channel}] #{index}")
    title = json.loads(row["slate_items"])[row["gold_index"] - 1]["title"]
    assert target.startswith(f"<think>Next: {' '.join(title.split()[:5])} [Channel {row['gold_index']}]")


# --- training through the CLI ---------------------------------------------------------------------


@pytest.mark.slow
def test_grail_trains_through_the_cli_and_resumes_after_interruption(tiny_model_dir, prompt_dataset, tmp_path):
    import shutil

    out = tmp_path / "grail_gun"
    assert _train_cli("grail", prompt_dataset, tiny_model_dir, out) == 0
    for name in ("final/adapter_config.json", "final/grail_sim.json", "trainer_state.json", "metrics.jsonl",
                 "resolved_recipe.yaml", "discriminator/discriminator_state.json",
                 "checkpoint-2/discriminator/trainable.safetensors"):
        assert (out / name).exists(), name
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["base_model"] == str(tiny_model_dir) and provenance["rewards"][-1] == "gail"
    assert abs(sum(provenance["reward_weights"]) - 1) < 1e-9
    rows = _metric_rows(out / "metrics.jsonl")
    steps = [row for row in rows if "reward" in row]
    assert [row["step"] for row in steps] == [1, 2]
    for key in ("rewards/answer_accuracy/mean", "rewards/gail/mean", "gail/accuracy", "gail/p_human_gold",
                "gail/n_positive", "gail/loss"):
        assert key in steps[0], key
    assert steps[0]["gail/n_positive"] == 2  # one per prompt of the step
    assert any("warmup_loss" in row for row in rows)

    # An interruption after checkpoint-1: the last checkpoint and the declared outputs are gone, and
    # a half-written checkpoint folder is left behind.
    shutil.rmtree(out / "checkpoint-2")
    shutil.rmtree(out / "final")
    (out / "metrics.jsonl").unlink()
    (out / "checkpoint-7").mkdir()
    assert _train_cli("grail", prompt_dataset, tiny_model_dir, out, max_steps=3) == 0
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["resumed_from"] == str(out / "checkpoint-1")
    assert provenance["global_step"] == 3
    steps = [row["step"] for row in _metric_rows(out / "metrics.jsonl") if "reward" in row]
    assert steps == [1, 2, 3]  # step 2 is redone once, never duplicated
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3


@pytest.mark.slow
def test_changed_recipe_starts_over_instead_of_resuming(tiny_model_dir, prompt_dataset, tmp_path):
    out = tmp_path / "grpo_gun"
    assert _train_cli("grpo", prompt_dataset, tiny_model_dir, out, max_steps=1) == 0
    assert _train_cli("grpo", prompt_dataset, tiny_model_dir, out, "learning_rate=0.5", max_steps=1) == 0
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["resumed_from"] is None and provenance["global_step"] == 1


def test_cli_reports_a_bad_recipe_without_a_traceback(tmp_path, capsys, prompt_dataset):
    from grail_sim import cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer: grpo\nrewards: [answer_accuracy, vibes]\n")
    code = cli.main(["train", "--recipe", str(recipe), "--dataset", str(prompt_dataset), "--model", str(tmp_path),
                     "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "vibes" in err and "answer_accuracy" in err


@pytest.mark.slow
def test_the_entropy_bonus_is_logged_and_gail_use_zero_falls_back_to_grpo(tiny_model_dir, prompt_dataset,
                                                                            tmp_path, monkeypatch):
    assert _train_cli("grpo-entropy", prompt_dataset, tiny_model_dir, tmp_path / "entropy", max_steps=1) == 0
    steps = [row for row in _metric_rows(tmp_path / "entropy" / "metrics.jsonl") if "reward" in row]
    assert steps[0]["entropy_coef"] == pytest.approx(0.01)

    monkeypatch.setenv("GAIL_USE", "0")
    assert _train_cli("grail", prompt_dataset, tiny_model_dir, tmp_path / "nogail", max_steps=1) == 0
    provenance = json.loads((tmp_path / "nogail" / "final" / "grail_sim.json").read_text())
    assert provenance["rewards"] == ["answer_accuracy", "format"]
    assert not (tmp_path / "nogail" / "discriminator").exists()


def test_checkpoints_are_dropped_when_the_base_model_is_rebuilt_in_place(tmp_path):
    """A rebuilt model (or regenerated prompts) at the same path must not resume old checkpoints."""


    model, data, out = tmp_path / "model", tmp_path / "data", tmp_path / "out"
    for folder in (model, data, out / "checkpoint-3"):
        folder.mkdir(parents=True)
    (model / "tokenizer_config.json").write_text('{"eos_token": "<|im_start|>"}')
    (data / "rows.arrow").write_bytes(b"rows")
    first = training_resume.run_fingerprint({"trainer": "grpo"}, {"max_steps": 6}, data, model)
    training_resume.prepare_output(out, first)
    assert (out / "checkpoint-3").is_dir()
    assert training_resume.run_fingerprint({"trainer": "grpo"}, {"max_steps": 9}, data, model) == first  # resumable key
    (model / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}')
    rebuilt = training_resume.run_fingerprint({"trainer": "grpo"}, {"max_steps": 6}, data, model)
    assert rebuilt != first
    training_resume.prepare_output(out, rebuilt)
    assert not (out / "checkpoint-3").exists()


def test_a_restarted_server_mode_job_keeps_its_checkpoints(tmp_path):
    """Every start of a vllm_mode: server run passes fresh ports (vllm_server.orchestrate): where the
    server listens and logs must not change the fingerprint, or a requeued job restarts from zero."""
    model, data, out = tmp_path / "model", tmp_path / "data", tmp_path / "out"
    for folder in (model, data, out / "checkpoint-3"):
        folder.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (data / "rows.arrow").write_bytes(b"rows")
    recipe = str(RECIPES / "gpu" / "grail.yaml")

    def fingerprint(port: int, *more: str) -> str:
        overrides = ["vllm_server_host=127.0.0.1", f"vllm_server_port={port}", f"vllm_group_port={port + 1}",
                     f"vllm_server.log=logs/{port}.log", f"vllm_server.timeout_s={port}", *more]
        script, grpo = training_recipe.load_recipe(recipe, overrides, None)
        assert grpo["vllm_mode"] == "server" and grpo["vllm_server_port"] == port
        return training_resume.run_fingerprint(script.as_dict(), grpo, data, model)

    first = fingerprint(41001)
    training_resume.prepare_output(out, first)
    assert fingerprint(52317) == first
    training_resume.prepare_output(out, fingerprint(52317))
    assert (out / "checkpoint-3").is_dir()
    assert fingerprint(41001, "learning_rate=1e-6") != first  # what it trains still counts
    assert fingerprint(41001, "vllm_server.gpu_memory_utilization=0.5") != first


def test_evaluation_of_an_adapter_depends_on_its_base(tmp_path):


    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir()
    adapter.mkdir()
    (base / "config.json").write_text("{}")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    before = evaluation_provenance.adapter_base_sha256(adapter)
    (base / "config.json").write_text('{"changed": true}')
    assert before and evaluation_provenance.adapter_base_sha256(adapter) != before
    assert evaluation_provenance.adapter_base_sha256(base) is None  # a full model folder has no base


def test_bare_hydra_overrides_reach_the_recipe_with_the_same_validation(tmp_path, capsys):
    from grail_sim import cli
    from grail_sim.training.cli import hydra_override

    assert hydra_override("training.learning_rate=1e-5") == "learning_rate=1e-5"
    assert hydra_override("gail.weight=0.5") == "gail.weight=0.5"
    base = ["train", "--recipe", str(RECIPES / "grpo.yaml"), "--dataset", str(tmp_path), "--model", str(tmp_path),
            "--out", str(tmp_path / "out")]
    assert cli.main(base + ["training.kl_coef=0.1"]) == 2  # a PPO key: unknown, named, as with --set
    assert "unknown key(s) ['kl_coef']" in capsys.readouterr().err
    assert cli.main(base + ["--set", "max_train_rows=5", "training.max_train_rows=-1"]) == 2  # bare ones apply last
    assert "max_train_rows must be >= 0" in capsys.readouterr().err
    assert cli.main(base + ["oops"]) == 2
    assert "'oops' is not an override" in capsys.readouterr().err


@pytest.mark.parametrize(("recipe", "bad", "named"), [
    ("grpo", ["per_device_train_batch_size=3", "num_generations=2"], "num_generations"),
    ("sft", ["lr_scheduler_type=sometimes"], "sometimes"),
])
def test_a_value_trl_rejects_fails_before_any_model_loads(recipe, bad, named, tmp_path, capsys):
    """TRL's config is built first: its error is one line naming the recipe, in a second, although
    the model and prompts named here do not exist (the model used to load first, then a traceback)."""
    from grail_sim import cli

    argv = ["train", "--recipe", str(RECIPES / f"{recipe}.yaml"), "--dataset", str(tmp_path / "no-prompts"),
            "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "out"), "--set", "report_to=none"]
    for override in bad:
        argv += ["--set", override]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"recipe {RECIPES / f'{recipe}.yaml'}: TRL's" in error and named in error, error
    assert "no-model" not in error
