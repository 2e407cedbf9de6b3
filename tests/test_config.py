"""config/config.yaml is validated by snakemake's `validate` against the schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_shipped_config_is_valid(config):
    validate(config, SCHEMA)


def test_schema_fills_nothing_surprising(config):
    before = copy.deepcopy(config)
    validate(config, SCHEMA, set_default=False)
    assert config == before


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c.update(unknown_section={}), "unknown_section"),
        (lambda c: c["model"].update(name_or_pth="x"), "name_or_pth"),
        (lambda c: c["data"].update(source="s3"), "s3"),
        (lambda c: c.update(issues=["guns"]), "guns"),
    ],
)
def test_bad_key_or_value_fails_naming_it(config, mutate, named):
    mutate(config)
    with pytest.raises(WorkflowError, match=named):
        validate(config, SCHEMA)


def test_every_recipe_parses():
    for recipe in (ROOT / "config" / "recipes").glob("*.yaml"):
        assert isinstance(yaml.safe_load(recipe.read_text()), dict), recipe
