"""The pins live in pyproject.toml; the conda env files for the cluster must agree with them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[A-Za-z0-9_,.\-]+\])?==([^\s;]+)$")  # name[extras]==version
# What the `gpu` extra must fit, read from the wheels' metadata (vllm-0.31.0 METADATA Requires-Dist;
# trl/import_utils.py is_vllm_available). A core pin outside these windows makes `pip install .[gpu]`
# unresolvable on the cluster, which no CPU test would otherwise notice.
VLLM_REQUIRES = {"torch": ("2.13.0", "2.13.0"), "transformers": ("5.10.4", "5.17.999")}
TRL_VLLM_WINDOW = ("0.22.0", "0.31.0")


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = PIN.match(requirement.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _env_pip(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    for dependency in env["dependencies"]:
        if isinstance(dependency, dict) and "pip" in dependency:
            return dependency["pip"]
    raise AssertionError(f"{path}: no pip section")


def test_every_dependency_is_pinned_exactly():
    project = _pyproject()["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    loose = [r for r in requirements if not PIN.match(r)]
    assert loose == [], f"unpinned requirements in pyproject.toml: {loose}"
    assert _pins(project["dependencies"])["torch"] == "2.13.0"


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_file_pins_agree_with_pyproject(env_file):
    project = _pyproject()["project"]
    declared = _pins(project["dependencies"]) | _pins(project["optional-dependencies"]["gpu"])
    env_pins = _pins(_env_pip(env_file))
    assert env_pins, f"{env_file.name} pins nothing"
    disagreements = {
        name: (version, declared.get(name)) for name, version in env_pins.items() if declared.get(name) != version
    }
    assert disagreements == {}, f"{env_file.name}: (env, pyproject) versions differ: {disagreements}"
    expected = set(_pins(project["dependencies"])) - {"snakemake", "snakemake-executor-plugin-slurm"}
    missing = expected - set(env_pins)
    assert missing == set(), f"{env_file.name} lacks pins for {sorted(missing)}"
    assert "-e ../" in _env_pip(env_file), f"{env_file.name} must install the grail-sim package itself"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"[0-9]+", text))


def test_gpu_extra_resolves_with_the_core_pins():
    project = _pyproject()["project"]
    core, gpu = _pins(project["dependencies"]), _pins(project["optional-dependencies"]["gpu"])
    low, high = TRL_VLLM_WINDOW
    assert _version(low) <= _version(gpu["vllm"]) <= _version(high), f"vllm {gpu['vllm']} is outside TRL's window"
    assert gpu["vllm"] == "0.31.0", "VLLM_REQUIRES was read from vllm 0.31.0's metadata: update it with the pin"
    for name, (low, high) in VLLM_REQUIRES.items():
        assert _version(low) <= _version(core[name]) <= _version(high), (
            f"{name}=={core[name]} is outside vllm {gpu['vllm']}'s requirement {low}..{high}")


def test_every_rule_env_exists():
    rules = ROOT / "workflow" / "rules"
    for rule_file in rules.glob("*.smk"):
        for env in re.findall(r'conda:\s*\n?\s*"([^"]+)"', rule_file.read_text()):
            assert (rule_file.parent / env).resolve().is_file(), f"{rule_file.name}: missing conda env {env}"
    # The rules that train and evaluate take theirs from MODEL_ENV, one per compute profile.
    common = (rules / "common.smk").read_text()
    model_envs = re.findall(r'"(\.\./\.\./envs/[^"]+)"', common.split("MODEL_ENV = ", 1)[1].splitlines()[0])
    assert len(model_envs) == 2
    for env in model_envs:
        assert (rules / env).resolve().is_file(), f"common.smk: missing conda env {env}"
