"""The train stage end to end on the tiny model: recipes, the real CLI, resume, outputs (Contract 3)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from grail_sim import errors as errors
from grail_sim.evaluation import provenance as evaluation_provenance
from grail_sim.training import data as training_data
from grail_sim.training import recipe as training_recipe
from grail_sim.training import resume as training_resume

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
# Keeps a tiny-model run to a few seconds per step: 2 prompts x 2 completions, 8 new tokens.
TINY = ["per_device_train_batch_size=4", "num_generations=2", "max_completion_length=8", "save_steps=1",
        "report_to=none", "gail_batch_size=4"]


def _train_cli(recipe: str, dataset: Path, model: Path, out: Path, *extra: str, max_steps: int = 2) -> int:
    from grail_sim import cli

    argv = ["train", "--config", str(RECIPES / f"{recipe}.yaml"), "--dataset", str(dataset), "--model", str(model),
            "--out", str(out), "--max_steps", str(max_steps), "--threads", "1"]
    for override in TINY + list(extra):
        if recipe != "grail" and override.startswith("gail_"):
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


def _parse(name_or_path, *flags: str, overrides: dict | None = None, defaults=None):
    """The recipe as `grail-sim train` reads it on a CPU machine, with made-up dataset, model and
    output paths."""
    from grail_sim.training.parser import parse_recipe

    defaults = defaults or _cpu_defaults
    path = name_or_path if isinstance(name_or_path, Path) else RECIPES / f"{name_or_path}.yaml"
    argv = ["--config", str(path), "--dataset", "prompts", "--model", "model", "--out", "out", *flags]
    return parse_recipe(argv, overrides, defaults=defaults)


def _cpu_defaults(trainer):
    from grail_sim.training.run import run_defaults

    return run_defaults(trainer, cuda=False)


@pytest.mark.parametrize("name", ["grpo", "grail", "maxent", "grpo-entropy"])
def test_shipped_recipes_resolve_to_valid_grpo_configs(name):
    from trl import GRPOConfig

    from grail_sim.training import rewards

    recipe = _parse(name)
    config = recipe.config
    assert isinstance(config, GRPOConfig) and config.trainer == recipe.trainer == name
    for reward in config.reward_funcs:
        rewards.get_reward(reward)
    assert config.max_completion_length <= 32 and config.num_generations >= 2
    assert config.uses_gail == (name == "grail") and len(config.reward_weights) == len(config.reward_names)
    assert abs(sum(config.reward_weights) - 1) < 1e-9 and (config.use_cpu, config.bf16) == (True, False)
    if name == "grpo-entropy":
        assert config.entropy_coef > 0


def test_unknown_recipe_key_fails_naming_it(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("trainer: grpo\nlearning_rate: 1.0e-5\nkl_coef: 0.1\n")  # a PPO key, not a GRPOConfig field
    with pytest.raises(errors.RecipeError, match=r"unknown key\(s\) \['kl_coef'\] in recipe .*bad.yaml"):
        _parse(recipe)
    recipe.write_text("trainer: grpo\nlora: {r: 8}\n")  # the old nested section: the keys are flat now
    with pytest.raises(errors.RecipeError, match=r"\['lora'\] in recipe .*bad.yaml"):
        _parse(recipe)
    with pytest.raises(errors.RecipeError, match=r"gail.weight=0.5.*flat"):
        _parse("grail", "gail.weight=0.5")
    with pytest.raises(errors.RecipeError, match=r"grpo.yaml: unknown argument.*--kl_coef"):
        _parse("grpo", "--kl_coef", "0.1")


def test_a_recipe_inherits_its_base_and_names_a_registered_trainer(tmp_path):
    """grail.yaml is grpo.yaml plus its trainer and discriminator: every other value comes from the base."""
    grail, grpo = _parse("grail"), _parse("grpo")
    assert grail.model == grpo.model and grail.config.reward_funcs == grpo.config.reward_funcs
    assert grail.config.learning_rate == grpo.config.learning_rate and grail.config.max_steps == grpo.config.max_steps
    assert (grail.trainer, grpo.trainer) == ("grail", "grpo") and grail.config.uses_gail and not grpo.config.uses_gail
    assert training_recipe.recipe_chain(RECIPES / "grail.yaml") == [RECIPES / "grail.yaml",
                                                                     (RECIPES / "grpo.yaml").resolve()]
    (tmp_path / "parent.yaml").write_text("trainer: grpo\nlora_r: 4\nlora_alpha: 8\nlearning_rate: 0.5\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nlora_r: 2\n")
    child = _parse(tmp_path / "child.yaml")
    assert (child.model.lora_r, child.model.lora_alpha, child.config.learning_rate) == (2, 8, 0.5)
    (tmp_path / "parent.yaml").write_text("base: child.yaml\ntrainer: grpo\n")
    with pytest.raises(errors.RecipeError, match=r"child.yaml: base: child.yaml makes a loop"):
        _parse(tmp_path / "child.yaml")
    for text, message in (("max_steps: 1\n", r"none.yaml has no trainer: key; one of sft, grpo, grail"),
                          ("trainer: ppo\n", r"none.yaml names trainer 'ppo'; one of sft, grpo"),
                          ("trainer: grpo\ngail_weight: 0.5\n", r"none.yaml: \['gail_weight'\] apply to trainer "
                                                                r"'grail' only \(this recipe's trainer is 'grpo'\)"),
                          ("trainer: grail\nmaxent_tau: 0.5\n", r"\['maxent_tau'\] apply to trainer 'maxent'")):
        (tmp_path / "none.yaml").write_text(text)
        with pytest.raises(errors.RecipeError, match=message):
            _parse(tmp_path / "none.yaml")


def test_a_value_is_set_in_three_places_and_the_command_line_wins(tmp_path, monkeypatch):
    """Precedence, written once (grail_sim.training.parser): the recipe file < the workflow config
    (train.overrides, the environment's GAIL_* in it, then train.max_steps) < the command line, in any
    of its spellings."""
    from grail_sim import config
    from grail_sim.training.cli import workflow_overrides

    assert _parse("grail").config.learning_rate == 1e-4  # the recipe file
    section = config.from_arguments("train", grail_config_args(tmp_path, {"overrides": {"learning_rate": 2e-5},
                                                                         "max_steps": 4}),
                                    {"GAIL_WEIGHT": "0.6"})["train"]
    overrides = workflow_overrides(section)
    assert overrides == {"learning_rate": 2e-5, "gail_weight": "0.6", "max_steps": 4}
    configured = _parse("grail", overrides=overrides)
    assert (configured.config.learning_rate, configured.config.gail_weight, configured.config.max_steps) == \
        (2e-5, 0.6, 4)
    for flags in (["--learning_rate", "3e-5", "--gail_weight", "0.1", "--max_steps", "5"],
                  ["--learning-rate", "3e-5", "--gail-weight", "0.1", "--max-steps", "5"],
                  ["--set", "learning_rate=3e-5", "--set", "gail_weight=0.1", "--set", "max_steps=5"],
                  ["learning_rate=3e-5", "gail_weight=0.1", "training.max_steps=5"]):
        cli = _parse("grail", *flags, overrides=overrides)
        assert (cli.config.learning_rate, cli.config.gail_weight, cli.config.max_steps) == (3e-5, 0.1, 5), flags
        assert cli.values["learning_rate"] == 3e-5 and cli.values["max_steps"] == 5
    # The defaults of the machine sit under the recipe: a recipe's own value wins over them.
    assert _parse("grpo", defaults=lambda trainer: {"logging_steps": 7, "save_steps": 99}).config.logging_steps == 1


def grail_config_args(tmp_path, train: dict):
    """The namespace `config.from_arguments` reads: a workflow config file with this train section."""
    import argparse

    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"train": train}))
    return argparse.Namespace(config=path, config_json=None)


def test_the_seeds_command_lines_are_accepted_verbatim(tmp_path):
    """open-r1's and the seed launchers' spellings: --config, TRL flags, reward_funcs, model.* groups."""
    seed_recipe = tmp_path / "seed.yaml"
    seed_recipe.write_text("trainer: grpo\nreward_funcs: [answer_accuracy, format]\nreward_weights: [1.0, 1.0]\n"
                           "learning_rate: 1.0e-5\nnum_generations: 2\nuse_peft: true\n")
    recipe = _parse(seed_recipe, "--per_device_train_batch_size", "2", "model.reasoning_vocab_size=64",
                    "training.learning_rate=2e-5", "--reward_funcs", "answer_accuracy", "format")
    assert recipe.config.per_device_train_batch_size == 2 and recipe.model.reasoning_vocab_size == 64
    assert recipe.config.learning_rate == 2e-5 and recipe.config.reward_weights == [0.5, 0.5]
    assert recipe.config.reward_funcs == ["answer_accuracy", "format"]


@pytest.mark.slow
def test_the_seeds_launch_line_trains_the_tiny_model(tiny_model_dir, prompt_dataset, tmp_path):
    """The seed launchers' command line, verbatim, runs end to end: a recipe of TRL fields with
    `reward_funcs`, `--config`, a TRL flag and a Hydra `model.` override."""
    from grail_sim import cli

    seed_recipe = tmp_path / "recipe.yaml"
    seed_recipe.write_text("trainer: grpo\nreward_funcs: [answer_accuracy, format]\nuse_peft: true\n"
                           "lora_target_modules: [q_proj, v_proj]\nnum_generations: 2\nmax_completion_length: 8\n"
                           "max_steps: 1\nreport_to: none\n")
    out = tmp_path / "out"
    assert cli.main(["train", "--config", str(seed_recipe), "--dataset", str(prompt_dataset), "--model",
                     str(tiny_model_dir), "--out", str(out), "--per_device_train_batch_size", "2",
                     "model.reasoning_vocab_size=64", "--threads", "1"]) == 0
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["global_step"] == 1 and provenance["reasoning_vocab_size"] == 64
    assert provenance["rewards"] == ["answer_accuracy", "format"]
    resolved = training_io_yaml(out / "resolved_recipe.yaml")
    assert resolved["values"]["per_device_train_batch_size"] == 2 and resolved["values"]["reasoning_vocab_size"] == 64


def training_io_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_config_override_reaches_only_the_recipes_that_read_it(caplog):
    """The workflow passes each training rule only these, so a key reruns exactly its trainers; a key
    no trainer knows is kept, to fail naming itself."""
    from grail_sim.training.parser import overrides_read_by

    overrides = {"gail_weight": 0.5, "num_generations": 2, "learning_rate": 1e-5, "think_template": "",
                 "vllm_mode": "colocate", "maxent_tau": 0.3, "num_generaitons": 4}
    with caplog.at_level("INFO", logger="grail_sim.training.parser"):
        read = {name: overrides_read_by(RECIPES / f"{name}.yaml", overrides) for name in ("sft", "grpo", "grail",
                                                                                          "maxent")}
    assert read["grail"] == {"gail_weight": 0.5, "num_generations": 2, "learning_rate": 1e-5,
                             "vllm_mode": "colocate", "num_generaitons": 4}
    assert read["grpo"] == {"num_generations": 2, "learning_rate": 1e-5, "vllm_mode": "colocate",
                            "num_generaitons": 4}
    assert read["maxent"] == {**read["grpo"], "maxent_tau": 0.3}
    assert read["sft"] == {"learning_rate": 1e-5, "think_template": "", "num_generaitons": 4}
    assert "vllm_mode skipped for" in caplog.text
    with pytest.raises(errors.RecipeError, match=r"num_generaitons.*train.overrides"):
        _parse("sft", overrides=read["sft"])
    with pytest.raises(errors.RecipeError, match="num_generations"):
        _parse("sft", "--num_generations", "4")  # the command line names one run: not filtered


def test_environment_overrides_land_in_train_overrides_and_the_command_line_wins(tmp_path):
    from grail_sim import config

    env = {"GAIL_USE": "0", "GAIL_WEIGHT": "0.7", "GAIL_ALPHA": "2", "GAIL_LR": "1e-3",
           "GAIL_DISC_MODEL": "/models/encoder", "GAIL_DEVICE": "cuda:1", "GRAIL_MAX_HISTORY": "0",
           "UNRELATED": "x", "GAIL_SEED": "9"}
    values: dict = {}
    messages = config.apply_environment(values, env)
    overrides = values["train"]["overrides"]
    assert overrides == {"gail_use": "0", "gail_weight": "0.7", "gail_alpha": "2", "gail_lr": "1e-3",
                         "gail_disc_model": "/models/encoder", "gail_device": "cuda:1", "gail_max_history": "0"}
    assert values["prompts"]["max_history"] == 0
    assert any("GAIL_USE" in m and "gail_use" in m for m in messages)
    config.apply_environment(empty := {}, {"GAIL_USE": "", "GAIL_DEVICE": "  "})
    assert "train" not in empty
    settings = _parse("grail", overrides=overrides).config
    assert (settings.gail_use, settings.gail_weight, settings.gail_alpha, settings.gail_lr) == (False, 0.7, 2.0, 1e-3)
    assert (settings.gail_disc_model, settings.gail_device, settings.gail_max_history) == \
        ("/models/encoder", "cuda:1", 0)
    assert _parse("grail", "--gail_use", "true", overrides=overrides).config.uses_gail
    with pytest.raises(errors.RecipeError, match=r"grail\.yaml.*gail_weight.*heavy"):
        _parse("grail", overrides={"gail_weight": "heavy"})


@pytest.mark.parametrize("override, key", [
    ("lora_dropout=1.5", "lora_dropout"), ("lora_r=0", "lora_r"), ("gail_reward_form=linear", "gail_reward_form"),
    ("gail_max_history=-2", "gail_max_history"), ("gail_num_layers=0", "gail_num_layers"),
    ("gail_batch_size=1", "gail_batch_size"), ("dtype=float8", "dtype"), ("heldout_rows=-1", "heldout_rows"),
    ("gail_human_fraction=1.0", "gail_human_fraction"), ("max_train_rows=-1", "max_train_rows"),
    ("kl_target=0", "kl_target"), ("use_peft=maybe", "use_peft"), ("learning_rate=fast", "learning_rate"),
])
def test_a_bad_value_fails_naming_the_key_and_the_file(override, key):
    with pytest.raises(errors.RecipeError, match=rf"grail\.yaml: .*{key}") as caught:
        _parse("grail", override)
    assert "\n" not in str(caught.value)


def test_every_recipe_field_has_help_and_train_help_lists_them(capsys):
    from grail_sim import cli
    from grail_sim.training import arguments

    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for kind in (arguments.DataArguments, arguments.PolicyModelConfig, arguments.GrpoRecipe, arguments.SftRecipe):
        names = [item.name for item in arguments.project_fields(kind)]
        assert names, kind
        for item in arguments.project_fields(kind):
            assert item.metadata["help"], item.name
            assert f"\n  {item.name} (default: " in text, item.name
    assert {"gail_weight", "maxent_tau", "kl_target", "reward_funcs", "vllm_server_log", "think_template",
            "lora_top_layers", "reasoning_vocab_size", "max_train_rows", "trainer"} <= \
        {item.name for kind in (arguments.DataArguments, arguments.PolicyModelConfig, arguments.GrpoRecipe,
                                arguments.SftRecipe) for item in arguments.project_fields(kind)}
    assert "TRL's GRPOConfig" in text and "GAIL_USE" in text and "0 = the full history" in text


def test_lora_fields_become_trls_peft_config():
    from grail_sim.training.policy import lora_config

    model = _parse("grail").model
    peft_config = lora_config(model, 30)
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (16, 32, 0.05)
    assert set(peft_config.target_modules) == set(model.lora_target_modules)
    assert peft_config.layers_to_transform is None
    top = _parse("sft").model
    assert lora_config(top, 30).layers_to_transform == [28, 29]
    with pytest.raises(errors.RecipeError, match="lora_top_layers 2 exceeds the model's 1"):
        lora_config(top, 1)
    assert lora_config(_parse("grail", "--use_peft", "false").model, 30) is None


def test_dataset_missing_a_contract_column_fails_naming_it(tmp_path):
    from datasets import Dataset, DatasetDict



    rows = make_prompt_rows(4)
    for row in rows:
        del row["gold_index"]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(errors.TrainingDataError, match="gold_index"):
        training_data.load_training_data(tmp_path / "ds", "train", need_grail=False, max_rows=None, seed=0)


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
    recipe.write_text("trainer: grpo\nreward_funcs: [answer_accuracy, vibes]\n")
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
    first = training_resume.run_fingerprint({"trainer": "grpo", "max_steps": 6}, data, model)
    training_resume.prepare_output(out, first)
    assert (out / "checkpoint-3").is_dir()
    assert training_resume.run_fingerprint({"trainer": "grpo", "max_steps": 9}, data, model) == first  # resumable key
    (model / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}')
    rebuilt = training_resume.run_fingerprint({"trainer": "grpo", "max_steps": 6}, data, model)
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
        flags = ["vllm_server_host=127.0.0.1", f"vllm_server_port={port}", f"vllm_group_port={port + 1}",
                 f"vllm_server_log=logs/{port}.log", f"vllm_server_timeout={port}", *more]
        parsed = _parse(Path(recipe), *flags)
        assert parsed.config.vllm_mode == "server" and parsed.config.vllm_server_port == port
        return training_resume.run_fingerprint(parsed.values, data, model)

    first = fingerprint(41001)
    training_resume.prepare_output(out, first)
    assert fingerprint(52317) == first
    training_resume.prepare_output(out, fingerprint(52317))
    assert (out / "checkpoint-3").is_dir()
    assert fingerprint(41001, "learning_rate=1e-6") != first  # what it trains still counts
    assert fingerprint(41001, "vllm_gpu_memory_utilization=0.5") != first


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


def test_bare_and_hydra_overrides_are_flags_with_the_same_validation(tmp_path, capsys):
    from grail_sim import cli

    base = ["train", "--config", str(RECIPES / "grpo.yaml"), "--dataset", str(tmp_path), "--model", str(tmp_path),
            "--out", str(tmp_path / "out")]
    assert cli.main(base + ["training.kl_coef=0.1"]) == 2  # a PPO key: unknown, named, as with --set
    assert "--kl_coef" in capsys.readouterr().err
    assert cli.main(base + ["--set", "max_train_rows=5", "training.max_train_rows=-1"]) == 2  # the later one wins
    assert "max_train_rows must be a number >= 0" in capsys.readouterr().err
    assert cli.main(base + ["--set", "oops"]) == 2
    assert "'oops' is not an override" in capsys.readouterr().err
    # A word after a flag that takes a value is that value, not an override.
    recipe = _parse("grpo", "--system_prompt", "answer=now")
    assert recipe.config.system_prompt == "answer=now"


@pytest.mark.parametrize(("recipe", "bad", "named"), [
    ("grpo", ["per_device_train_batch_size=3", "num_generations=2"], "num_generations"),
    ("sft", ["lr_scheduler_type=sometimes"], "sometimes"),
])
def test_a_value_trl_rejects_fails_before_any_model_loads(recipe, bad, named, tmp_path, capsys):
    """TRL's config is built first: its error is one line naming the recipe, in a second, although
    the model and prompts named here do not exist (the model used to load first, then a traceback)."""
    from grail_sim import cli

    argv = ["train", "--config", str(RECIPES / f"{recipe}.yaml"), "--dataset", str(tmp_path / "no-prompts"),
            "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "out"), "--set", "report_to=none"]
    for override in bad:
        argv += ["--set", override]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"recipe {RECIPES / f'{recipe}.yaml'}: " in error and named in error, error
    assert "no-model" not in error
