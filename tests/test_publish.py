"""Push to hub, opt in (#13): what would be uploaded (no network), the model card, never a token, and
the recipe's push_to_hub pushing final/ once after training instead of TRL's checkpoint pushes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grail_sim import cli
from grail_sim.model import publish

from test_train import RECIPES, make_prompt_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _final(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "training_args.bin", ".env", "README.md"):
        (folder / name).write_text("x")
    (folder / "grail_sim.json").write_text(json.dumps({
        "trainer": "grail", "adapter": True, "base_model": "/abs/results/models/base", "rewards": ["gail"],
        "train_rows": 741, "global_step": 6}))
    return folder


class RecordingApi:
    """Records the Hub calls a push makes, in place of the network."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_file(self, **kwargs):
        self.calls.append(("upload_file", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_the_plan_uploads_the_model_provenance_and_a_card_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_leak_me")
    plan = publish.upload_plan(_final(tmp_path / "final"))
    assert plan["files"] == ["adapter_config.json", "adapter_model.safetensors", "chat_template.jinja",
                             "grail_sim.json", "tokenizer.json", "tokenizer_config.json", "README.md"]
    card = plan["model_card"]
    assert card.startswith("---\nlibrary_name: peft\n") and "# grail-sim grail policy" in card
    assert "| train_rows | `741` |" in card and "No evaluation report was attached" in card
    assert "hf_do_not_leak_me" not in json.dumps(plan)


def test_a_report_becomes_part_of_the_card(tmp_path):
    report = tmp_path / "grail_gun.md"
    report.write_text("# grail on gun\n\nNLL 1.19 [1.06, 1.32]\n")
    card = publish.model_card(_final(tmp_path / "final"), report)
    assert "## Evaluation report" in card and "NLL 1.19 [1.06, 1.32]" in card


def test_push_creates_a_private_repo_and_uploads_the_planned_files(tmp_path):
    final = _final(tmp_path / "final")
    api = RecordingApi()
    plan = publish.push_final(final, "someone/grail-gun", api=api)
    names = [name for name, _ in api.calls]
    assert names == ["create_repo", "upload_file", "upload_folder"]
    assert api.calls[0][1]["private"] is True and api.calls[0][1]["repo_id"] == "someone/grail-gun"
    assert api.calls[1][1]["path_in_repo"] == "README.md"
    assert api.calls[1][1]["path_or_fileobj"].decode() == plan["model_card"]
    assert api.calls[2][1]["allow_patterns"] == plan["files"][:-1]
    assert "training_args.bin" not in api.calls[2][1]["allow_patterns"]


def test_publish_dry_run_prints_the_plan_and_a_folder_without_provenance_fails(tmp_path, capsys):
    final = _final(tmp_path / "final")
    assert cli.main(["model", "publish", "--model", str(final), "--repo-id", "a/b", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][-1] == "README.md"
    assert cli.main(["model", "publish", "--model", str(tmp_path), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "no grail_sim.json" in capsys.readouterr().err


def test_push_to_hub_needs_a_repository(tiny_model_dir, tmp_path, capsys):
    dataset = make_prompt_dataset(tmp_path / "next_video", rows=4)
    argv = ["train", "--config", str(RECIPES / "sft.yaml"), "--dataset", str(dataset), "--model", str(tiny_model_dir),
            "--out", str(tmp_path / "out"), "--max-steps", "1", "--threads", "1", "--set", "push_to_hub=true"]
    assert cli.main(argv) == 2
    assert "push_to_hub needs hub_model_id" in capsys.readouterr().err


@pytest.mark.slow
def test_a_recipe_with_push_to_hub_pushes_final_once_after_training(tiny_model_dir, tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(publish, "push_final", lambda final, repo, **kw: pushed.append((final, repo, kw)))
    dataset = make_prompt_dataset(tmp_path / "next_video", rows=4)
    out = tmp_path / "out"
    argv = ["train", "--config", str(RECIPES / "sft.yaml"), "--dataset", str(dataset), "--model", str(tiny_model_dir),
            "--out", str(out), "--max-steps", "1", "--threads", "1"]
    for override in ("per_device_train_batch_size=2", "report_to=none", "push_to_hub=true",
                     "hub_model_id=someone/sft-gun"):
        argv += ["--set", override]
    assert cli.main(argv) == 0
    assert pushed == [(out / "final", "someone/sft-gun", {"private": True})]
    import yaml

    import torch

    resolved = yaml.safe_load((out / "resolved_recipe.yaml").read_text())
    assert resolved["values"]["push_to_hub"] is True and resolved["values"]["hub_model_id"] == "someone/sft-gun"
    # the arguments TRL trained with: TRL pushed no checkpoint
    trained_with = torch.load(out / "final" / "training_args.bin", weights_only=False)
    assert trained_with.push_to_hub is False and trained_with.hub_model_id == "someone/sft-gun"
