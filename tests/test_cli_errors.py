"""One error convention: every stage CLI answers a missing file, a missing column and an unknown
config key with exit 2 and one line, `grail-sim <stage>: <message>`, naming the culprit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

GRAIL = [sys.executable, "-c", "import sys; from grail_sim.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A parquet and a prompt dataset that lack required columns, a metrics.json without `tasks`."""
    from datasets import Dataset, DatasetDict

    root = tmp_path_factory.mktemp("cli_errors")
    pd.DataFrame({"unrelated": [1]}).to_parquet(root / "no_columns.parquet")
    rows = Dataset.from_dict({"prompt": [[{"role": "user", "content": "hi"}]], "n_options": [2]})
    for task in ("next_video", "opinion"):
        DatasetDict({"train": rows, "validation": rows, "test": rows}).save_to_disk(str(root / "prompts" / task))
    (root / "eval" / "validation").mkdir(parents=True)
    (root / "eval" / "validation" / "metrics.json").write_text(json.dumps({"model": "grail"}))
    (root / "recipe.yaml").write_text("trainer: grpo\nmax_steps: 1\n")
    return root


def _cases(root: Path, model: Path) -> dict[str, tuple[list[str], str]]:
    out = str(root / "out")
    missing = str(root / "does_not_exist")
    bad_key = json.dumps({"evaluate": {"max_rowz": 1}, "prompts": {}})
    simulate = ["--predictor", "oracle", "--issue", "gun", "--capsule", missing, "--prompts", str(root / "prompts"),
                "--out", out]
    return {
        # stage: missing file
        "clean/missing-file": (["clean", "--capsule", missing, "--out", f"{out}.parquet", "--stats", f"{out}.json"], missing),
        "prompts/missing-file": (["prompts", "build", "--interactions", missing, "--issue", "gun", "--tokenizer",
                                  str(model), "--out-dir", out], missing),
        "prompts/missing-tokenizer": (["prompts", "build", "--interactions", str(root / "no_columns.parquet"),
                                       "--issue", "gun", "--tokenizer", missing, "--out-dir", out], missing),
        "train/missing-file": (["train", "--config", missing, "--dataset", str(root / "prompts" / "next_video"),
                                "--model", str(model), "--out", out], missing),
        "evaluate/missing-file": (["evaluate", "--model", missing, "--prompts", str(root / "prompts"), "--out", out],
                                  missing),
        "report/missing-file": (["report", "--model", "grail", "--issue", "gun", "--eval", missing, "--out",
                                 f"{out}.md"], missing),
        "model/missing-file": (["model", "smoke", "--model", missing, "--out", f"{out}.json"], missing),
        # stage: missing column (or key of a data contract)
        "clean/missing-column": (["clean", "--dataset", str(root / "no_columns.parquet"), "--out", f"{out}.parquet",
                                  "--stats", f"{out}.json"], "participant_id"),
        "prompts/missing-column": (["prompts", "build", "--interactions", str(root / "no_columns.parquet"), "--issue",
                                    "gun", "--tokenizer", str(model), "--out-dir", out], "row_id"),
        "train/missing-column": (["train", "--config", str(root / "recipe.yaml"), "--dataset",
                                  str(root / "prompts" / "next_video"), "--model", str(model), "--out", out],
                                 "gold_index"),
        "evaluate/missing-column": (["evaluate", "--model", str(model), "--prompts", str(root / "prompts"),
                                     "--out", out], "gold_index"),
        "report/missing-key": (["report", "--model", "grail", "--issue", "gun", "--eval",
                                str(root / "eval" / "validation"), "--out", f"{out}.md"], "tasks"),
        # stage: unknown config key
        "demo-capsule/unknown-key": (["demo-capsule", "--out", out, "--config-json",
                                      json.dumps({"data": {"demo": {"participantz": 5}}})], "participantz"),
        "clean/unknown-key": (["clean", "--capsule", missing, "--out", f"{out}.parquet", "--stats", f"{out}.json",
                               "--config-json", json.dumps({"data": {}, "clean": {"min_step": 2}})], "min_step"),
        "prompts/unknown-key": (["prompts", "build", "--interactions", str(root / "no_columns.parquet"), "--issue",
                                 "gun", "--tokenizer", str(model), "--out-dir", out, "--config-json",
                                 json.dumps({"prompts": {"max_histroy": 3}})], "max_histroy"),
        "train/unknown-key": (["train", "--config", str(root / "recipe.yaml"), "--dataset",
                               str(root / "prompts" / "next_video"), "--model", str(model), "--out", out,
                               "--set", "learning_rat=0.1"], "learning_rat"),
        "evaluate/unknown-key": (["evaluate", "--model", str(model), "--prompts", str(root / "prompts"), "--out", out,
                                  "--config-json", bad_key], "max_rowz"),
        "report/unknown-key": (["report", "--model", "grail", "--issue", "gun", "--eval",
                                str(root / "eval" / "validation"), "--out", f"{out}.md", "--config-json",
                                json.dumps({"report": {"sample": 2}})], "sample"),
        "model/unknown-key": (["model", "smoke", "--model", str(model), "--out", f"{out}.json", "--config-json",
                               json.dumps({"model": {"smoke_promt": "hi"}})], "smoke_promt"),
        # the math task's commands
        "prompts-math/missing-file": (["prompts", "math", "--out", out, "--dataset", missing], missing),
        "prompts-math/missing-column": (["prompts", "math", "--out", out, "--dataset", str(root / "no_columns.parquet")],
                                        "lacks column(s) ['problem', 'answer']"),
        "prompts-math/unknown-key": (["prompts", "math", "--out", out, "--config-json",
                                      json.dumps({"math": {"stlye": "boxed"}})], "stlye"),
        "evaluate-math/missing-file": (["evaluate-math", "--model", str(model), "--dataset", missing, "--out", out],
                                       missing),
        "evaluate-math/missing-column": (["evaluate-math", "--model", str(model), "--dataset",
                                          str(root / "prompts" / "next_video"), "--out", out], "answer"),
        "evaluate-math/unknown-key": (["evaluate-math", "--model", str(model), "--dataset", missing, "--out", out,
                                       "--config-json", json.dumps({"math": {"sampels": 2}, "evaluate": {}})], "sampels"),
        "report-math/missing-file": (["report", "math", "--model", "grpo", "--eval", missing, "--out", f"{out}.md"],
                                     missing),
        # the simulate stage and its page
        "simulate/missing-file": (["simulate", *simulate, "--clean", missing], missing),
        "simulate/missing-column": (["simulate", *simulate, "--clean", str(root / "no_columns.parquet")],
                                    "participant_id"),
        "simulate/unknown-key": (["simulate", *simulate, "--clean", missing, "--config-json",
                                  json.dumps({"simulate": {"replicate": 2}, "evaluate": {}, "prompts": {}})],
                                 "replicate"),
        "report-simulation/missing-file": (["report", "simulation", "--eval", missing, "--out", f"{out}.md"],
                                           f"{missing}/summary.json"),
    }


CASES = sorted(_cases(Path("/r"), Path("/m")))


@pytest.mark.parametrize("case", CASES)
def test_user_errors_exit_2_with_one_line_naming_the_culprit(case, inputs, tiny_model_dir, monkeypatch, capsys):
    # In process, so an exception that escapes `cli.main` (a traceback for a user) fails the test.
    from grail_sim import cli

    argv, culprit = _cases(inputs, tiny_model_dir)[case]
    monkeypatch.setenv("LOGLEVEL", "WARNING")
    code = cli.main(argv)
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("grail-sim ")]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith(f"grail-sim {argv[0]}: "), stderr
    assert culprit in lines[0], lines[0]


def test_the_console_script_exits_2_without_a_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([*GRAIL, "report", "--model", "m", "--issue", "gun", "--eval", str(tmp_path / "none"),
                             "--out", str(tmp_path / "r.md")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("grail-sim report: ")


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from grail_sim import cli
    from grail_sim.data import demo_cli

    def broken(args):
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr(demo_cli, "run", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["demo-capsule", "--out", "x"])
