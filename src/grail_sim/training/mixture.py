"""Dataset mixtures of a training recipe: several prompt datasets, in given proportions, through
TRL's `DatasetMixtureConfig` and `get_dataset`.

The recipe form follows the seeds and TRL:

    dataset_mixture:
      datasets:
        - id: results/prompts/gun_control/next_video     # or path:
          split: train
          weight: 0.7
        - id: results/prompts/minimum_wage/next_video
          weight: 0.3
        - id: json                                        # any `datasets.load_dataset` source, a hub name too
          data_files: extra_rows.jsonl
          columns: [prompt, gold_index, n_options, slate_items]
          weight: 0.1
      seed: 0
      test_split_size: null

A prompts-stage folder (written by `save_to_disk`, which `load_dataset` cannot read) is passed to TRL
as the arrow files of its split. Weights are TRL's `fraction`s: normalised to sum to 1, and the mixture
is as large as it can be without repeating a row, each dataset contributing its first round(weight x N)
rows. `seed` shuffles the mixture and draws the `test_split_size` hold-out (TRL's own split is unseeded).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from grail_sim.errors import RecipeError

LOG = logging.getLogger(__name__)

SOURCE_KEYS = ("id", "path", "config", "name", "split", "columns", "weight", "fraction", "data_files", "data_dir")
MIXTURE_KEYS = ("datasets", "seed", "test_split_size")


def check_mixture(section: Any) -> dict | None:
    """The recipe's `dataset_mixture` section, checked (keys, weights, one id per source); None when absent."""
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise RecipeError(f"dataset_mixture must be a mapping, got {section!r}")
    unknown = sorted(set(section) - set(MIXTURE_KEYS))
    if unknown:
        raise RecipeError(f"unknown key(s) {unknown} in dataset_mixture; valid: {list(MIXTURE_KEYS)}")
    sources = section.get("datasets")
    if not isinstance(sources, list) or not sources:
        raise RecipeError("dataset_mixture.datasets must be a non-empty list of datasets")
    for index, source in enumerate(sources):
        where = f"dataset_mixture.datasets[{index}]"
        if not isinstance(source, Mapping):
            raise RecipeError(f"{where} must be a mapping, got {source!r}")
        unknown = sorted(set(source) - set(SOURCE_KEYS))
        if unknown:
            raise RecipeError(f"unknown key(s) {unknown} in {where}; valid: {list(SOURCE_KEYS)}")
        if bool(source.get("id")) == bool(source.get("path")):
            raise RecipeError(f"{where} needs exactly one of id or path")
        weight = _weight(source)
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0):
            raise RecipeError(f"{where}.weight must be a number >= 0, got {weight!r}")
    weights = [_weight(source) for source in sources]
    if any(w is None for w in weights) and any(w is not None for w in weights):
        raise RecipeError("dataset_mixture: give every dataset a weight, or none (none: all rows of each)")
    if weights[0] is not None and not sum(weights) > 0:
        raise RecipeError("dataset_mixture: the weights sum to 0")
    size = section.get("test_split_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0):
        raise RecipeError(f"dataset_mixture.test_split_size must be a positive fraction or row count, got {size!r}")
    return dict(section)


def _weight(source: Mapping) -> Any:
    return source.get("weight", source.get("fraction"))


def mixture_config(section: Mapping[str, Any]):
    """TRL's `DatasetMixtureConfig` for a checked `dataset_mixture` section (no test split: `load_mixture`
    draws it with the section's seed)."""
    from trl import DatasetMixtureConfig
    from trl.scripts.utils import DatasetConfig

    configs = []
    for source in section["datasets"]:
        path = str(source.get("id") or source.get("path"))
        split = str(source.get("split") or "train")
        data_files, data_dir = source.get("data_files"), source.get("data_dir")
        if _is_saved_dataset(path):
            path, data_files, data_dir, split = "arrow", {"train": _split_files(path, split)}, None, "train"
        configs.append(DatasetConfig(path=path, name=source.get("config", source.get("name")), data_dir=data_dir,
                                     data_files=data_files, split=split, columns=source.get("columns"),
                                     fraction=_weight(source)))
    return DatasetMixtureConfig(datasets=configs)


def _is_saved_dataset(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file())


def _split_files(folder: str, split: str) -> list[str]:
    root = Path(folder)
    if (root / "state.json").is_file():  # a single saved Dataset: its own arrow files, whatever `split` says
        files = sorted(root.glob("*.arrow"))
    else:
        files = sorted((root / split).glob("*.arrow"))
        if not files:
            splits = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise RecipeError(f"dataset_mixture: {folder} has no split {split!r}; splits: {splits}")
    return [str(path) for path in files]


def load_mixture(section: Mapping[str, Any]) -> tuple[Any, Any]:
    """(train rows, held-out rows or None) of a checked `dataset_mixture` section, shuffled with its seed."""
    from trl import get_dataset

    seed = int(section.get("seed") or 0)
    try:
        mixed = get_dataset(mixture_config(section))["train"]
    except (FileNotFoundError, ValueError) as err:
        raise RecipeError(f"dataset_mixture does not load: {err}") from None
    LOG.info("dataset mixture: %d rows from %d datasets (seed %d)", len(mixed), len(section["datasets"]), seed)
    mixed = mixed.shuffle(seed=seed)
    size = section.get("test_split_size")
    if size is None:
        return mixed, None
    parts = mixed.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]
