"""Workflow configuration: one schema, its defaults, the sections each stage reads, and the
environment overrides.

`resources/config.schema.yaml` is the one home of every default (`default:` on each key). The
Snakefile validates `config/config.yaml` against it with Snakemake's `validate`, which fills the
defaults; each rule then passes the sections its stage reads to the CLI as one `--config-json`
argument, so a changed setting reruns exactly the stages that read it. Run by hand, a stage CLI
takes `--config FILE` (a workflow config file) instead, and the same schema fills the same
defaults here, with the same rule as Snakemake's `validate` (a missing key takes its default).

Environment variables of the earlier reference (`GAIL_*`, `GRAIL_MAX_HISTORY`, `GRAIL_SHOW_IDS`)
are read in one place, `apply_environment`, where the configuration is resolved: the Snakefile
for the workflow, the CLI by hand. They become ordinary config values that Snakemake sees and
provenance records, and each override is logged.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from grail_sim.errors import ConfigError

LOG = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent / "resources" / "config.schema.yaml"

# The config sections each stage reads (and nothing else): what a rule passes in --config-json.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "demo-capsule": ("data",),
    "clean": ("data", "clean"),
    "prompts": ("prompts",),
    "train": ("train",),
    "evaluate": ("evaluate", "prompts"),
    "report": ("report",),
    "simulate": ("simulate", "evaluate", "prompts"),
    # The math task's commands (#15): its problems, and their evaluation with evaluate's generation
    # and bootstrap settings (math_eval.EVALUATE_KEYS; the rule drops the other evaluate keys).
    "prompts math": ("math",),
    "evaluate-math": ("math", "evaluate"),
}

# Variable -> (config path, type) for the prompts stage.
ENVIRONMENT = {
    "GRAIL_MAX_HISTORY": (("prompts", "max_history"), int),
    "GRAIL_SHOW_IDS": (("prompts", "show_ids"), "bool"),
}
# Variable -> the recipe key it overrides (the cluster's knobs, as in the earlier reference). They
# land in `train.overrides` as text that the recipe loader reads as YAML, like `--set` text, and
# the recipe's dataclasses check the values. GRAIL_MAX_HISTORY sets both history limits: 0 means
# full history in the prompts and in the discriminator alike.
RECIPE_ENVIRONMENT = {
    "GAIL_USE": "gail_use",
    "GAIL_WEIGHT": "gail_weight",
    "GAIL_ALPHA": "gail_alpha",
    "GAIL_LR": "gail_lr",
    "GAIL_DISC_MODEL": "gail_disc_model",
    "GAIL_DEVICE": "gail_device",
    "GRAIL_MAX_HISTORY": "gail_max_history",
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The parsed schema, read once per process (about 50 ms to parse); callers must not change it."""
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


_TYPED = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def typed_command_line_values(config: dict) -> list[str]:
    """Give back their types to the values that Snakemake's `--config` read as text (in place).

    Snakemake reads a nested `--config` value with YAML's BaseLoader, so `train='{threads: 2}'` or
    `slurm='{gpu_jobs: {train: {gpus: 1}}}'` arrive as "2" and "1" and fail the schema's integer
    check. A text value where the schema allows no text is read as YAML (io.yaml_load) and kept when
    that gives a type the schema allows. Returns the dotted keys it changed."""
    from grail_sim import io

    schema = load_schema()
    definitions = schema.get("$defs", {})
    changed: list[str] = []

    def walk(node: Any, spec: dict, path: tuple[str, ...]) -> Any:
        if "$ref" in spec:
            spec = {**definitions[spec["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in spec.items() if k != "$ref"}}
        kinds = spec.get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if isinstance(node, str) and kinds and "string" not in kinds:
            try:
                value = io.yaml_load(node)
            except Exception:  # noqa: BLE001 - not YAML: left as it is for the schema to report
                return node
            allowed = tuple(t for kind in kinds if kind in _TYPED for t in
                            (_TYPED[kind] if isinstance(_TYPED[kind], tuple) else (_TYPED[kind],)))
            if isinstance(value, allowed) and not (isinstance(value, bool) and "boolean" not in kinds):
                changed.append(".".join(path))
                return value
            return node
        if isinstance(node, dict):
            properties = spec.get("properties", {})
            for key, value in node.items():
                if key in properties:
                    node[key] = walk(value, properties[key], (*path, key))
        return node

    walk(config, schema, ())
    return changed


def _validator(schema: dict):
    """Draft 2020-12 validator that fills `default:` values as Snakemake's `validate` does."""
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for key, spec in properties.items():
                if "default" in spec:
                    instance.setdefault(key, copy.deepcopy(spec["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    return validators.extend(Draft202012Validator, {"properties": fill_defaults})(schema)


def _error_text(error, prefix: str) -> str:
    path = ".".join([prefix, *map(str, error.absolute_path)] if prefix else map(str, error.absolute_path))
    return f"{path or '(top level)'}: {error.message}"


def resolve(config: Mapping[str, Any] | None, *, source: str = "configuration") -> dict:
    """The whole workflow configuration, validated against the schema with its defaults filled.

    Raises ConfigError naming `source` and the key path of the first problem.
    """
    resolved = copy.deepcopy(dict(config or {}))
    error = _first_error(_validator(load_schema()), resolved)
    if error is not None:
        raise ConfigError(f"{source}: {_error_text(error, '')}")
    return resolved


def resolve_section(name: str, values: Mapping[str, Any] | None, *, source: str = "configuration") -> dict:
    """One section (for example `prompts`) validated against its part of the schema, defaults filled."""
    schema = load_schema()
    if name not in schema["properties"]:
        raise ConfigError(f"{source}: unknown config section {name!r}; sections: {sorted(schema['properties'])}")
    section_schema = {**schema["properties"][name], "$defs": schema.get("$defs", {})}
    resolved = copy.deepcopy(dict(values or {}))
    error = _first_error(_validator(section_schema), resolved)
    if error is not None:
        raise ConfigError(f"{source}: {_error_text(error, name)}")
    return resolved


def section_with_flags(name: str, section: Mapping[str, Any], args: argparse.Namespace,
                       flags: Mapping[str, str], *, source: str) -> dict:
    """`section` with every flag given on the command line (not None) set at its dotted key
    (`{"test": "rows.test"}` sets section["rows"]["test"] from --test), validated again."""
    section = copy.deepcopy(dict(section))
    for flag, key in flags.items():
        if getattr(args, flag) is not None:
            _set_at(section, key.split("."), getattr(args, flag))
    return resolve_section(name, section, source=source)


def _set_at(node: dict, path: Sequence[str], value: Any) -> Any:
    """Set `value` at the key path inside nested dicts (made where missing); returns what was there,
    or "(default)"."""
    for key in path[:-1]:
        node = node.setdefault(key, {})
    previous = node.get(path[-1], "(default)")
    node[path[-1]] = value
    return previous


def _first_error(validator, instance):
    # Defaults are filled while validating, so iterate every error once and report the best one.
    from jsonschema.exceptions import best_match

    return best_match(validator.iter_errors(instance))


def stage_config(stage: str, sections: Mapping[str, Any], *, source: str) -> dict:
    """The sections `stage` reads, each resolved; any other section is refused (it would be ignored)."""
    wanted = STAGE_SECTIONS[stage]
    extra = sorted(set(sections) - set(wanted))
    if extra:
        raise ConfigError(f"{source}: section(s) {extra} are not read by `grail-sim {stage}` (it reads {list(wanted)})")
    return {name: resolve_section(name, sections.get(name), source=source) for name in wanted}


def apply_environment(config: dict, environ: Mapping[str, str]) -> list[str]:
    """Write the set environment variables into `config` (in place): the prompts stage's as typed
    values, the training ones as recipe overrides in `train.overrides` (text, converted by the
    recipe's parser as a flag's value is). Returns one message per override, naming the variable and the key."""
    messages = []
    for variable, (path, kind) in ENVIRONMENT.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        previous = _set_at(config, path, _parse_env(variable, raw, kind))
        messages.append(f"{variable}={raw} overrides {'.'.join(path)} (was {previous!r})")
    for variable, key, text in _recipe_environment(environ):
        config.setdefault("train", {}).setdefault("overrides", {})[key] = text
        messages.append(f"{variable}={environ[variable].strip()} overrides recipe key {key} (train.overrides)")
    return messages


def _recipe_environment(environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(variable, recipe key, value text) of each set variable of RECIPE_ENVIRONMENT; the text is
    the value as a flag's word, which the recipe's parser converts to the field's type."""
    return [(variable, key, environ[variable].strip()) for variable, key in RECIPE_ENVIRONMENT.items()
            if (environ.get(variable) or "").strip()]


def _parse_env(variable: str, raw: str, kind) -> Any:
    if kind == "bool":
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"environment variable {variable}={raw!r}: expected one of {sorted(_TRUE | _FALSE)}")
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"environment variable {variable}={raw!r}: expected {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """`--config FILE` (by hand) or `--config-json TEXT` (what a rule passes)."""
    sections = ", ".join(STAGE_SECTIONS[stage])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, metavar="FILE",
                       help=f"workflow config file (YAML or JSON); this stage reads its section(s): {sections}. "
                            "Keys left out take the schema's defaults (grail-sim config shows them)")
    group.add_argument("--config-json", metavar="JSON",
                       help=f"the resolved section(s) {sections} as one JSON object (how the workflow's rules call)")


def from_arguments(stage: str, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict:
    """The sections `stage` reads, from `--config` or `--config-json`, with environment overrides
    applied when run by hand from a file (a rule's JSON already carries them)."""
    if args.config_json is not None:
        try:
            sections = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config-json is not valid JSON ({err.msg})") from None
        if not isinstance(sections, dict):
            raise ConfigError("--config-json must be a JSON object of config sections")
        return stage_config(stage, sections, source="--config-json")
    config = read_file(args.config) if args.config is not None else {}
    for message in apply_environment(config, environ or {}):
        LOG.info(message)
    source = str(args.config) if args.config is not None else "defaults"
    full = resolve(config, source=source)
    return {name: full[name] for name in STAGE_SECTIONS[stage]}


def read_file(path: Path) -> dict:
    """A workflow config file (YAML or JSON) as a mapping of sections."""
    from grail_sim.io import read_yaml_mapping

    return read_yaml_mapping(path, what="config file", error=ConfigError)
