"""One schema (src/grail_sim/resources/config.schema.yaml) validates config/config.yaml, fills
every default, and is what the stage CLIs resolve their sections with."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from grail_sim import config as grail_config
from grail_sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = str(grail_config.SCHEMA_PATH)


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_shipped_config_is_valid(config):
    validate(config, SCHEMA)


def test_snakemake_and_the_cli_fill_the_same_defaults(config):
    by_snakemake = copy.deepcopy(config)
    validate(by_snakemake, SCHEMA)  # set_default=True: Snakemake fills the schema's defaults
    assert by_snakemake == grail_config.resolve(config)
    assert by_snakemake["evaluate"]["generate_rows"] == 4 and by_snakemake["prompts"]["max_history"] == 12


def _leaves(schema: dict, path: str = ""):
    """(path, subschema) of every key that is not itself an object of named keys."""
    for key, sub in schema.get("properties", {}).items():
        where = f"{path}.{key}" if path else key
        if sub.get("type") == "object" and "properties" in sub and "$ref" not in sub:
            yield from _leaves(sub, where)
        else:
            yield where, sub


def test_every_key_has_one_default_and_a_type():
    schema = grail_config.load_schema()
    without = [path for path, sub in _leaves(schema) if "default" not in sub]
    # Optional overrides that have no value unless a user sets one (their rules fall back to the package).
    assert sorted(without) == ["report.math_template", "report.model_template", "report.portfolio_template",
                               "report.simulation_template"]
    assert all("type" in sub or "$ref" in sub for _, sub in _leaves(schema))


def test_config_file_repeats_no_default(config):
    """config/config.yaml sets only what differs from the schema or is the user's choice to see."""
    defaults = grail_config.resolve({})
    repeated = [f"{section}.{key}" for section, values in config.items() if isinstance(values, dict)
                for key, value in values.items() if defaults[section].get(key) == value]
    assert sorted(repeated) == ["data.source", "model.name_or_path"]  # the two choices a user makes first


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c.update(unknown_section={}), "unknown_section"),
        (lambda c: c["model"].update(name_or_pth="x"), "name_or_pth"),
        (lambda c: c["data"].update(source="s3"), "s3"),
        (lambda c: c.update(issues=["guns"]), "guns"),
        (lambda c: c.update(seed=42), "seed"),  # read by no rule: removed
    ],
)
def test_bad_key_or_value_fails_naming_it(config, mutate, named):
    mutate(config)
    with pytest.raises(WorkflowError, match=named):
        validate(config, SCHEMA)
    with pytest.raises(ConfigError, match=named):
        grail_config.resolve(config)


def test_a_stage_refuses_a_section_it_does_not_read():
    with pytest.raises(ConfigError, match=r"\['train'\].*grail-sim prompts"):
        grail_config.stage_config("prompts", {"prompts": {}, "train": {}}, source="--config-json")


def test_environment_overrides_are_config_values_with_one_meaning_of_zero():
    values: dict = {}
    messages = grail_config.apply_environment(values, {"GRAIL_MAX_HISTORY": "0", "GAIL_USE": "false", "GAIL_LR": "",
                                                        "GRAIL_SHOW_IDS": "1"})
    assert values == {"prompts": {"max_history": 0, "show_ids": True},
                      "train": {"overrides": {"gail_use": "false", "gail_max_history": "0"}}}
    assert len(messages) == 4 and all("overrides" in m for m in messages)
    resolved = grail_config.resolve(values)
    assert resolved["prompts"]["max_history"] == 0  # 0 = full history, in prompts and in the discriminator
    with pytest.raises(ConfigError, match="GRAIL_MAX_HISTORY"):
        grail_config.apply_environment({}, {"GRAIL_MAX_HISTORY": "all"})


def test_cli_by_hand_reads_its_section_from_a_file(tmp_path, capsys):
    from grail_sim import cli

    path = tmp_path / "my.yaml"
    path.write_text("prompts:\n  max_history: 3\n")
    assert cli.main(["config", "--config", str(path), "--section", "prompts"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["prompts"]["max_history"] == 3 and shown["prompts"]["max_prompt_tokens"] == 1024
    assert json.loads(json.dumps(shown))  # plain data, as provenance records it


def test_every_recipe_parses():
    for recipe in (ROOT / "config" / "recipes").glob("*.yaml"):
        assert isinstance(yaml.safe_load(recipe.read_text()), dict), recipe


def test_config_shows_any_section_and_names_an_unknown_one(capsys):
    from grail_sim import cli

    assert cli.main(["config", "--section", "issues"]) == 0  # a list, not a mapping
    assert yaml.safe_load(capsys.readouterr().out) == {"issues": ["gun"]}
    assert cli.main(["config", "--section", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err


def _documented_defaults():
    """(page, dotted key, documented default) of each `| key | default | meaning |` table row."""
    import re

    rows = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        in_table = False
        for line in page.read_text().splitlines():
            if line.startswith("| key | default |"):
                in_table = True
                continue
            if in_table and not line.startswith("|"):
                in_table = False
            match = re.match(r"^\| `([\w.]+)` \| ([^|]+) \|", line) if in_table else None
            if match:
                key = match.group(1) if "." in match.group(1) else f"{page.stem}.{match.group(1)}"
                rows.append((page.name, key, match.group(2).strip().strip("`")))
    return rows


def test_documented_defaults_are_the_schema_defaults():
    """The docs' tables of defaults cannot drift from the one place defaults live."""
    defaults = grail_config.resolve({})
    rows = _documented_defaults()
    assert len(rows) >= 20
    for page, key, text in rows:
        value = defaults
        for part in key.split("."):
            value = value[part]
        documented = None if text == "none" else yaml.safe_load(text)
        if isinstance(value, float) and isinstance(documented, str):
            documented = float(documented)  # YAML 1.1 reads `1e-6` as text
        assert documented == value, f"docs/{page}: {key} documented as {text!r}, schema default {value!r}"


def test_exponent_floats_are_numbers_in_recipes_overrides_and_configs(tmp_path):
    """PyYAML (YAML 1.1) reads `2e-5` as a string, which reached the optimizer and failed inside torch
    (`learning_rate=2e-5`, the override the RLVR seed's users type); YAML 1.2 reads a float."""
    import yaml

    from grail_sim import io
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("trainer: grpo\nlearning_rate: 5e-6\nmax_steps: 1\n")
    argv = ["--config", str(recipe), "--dataset", "D", "--model", "M", "--out", str(tmp_path / "out")]

    def parsed(*flags: str, overrides=None):
        return parse_recipe([*argv, *flags], overrides, defaults=run_defaults).config

    assert parsed("learning_rate=2e-5").learning_rate == 2e-5
    assert parsed("training.learning_rate=1E-6").learning_rate == 1e-6
    assert parsed("hub_model_id=e5").hub_model_id == "e5" and parsed("hub_model_id=2e").hub_model_id == "2e"
    assert io.yaml_load("a: 3e2\nb: 7\nc: '2e-5'\nd: 1.5\n") == {"a": 300.0, "b": 7, "c": "2e-5", "d": 1.5}
    assert yaml.safe_load("x: 2e-5") == {"x": "2e-5"}  # PyYAML's own loader is left as it was
    # the recipe file's 5e-6, and the workflow's train.overrides as the raw text the environment gives
    config = parsed(overrides={"beta": "1e-3"})
    assert config.learning_rate == 5e-6 and config.beta == 1e-3
    assert isinstance(config.learning_rate, float) and isinstance(config.beta, float)


def test_nested_command_line_values_get_their_schema_types_back():
    """Snakemake reads `--config train='{threads: 2}'` with YAML's BaseLoader: every nested value is
    text, and the schema's integer check failed on "2"."""
    config = {"train": {"threads": "2", "overrides": {"learning_rate": "2e-5"}},
              "slurm": {"account": "123", "gpu_jobs": {"train": {"gpus": "1", "mem_mb": "lots"}}}}
    changed = grail_config.typed_command_line_values(config)
    assert config["train"]["threads"] == 2 and config["slurm"]["gpu_jobs"]["train"]["gpus"] == 1
    assert config["slurm"]["account"] == "123"  # text where the schema wants text
    assert config["train"]["overrides"] == {"learning_rate": "2e-5"}  # free-form: the recipe reads it
    assert config["slurm"]["gpu_jobs"]["train"]["mem_mb"] == "lots"  # left for the schema to name
    assert sorted(changed) == ["slurm.gpu_jobs.train.gpus", "train.threads"]
    with pytest.raises(grail_config.ConfigError, match="slurm.gpu_jobs.train.mem_mb"):
        grail_config.resolve(config)
