"""`grail-sim clean`: the raw capsule or a pre-cleaned dataset -> interactions.parquet + stats.json.

    grail-sim clean --capsule results/demo_capsule --out interactions.parquet --stats stats.json \\
        [--config config/config.yaml]

The `clean:` section (allow-lists, splits) and `data.dataset.columns` (the column map of a
pre-cleaned dataset) come from the configuration; paths come from flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from grail_sim import config
from grail_sim.data.clean import clean_capsule, resolve_config
from grail_sim.data.contract import finalise, write_outputs
from grail_sim.data.dataset import clean_dataset
from grail_sim.errors import CapsuleError, CleanError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--capsule", help="capsule root or its data/ folder (CodeOcean 5416997 layout)")
    source.add_argument("--dataset", help="pre-cleaned dataset: parquet/json/csv file, a folder, or a hub name "
                                          "(columns mapped with data.dataset.columns)")
    parser.add_argument("--out", required=True, help="interactions parquet to write")
    parser.add_argument("--stats", required=True, help="stats JSON to write")
    config.add_arguments(parser, "clean")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    sections = config.from_arguments("clean", args, os.environ)
    clean_config = resolve_config(sections["clean"])
    if args.capsule is not None:
        if not args.capsule.strip():
            raise CapsuleError("--capsule is empty; set data.capsule_dir in config/config.yaml")
        rows, stats = clean_capsule(args.capsule, clean_config)
    else:
        if not args.dataset.strip():
            raise CapsuleError("--dataset is empty; set data.dataset.path in config/config.yaml")
        rows, stats = clean_dataset(args.dataset, sections["data"]["dataset"]["columns"], clean_config)
    if not rows:
        raise CleanError(f"no rows survived cleaning; drops: {stats['drops']}")
    frame, stats = finalise(rows, stats, clean_config)
    stats["elapsed_s"] = round(time.perf_counter() - started, 3)
    write_outputs(frame, stats, args.out, args.stats)
    log.info("wrote %d rows (%d participants) to %s; drops %s", stats["rows"], stats["participants"], args.out,
             stats["drops"])
    return 0
