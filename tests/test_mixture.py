"""Dataset mixtures (#14): TRL's DatasetMixtureConfig over the project's prompt datasets and any
`load_dataset` source; sampled counts follow the weights; errors name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from grail_sim import errors
from grail_sim.training import mixture as mixture_lib

from test_train import RECIPES, _train_cli, make_prompt_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _saved(folder: Path, prefix: str, rows: int, seed: int) -> Path:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(make_prompt_rows(rows, seed, id_prefix=prefix)),
                 "validation": Dataset.from_list(make_prompt_rows(4, seed + 1, id_prefix=f"{prefix}v"))}
                ).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    gun = _saved(root / "gun", "gun", 16, 0)
    wage = _saved(root / "wage", "wage", 12, 1)
    extra = root / "extra.jsonl"  # a plain file through load_dataset("json"), as a hub dataset would load
    extra.write_text("".join(json.dumps(row) + "\n" for row in make_prompt_rows(8, 2, id_prefix="json")))
    return {"gun": str(gun), "wage": str(wage), "extra": str(extra)}


def _by_prefix(rows) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row_id in rows["id"]:
        prefix = row_id.rstrip(":0123456789")
        counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def _load(section: dict):
    return mixture_lib.load_mixture(mixture_lib.check_mixture(section))


@pytest.mark.parametrize("weights, expected", [
    ((0.75, 0.25), {"gun": 16, "wage": 5}),  # N = min(16 / 0.75, 12 / 0.25) = 21.3
    ((1, 1), {"gun": 12, "wage": 12}),  # N = 24: wage is used up first
    ((3, 0), {"gun": 16}),
])
def test_sampled_counts_follow_the_weights(sources, weights, expected):
    train, held_out = _load({"datasets": [{"id": sources["gun"], "weight": weights[0]},
                                          {"path": sources["wage"], "split": "train", "weight": weights[1]}]})
    assert held_out is None and _by_prefix(train) == expected


def test_any_load_dataset_source_mixes_with_prompt_folders_and_the_split_is_seeded(sources):
    section = {"datasets": [{"id": sources["gun"], "weight": 0.5},
                            {"id": "json", "data_files": sources["extra"], "weight": 0.5,
                             "columns": ["id", "prompt", "gold_index", "n_options", "slate_items"]}],
               "seed": 7, "test_split_size": 4}
    train, held_out = _load(section)
    assert len(train) + len(held_out) == 16 and len(held_out) == 4
    assert set(_by_prefix(train)) | set(_by_prefix(held_out)) == {"gun", "json"}
    again_train, again_held_out = _load(section)
    assert again_held_out["id"] == held_out["id"] and again_train["id"] == train["id"]


@pytest.mark.parametrize("section, message", [
    ({"datasets": []}, "non-empty list"),
    ({"datasets": [{"weight": 1}]}, r"datasets\[0\] needs exactly one of id or path"),
    ({"datasets": [{"id": "a", "wieght": 1}]}, r"unknown key\(s\) \['wieght'\] in dataset_mixture.datasets\[0\]"),
    ({"datasets": [{"id": "a", "weight": 1}, {"id": "b"}]}, "every dataset a weight, or none"),
    ({"datasets": [{"id": "a", "weight": -1}]}, r"datasets\[0\].weight must be a number >= 0"),
    ({"datasets": [{"id": "a"}], "shuffle": True}, r"unknown key\(s\) \['shuffle'\] in dataset_mixture"),
])
def test_bad_mixtures_fail_naming_the_key(section, message):
    with pytest.raises(errors.RecipeError, match=message):
        mixture_lib.check_mixture(section)


def test_a_missing_split_of_a_prompt_folder_names_the_splits(sources):
    with pytest.raises(errors.RecipeError, match=r"no split 'test'; splits: \['train', 'validation'\]"):
        _load({"datasets": [{"id": sources["gun"], "split": "test"}]})


def _parse(*flags: str, overrides=None):
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    return parse_recipe(["--config", str(RECIPES / "grpo.yaml"), "--dataset", "D", "--model", "M", "--out", "OUT",
                         *flags], overrides, defaults=run_defaults)


def test_the_recipe_carries_the_mixture(sources):
    mixture = {"datasets": [{"id": sources["gun"], "weight": 1}], "seed": 3}
    recipe = _parse(f"dataset_mixture={json.dumps(mixture)}")
    assert recipe.script.dataset_mixture == mixture and recipe.values["dataset_mixture"] == mixture
    assert _parse(overrides={"dataset_mixture": mixture}).script.dataset_mixture == mixture  # train.overrides
    with pytest.raises(errors.RecipeError, match=r"grpo\.yaml: dataset_mixture must be a mapping"):
        _parse("dataset_mixture=[1, 2]")


@pytest.mark.slow
def test_grpo_trains_on_a_mixture_and_evaluates_on_its_held_out_rows(tiny_model_dir, sources, tmp_path):
    mixture = {"datasets": [{"id": sources["gun"], "weight": 0.5}, {"id": sources["wage"], "weight": 0.5}],
               "seed": 1, "test_split_size": 4}
    out = tmp_path / "mixed"
    assert _train_cli("grpo", Path(sources["gun"]), tiny_model_dir, out, f"dataset_mixture={json.dumps(mixture)}",
                      "eval_strategy=steps", "eval_steps=1", "per_device_eval_batch_size=4", max_steps=1) == 0
    resolved = yaml.safe_load((out / "resolved_recipe.yaml").read_text())
    assert resolved["values"]["dataset_mixture"] == mixture
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert (provenance["train_rows"], provenance["eval_rows"]) == (20, 4)  # 12 + 12 mixed, 4 held out
