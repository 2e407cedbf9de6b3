"""Stage code versions follow the imports: a module a stage runs is covered, another stage's is not."""

from __future__ import annotations

import shutil

import pytest

from grail_sim import code_version


def _names(stage: str) -> set[str]:
    return {path.relative_to(code_version.ROOT).as_posix() for path in code_version.stage_files(stage)}


def test_each_stage_covers_its_cli_its_imports_and_the_schema():
    evaluate, report, clean = _names("evaluate"), _names("report"), _names("clean")
    # Modules the hand-kept list once missed: the demo oracle, choice_metrics, the demo layout.
    assert {"evaluation/cli.py", "evaluation/scorers.py", "data/demo_oracle.py", "model/loading.py",
            "resources/config.schema.yaml", "cli.py"} <= evaluate
    assert {"evaluation/choice_metrics.py", "report/templates/model_report.md.j2"} <= report
    assert "data/demo_layout.py" in _names("demo-capsule")
    assert not any(name.startswith(("evaluation/", "training/", "report/")) for name in clean)
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        code_version.stage_files("nope")


def test_editing_a_module_changes_the_version_of_the_stages_that_import_it_only(tmp_path, monkeypatch):
    root = tmp_path / "grail_sim"
    shutil.copytree(code_version.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_version, "ROOT", root)
    before = {stage: code_version.code_version(stage, "1.0") for stage in ("clean", "evaluate", "report")}
    with open(root / "evaluation" / "scorers.py", "a", encoding="utf-8") as handle:
        handle.write("\n# changed\n")
    after = {stage: code_version.code_version(stage, "1.0") for stage in before}
    assert after["evaluate"] != before["evaluate"]
    assert after["clean"] == before["clean"] and after["report"] == before["report"]
    assert code_version.code_version("clean", "1.1") != before["clean"]  # an upgrade reruns everything
