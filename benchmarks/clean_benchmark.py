"""Time the clean stage on a demo capsule of realistic size (about 6,000 allowed participants, 25,000 steps).

    .venv/bin/python benchmarks/clean_benchmark.py [--participants 8000] [--seed 13] [--repeats 3]

Prints a Markdown table: generation time, then the clean stage end to end (read, filter, build rows,
split, write parquet + stats) as the CLI runs it, best of --repeats, plus peak memory. The figures
depend on the machine; README.md records one measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=8000,
                        help="generated participants (about 75%% pass the allow-lists)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from grail_sim.data.clean import clean_capsule, resolve_config
    from grail_sim.data.contract import finalise, write_outputs
    from grail_sim.data.demo_capsule import write_demo_capsule

    with tempfile.TemporaryDirectory(prefix="grail-clean-bench-") as tmp:
        capsule = Path(tmp) / "capsule"
        started = time.perf_counter()
        truth = write_demo_capsule(capsule, participants=args.participants, seed=args.seed)
        generate_s = time.perf_counter() - started
        config = resolve_config()
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            rows, stats = clean_capsule(capsule, config)
            frame, stats = finalise(rows, stats, config)
            write_outputs(frame, stats, Path(tmp) / "interactions.parquet", Path(tmp) / "stats.json")
            timings.append(time.perf_counter() - started)
        parquet_mb = (Path(tmp) / "interactions.parquet").stat().st_size / 1e6
        sessions_mb = (capsule / "data" / "platform session data" / "sessions.json").stat().st_size / 1e6

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = stats["rows"] == truth["expected_rows"] and stats["gold_index_counts"] == truth["gold_position_counts"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {sys.version.split()[0]}")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| generated participants | {truth['participants']} |")
    print(f"| sessions in sessions.json | {stats['sessions_read']} ({sessions_mb:.1f} MB) |")
    print(f"| allowed participants with rows | {stats['participants']} |")
    print(f"| rows (session steps) | {stats['rows']} |")
    print(f"| demo-capsule generation | {generate_s:.1f} s |")
    print(f"| clean, best of {args.repeats} | {min(timings):.2f} s |")
    print(f"| clean, all runs | {', '.join(f'{t:.2f}' for t in timings)} s |")
    print(f"| rows per second | {stats['rows'] / min(timings):,.0f} |")
    print(f"| interactions.parquet | {parquet_mb:.1f} MB |")
    print(f"| peak resident memory (whole script) | {peak_mb:.0f} MB |")
    print(f"| round trip matches the generator | {ok} |")
    print(f"| stance rule / most frequent position (demo signal) | "
          f"{truth['stance_rule_accuracy_displayed']:.3f} / {truth['most_frequent_position_share']:.3f} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
