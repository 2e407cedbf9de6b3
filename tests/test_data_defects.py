"""Defects of the clean stage's data path, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from grail_sim.data.clean import resolve_config
from grail_sim.data.contract import assign_splits, finalise
from grail_sim.data.dataset import clean_dataset
from grail_sim.errors import CleanError

SLATE = [{"id": "vid00000001", "title": "a"}, {"id": "vid00000002", "title": "b"}]
COLUMNS = {"participant_id": "pid", "slate_items": "options", "gold_index": "answer", "participant_study": "study"}


def _rows(n_participants: int, steps: int = 2, **extra) -> list[dict]:
    return [{"pid": f"p{p}", "session_id": f"s{p}", "step_index": k, "issue": "gun_control",
             "options": json.dumps(SLATE), "answer": 1 + k % 2, "study": "study1", "profile": "{}", **extra}
            for p in range(n_participants) for k in range(steps)]


def test_single_file_without_split_column_gets_seeded_participant_splits(tmp_path):
    # Before: every row of a single file landed in `train`, so the prompts stage failed on an
    # empty validation split. The docs promise splits assigned as for the capsule.
    path = tmp_path / "precleaned.parquet"
    pd.DataFrame(_rows(40)).to_parquet(path)
    config = resolve_config()
    rows, stats = clean_dataset(str(path), COLUMNS, config)
    frame, stats = finalise(rows, stats, config)
    assert set(frame["split"]) == {"train", "validation", "test"}
    assert frame.groupby("participant_id")["split"].nunique().max() == 1
    expected = assign_splits({"study1": [f"p{p}" for p in range(40)]}, config["split_fractions"], config["split_seed"])
    assert dict(zip(frame["participant_id"], frame["split"])) == expected
    assert stats["splits_assigned"] is True


def test_split_seed_moves_the_assigned_splits(tmp_path):
    path = tmp_path / "precleaned.csv"
    pd.DataFrame(_rows(40, steps=1)).to_csv(path, index=False)
    splits = []
    for seed in (1, 2):
        config = resolve_config({"split_seed": seed})
        frame, _ = finalise(*clean_dataset(str(path), COLUMNS, config), config)
        splits.append(dict(zip(frame["participant_id"], frame["split"])))
    assert splits[0] != splits[1]


def test_given_splits_are_kept_and_counted_as_not_assigned(tmp_path):
    path = tmp_path / "precleaned.parquet"
    rows = _rows(3, steps=1)
    for row, split in zip(rows, ("train", "val", "test")):
        row["split"] = split
    pd.DataFrame(rows).to_parquet(path)
    config = resolve_config()
    frame, stats = finalise(*clean_dataset(str(path), COLUMNS, config), config)
    assert frame["split"].tolist() == ["train", "validation", "test"]
    assert stats["splits_assigned"] is False


def test_split_names_from_file_names_are_kept(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = _rows(2, steps=1)
    (folder / "train.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (folder / "test.jsonl").write_text(json.dumps(rows[1]) + "\n")
    config = resolve_config()
    frame, stats = finalise(*clean_dataset(str(folder), COLUMNS, config), config)
    assert dict(zip(frame["participant_id"], frame["split"])) == {"p0": "train", "p1": "test"}
    assert stats["splits_assigned"] is False


def test_participant_in_two_splits_is_a_clean_error_naming_participant_and_splits(tmp_path):
    # Before: a CleanConfigError the clean CLI did not catch, printed as a traceback, naming
    # only the participant. A CleanError prints as one line; the message names the splits too.
    path = tmp_path / "precleaned.parquet"
    rows = _rows(2, steps=2)
    for row, split in zip(rows, ("train", "test", "train", "train")):
        row["split"] = split
    pd.DataFrame(rows).to_parquet(path)
    config = resolve_config()
    with pytest.raises(CleanError, match=r"participant 'p0' .*two or more splits.*\btest\b.*\btrain\b") as caught:
        finalise(*clean_dataset(str(path), COLUMNS, config), config)
    assert "p1" not in str(caught.value) and "\n" not in str(caught.value)
