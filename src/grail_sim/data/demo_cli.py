"""`grail-sim demo-capsule`: a synthetic capsule in the CodeOcean layout.

    grail-sim demo-capsule --out results/demo_capsule [--config config/config.yaml]

Its size and seed are `data.demo.participants` and `data.demo.seed`; its population
`data.demo.leaning_shares`; its signal strength and position bias `data.demo.stance_match_prob` and
`data.demo.position_weights`.
"""

from __future__ import annotations

import argparse
import logging
import os

from grail_sim import config
from grail_sim.data.demo_capsule import write_demo_capsule

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="capsule folder to write (replaced whole)")
    config.add_arguments(parser, "demo-capsule")


def run(args: argparse.Namespace) -> int:
    demo = config.from_arguments("demo-capsule", args, os.environ)["data"]["demo"]
    try:  # what the schema cannot check (the shares' sum) fails here, naming the key
        truth = write_demo_capsule(args.out, participants=demo["participants"], seed=demo["seed"],
                                   stance_match_prob=demo["stance_match_prob"],
                                   position_weights=demo["position_weights"], leaning_shares=demo["leaning_shares"])
    except ValueError as err:
        raise config.ConfigError(str(err)) from None
    log.info("wrote demo capsule %s: %d participants, %d sessions, %d expected rows (stance_match_prob %.2f; "
             "viewers %s)", args.out, truth["participants"], truth["sessions_written"], truth["expected_rows"],
             demo["stance_match_prob"], truth["behaviour_model"]["leaning_counts"])
    return 0
