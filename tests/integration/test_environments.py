"""The job environments resolve for real against the package registry (pip's resolver, no install).

conda builds an env file's `pip:` section the way these tests replay it: Snakemake copies the file to
`.snakemake/conda/<hash>_.yaml`, and conda writes the section to `condaenv.<random>.requirements.txt`
in that same folder and runs `python -m pip install -U -r <file> --exists-action=b` with that folder
as the working directory (conda's pip installer, `_pip_install_via_requirements`). A relative path in
the section therefore names a folder under `.snakemake/`. conda itself cannot be installed on these
machines (its channels are unreachable); its pip step is all of the env that is not `python` and `pip`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _pip_section(env_file: Path) -> list[str]:
    env = yaml.safe_load(env_file.read_text())
    return next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep)


def _resolve(args: list[str], cwd: Path, report: Path) -> dict[str, str]:
    """pip's dry-run resolution of `args` (from an empty environment); name -> version it would install."""
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report), *args],
                            cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"pip could not resolve {args} in {cwd}:\n{result.stderr[-4000:]}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


@pytest.mark.parametrize("env_name", ["grail.yaml", "grail-gpu.yaml"])
def test_conda_pip_step_of_each_env_resolves_where_snakemake_puts_it(env_name, tmp_path):
    conda_dir = tmp_path / "workdir" / ".snakemake" / "conda"
    conda_dir.mkdir(parents=True)
    copied = conda_dir / "0123456789abcdef_.yaml"  # Snakemake's name for the copy: <hash>_.yaml
    copied.write_text((ROOT / "envs" / env_name).read_text())
    requirements = conda_dir / "condaenv.x1y2z3.requirements.txt"
    requirements.write_text("\n".join(_pip_section(copied)) + "\n")
    resolved = _resolve(["-U", "-r", requirements.name, "--exists-action=b"], conda_dir, tmp_path / "report.json")
    assert resolved["torch"].startswith("2.13.0") and resolved["trl"] == "1.16.0"
    assert "snakemake" not in resolved, "a job env does not need Snakemake"
    if env_name == "grail-gpu.yaml":
        assert resolved["vllm"] == "0.31.0" and resolved["deepspeed"] == "0.19.2"
        assert resolved["numpy"] == "2.3.5"


def test_gpu_extra_resolves(tmp_path):
    """`pip install -e '.[gpu]'`, the GPU job env of a site without conda (docs/cluster.md)."""
    resolved = _resolve([f"{ROOT}[gpu]"], tmp_path, tmp_path / "report.json")
    assert resolved["vllm"] == "0.31.0" and resolved["torch"].startswith("2.13.0")
    assert "snakemake-executor-plugin-slurm" not in resolved


def test_workflow_extra_resolves(tmp_path):
    """`pip install -e '.[workflow]'`: the submitting environment (what `make run` installs, with `test`)."""
    resolved = _resolve([f"{ROOT}[workflow]"], tmp_path, tmp_path / "report.json")
    assert resolved["snakemake-executor-plugin-slurm"] == "2.8.0" and resolved["numpy"] == "2.4.6"
