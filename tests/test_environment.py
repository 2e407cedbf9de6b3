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


# The one core requirement that is a range, and why: each extra that an environment is built from
# pins it exactly (the `workflow` extra 2.4.6 for snakemake-executor-plugin-slurm, the `gpu` extra
# 2.3.5 for vllm's mistral_common), since no single version satisfies both.
RANGED_IN_CORE = {"numpy"}
# The extras each conda env file is built from, beside the core dependencies. Snakemake and its SLURM
# plugin (the `workflow` extra) run in the submitting environment, never in a job env.
ENV_EXTRAS = {"grail.yaml": ("workflow",), "grail-gpu.yaml": ("gpu",)}
SUBMIT_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def test_every_dependency_is_pinned_exactly():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    requirements = [r for r in project["dependencies"] if _name(r) not in RANGED_IN_CORE]
    requirements += [r for extra in extras.values() for r in extra]
    loose = [r for r in requirements if not PIN.match(r)]
    assert loose == [], f"unpinned requirements in pyproject.toml: {loose}"
    assert _pins(project["dependencies"])["torch"] == "2.13.0"
    for name in RANGED_IN_CORE:
        pinned_by = [extra for extra in ("workflow", "gpu") if name in _pins(extras[extra])]
        assert pinned_by == ["workflow", "gpu"], f"{name} is a range in the core: every env's extra must pin it"


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement.strip(), maxsplit=1)[0].lower()


def _declared_pins(env_name: str) -> dict[str, str]:
    project = _pyproject()["project"]
    declared = _pins(project["dependencies"])
    for extra in ENV_EXTRAS[env_name]:
        declared |= _pins(project["optional-dependencies"][extra])
    return {name: version for name, version in declared.items() if name not in SUBMIT_ONLY}


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_file_pins_agree_with_pyproject(env_file):
    assert env_file.name in ENV_EXTRAS, f"{env_file.name}: say which extras it is built from in ENV_EXTRAS"
    declared = _declared_pins(env_file.name)
    env_pins = _pins(_env_pip(env_file))
    assert env_pins, f"{env_file.name} pins nothing"
    disagreements = {
        name: (version, declared.get(name)) for name, version in env_pins.items() if declared.get(name) != version
    }
    assert disagreements == {}, f"{env_file.name}: (env, pyproject) versions differ: {disagreements}"
    missing = set(declared) - set(env_pins)
    assert missing == set(), f"{env_file.name} lacks pins for {sorted(missing)}"
    assert not set(env_pins) & SUBMIT_ONLY, f"{env_file.name}: a job env does not run Snakemake"


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_file_installs_nothing_by_path(env_file):
    """Snakemake copies an env file to .snakemake/conda/<hash>_.yaml and conda runs pip in that folder,
    so `-e ../` (or any path) names .snakemake/, not the repository, and every env build failed. The
    rules run grail-sim from src/ instead (common.smk's GRAIL). tests/integration/test_environments.py
    replays conda's pip call for real."""
    by_path = [line for line in _env_pip(env_file)
               if line.startswith(("-e", "--editable", ".", "/", "file:")) or "/" in line]
    assert by_path == [], f"{env_file.name}: pip lines that name a path: {by_path}"


def test_rules_run_grail_sim_from_the_checkout():
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    line = next(line for line in common.splitlines() if line.startswith("GRAIL = "))
    assert "PYTHONPATH=" in line and "python -m grail_sim.cli" in line, line


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
