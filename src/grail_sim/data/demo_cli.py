"""`grail-sim demo-capsule`: a synthetic capsule in the CodeOcean layout.
"""

from __future__ import annotations

import argparse
import logging

from grail_sim.data.demo_capsule import write_demo_capsule

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="capsule folder to write (replaced whole)")
    parser.add_argument("--participants", type=int, default=1200,
                        help="participants across the three studies, before any filtering")
    parser.add_argument("--seed", type=int, default=13)


def run(args: argparse.Namespace) -> int:
    if args.participants < 3:
        raise SystemExit("grail-sim demo-capsule: --participants must be at least 3 (one per study)")
    truth = write_demo_capsule(args.out, participants=args.participants, seed=args.seed)
    log.info("wrote demo capsule %s: %d participants, %d sessions, %d expected rows",
             args.out, truth["participants"], truth["sessions_written"], truth["expected_rows"])
    return 0
