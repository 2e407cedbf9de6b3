"""The shared helpers every stage leans on: CLI dispatch, atomic outputs, JSONL and answer parsing."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grail_sim import answers, cli, io, issues, rows


def test_cli_lists_every_command(capsys):
    assert cli.main([]) == 0
    printed = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in printed


def test_cli_unknown_command_names_it(capsys):
    assert cli.main(["trian"]) == 2
    assert "'trian'" in capsys.readouterr().err


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "ds"
    with io.atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("1")
    with io.atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    with pytest.raises(ValueError):
        with io.atomic_dir(target) as tmp:
            (tmp / "partial.txt").write_text("3")
            raise ValueError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_atomic_outputs_get_umask_permissions_not_private_ones(tmp_path):
    previous = os.umask(0o022)
    try:
        io.write_text(tmp_path / "report.md", "x")
        with io.atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        io.write_json(tmp_path / "m.json", {"accuracy": float("nan")})
    assert not (tmp_path / "m.json").exists()


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2}\n{"id": 3\n')
    rows = io.read_jsonl(path)
    assert next(rows) == {"id": 1}
    assert next(rows) == {"id": 2}
    with pytest.raises(io.JsonlError, match=r"predictions.jsonl:4"):
        next(rows)


def test_file_sha256_of_folder_depends_on_content(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    first = io.file_sha256(tmp_path)
    (tmp_path / "a.txt").write_text("y")
    assert io.file_sha256(tmp_path) != first


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("<think>a</think><answer>3</answer>", 4, 3),
        ("<think>a</think><answer> 2 </answer>", 4, 2),
        ("<think>a</think><answer>5</answer>", 4, None),  # out of range
        ("<think>a</think><answer>0</answer>", 4, None),
        ("<think>a</think><answer>3.</answer>", 4, None),  # trailing period
        ('<answer>"3"</answer>', 4, None),
        ("<answer>Option 3</answer>", 4, None),
        ("I pick 3", 4, None),  # no tag: a failure, never a guess
        ("<answer>1</answer> then <answer>2</answer>", 4, 2),  # the last answer counts
    ],
)
def test_parse_choice(text, n, expected):
    assert answers.parse_choice(text, n) == expected


def test_format_requires_think_then_answer():
    assert answers.has_format("<think>x</think>\n<answer>1</answer>")
    assert not answers.has_format("<answer>1</answer>")
    assert not answers.has_format("<answer>1</answer><think>x</think>")
    assert not answers.has_format("<think>x</think><answer>1</answer> trailing words")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("<answer>0.42</answer>", 0.42), ("<answer>1</answer>", 1.0), ("<answer>.5</answer>", 0.5),
     ("<answer>5</answer>", None), ("<answer>-0.1</answer>", None), ("<answer>nan</answer>", None),
     ("<answer>increase</answer>", None), ("0.4", None)],
)
def test_parse_opinion_on_the_unit_scale(text, expected):
    assert answers.parse_opinion(text) == expected


@given(st.text(max_size=200), st.integers(min_value=1, max_value=20))
def test_parse_choice_never_crashes_and_stays_in_range(text, n):
    parsed = answers.parse_choice(text, n)
    assert parsed is None or 1 <= parsed <= n


def test_issue_names():
    assert issues.issue_name("gun") == "gun_control"
    assert issues.issue_name("minimum_wage") == "minimum_wage"
    with pytest.raises(ValueError, match="valid: "):
        issues.issue_name("abortion")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("<think>x</think><answer>increase</answer>", "increase"), ("<answer> Decrease </answer>", "decrease"),
     ("<answer>no_change</answer>", "no_change"), ("<answer>No change</answer>", "no_change"),
     ("<answer>no-change</answer>", "no_change"), ("<answer>NO_CHANGE</answer>", "no_change"),
     ("<answer>increase</answer> <answer>decrease</answer>", "decrease"),  # the last answer counts
     ("<answer>unchanged</answer>", None), ("<answer>increased</answer>", None), ("<answer>increase.</answer>", None),
     ("<answer>up</answer>", None), ("<answer>nochange</answer>", None), ("<answer>0.4</answer>", None),
     ("<answer></answer>", None), ("increase", None), ("", None)],
)
def test_parse_direction(text, expected):
    assert answers.parse_direction(text) == expected


def test_directions_are_the_labels_opinion_direction_returns():
    assert answers.DIRECTIONS == ("increase", "decrease", "no_change")
    assert [rows.opinion_direction(0.5, after, 0.01) for after in (0.7, 0.3, 0.505)] == list(answers.DIRECTIONS)
    assert rows.opinion_direction(None, 0.5, 0.01) == "unknown"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Politics: party: Republican, ideology: somewhat conservative, political interest: high.", "conservative"),
     ("Politics: party: Democrat, ideology: very liberal.", "liberal"),
     ("Politics: ideology: moderate. Issue: view of a $15 minimum wage: strongly oppose.", "moderate"),
     ("Politics: ideology: middle of the road.", "moderate"),
     ("Politics: ideology: haven't thought much about it, party: Democrat.", "unknown"),
     ("VIEWER 49-year-old woman; democrat moderate; $20,000-$24,999.\nSURVEY HIGHLIGHTS\n"
      "party identification is Democrat, ideology is Moderate, political interest is high.", "moderate"),
     ("VIEWER 34-year-old; republican conservative; watches YouTube weekly.", "conservative"),
     # a stated ideology wins over the party-ideology pair
     ("VIEWER 30; independent liberal; x. SURVEY ideology is Conservative.", "conservative"),
     ("Politics: party: Democrat, political interest: high.", "unknown"),  # party alone is no ideology
     ("", "unknown")],
)
def test_viewer_leaning(text, expected):
    assert rows.viewer_leaning(text) == expected
