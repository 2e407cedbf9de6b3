"""`grail-sim clean`: the raw capsule or a pre-cleaned dataset -> interactions.parquet + stats.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from grail_sim.data.capsule import (
    CapsuleError,
)
from grail_sim.data.clean import clean_capsule, resolve_config
from grail_sim.data.contract import finalise, write_outputs
from grail_sim.data.dataset import clean_dataset
from grail_sim.errors import CleanConfigError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--capsule", help="capsule root or its data/ folder (CodeOcean 5416997 layout)")
    source.add_argument("--dataset", help="pre-cleaned dataset: parquet/json/csv file, a folder, or a hub name")
    parser.add_argument("--columns", default="{}",
                        help='JSON map {contract_column: dataset_column} for --dataset (e.g. \'{"gold_index": "answer"}\')')
    parser.add_argument("--out", required=True, help="interactions parquet to write")
    parser.add_argument("--stats", required=True, help="stats JSON to write")
    parser.add_argument("--config-json", default="{}", help="the `clean:` config section as JSON (overrides defaults)")


def _json_arg(text: str, name: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"grail-sim clean: {name} is not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise SystemExit(f"grail-sim clean: {name} must be a JSON object")
    return value


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        config = resolve_config(_json_arg(args.config_json, "--config-json"))
        if args.capsule is not None:
            if not args.capsule.strip():
                raise CapsuleError("--capsule is empty; set data.capsule_dir in config/config.yaml")
            rows, stats = clean_capsule(args.capsule, config)
        else:
            if not args.dataset.strip():
                raise CapsuleError("--dataset is empty; set data.dataset.path in config/config.yaml")
            rows, stats = clean_dataset(args.dataset, _json_arg(args.columns, "--columns"), config)
    except (CapsuleError, CleanConfigError) as err:
        raise SystemExit(f"grail-sim clean: {err}") from None
    if not rows:
        raise SystemExit(f"grail-sim clean: no rows survived cleaning; drops: {stats['drops']}")
    frame, stats = finalise(rows, stats, config)
    stats["elapsed_s"] = round(time.perf_counter() - started, 3)
    write_outputs(frame, stats, args.out, args.stats)
    log.info("wrote %d rows (%d participants) to %s; drops %s", stats["rows"], stats["participants"], args.out, stats["drops"])
    return 0
