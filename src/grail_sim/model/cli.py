"""`grail-sim model build|smoke|tiny|publish`.

    grail-sim model build --out results/models/base [--config config/config.yaml]
    grail-sim model smoke --model results/models/base --out smoke.json [--config ...]
    grail-sim model publish --model results/train/grail_gun/final --repo-id you/grail-gun \
        [--report reports/grail_gun.md] [--public] [--dry-run]

`build` reads `model.name_or_path`, `model.embedded_package` and `model.embedded_file`; `smoke`
sends `model.smoke_prompt`. `tiny` writes the tiny random model of tests and benchmarks. `publish` pushes a
trained model's final/ folder and a model card to the Hugging Face Hub (grail_sim.model.publish);
`--dry-run` prints what would be uploaded, without network.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from grail_sim import config
from grail_sim.io import write_json
from grail_sim.model.embedded import (
    build_base_model,
    embedded_tokenizer_dir,
)
from grail_sim.model.loading import DTYPES, build_tiny_model, smoke

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    build = sub.add_parser("build", help="write the base model as a plain Hugging Face folder")
    build.add_argument("--dtype", default="float32", choices=DTYPES, help="saved weight dtype")
    build.add_argument("--out", required=True, help="output folder (replaced atomically)")
    config.add_arguments(build, "model")

    smoke_cmd = sub.add_parser("smoke", help="greedy-generate one chat answer and write it as JSON")
    smoke_cmd.add_argument("--model", required=True, help="model folder (full or adapter)")
    smoke_cmd.add_argument("--max-new-tokens", type=int, default=32)
    smoke_cmd.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    smoke_cmd.add_argument("--out", required=True, help="output JSON file")
    config.add_arguments(smoke_cmd, "model")

    publish = sub.add_parser("publish", help="push a trained model's final/ and a model card to the Hub")
    publish.add_argument("--model", required=True, help="a trained model's final/ folder")
    publish.add_argument("--repo-id", required=True, help="Hub repository, e.g. you/grail-gun")
    publish.add_argument("--report", default=None, help="the model's report, appended to the model card")
    publish.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    publish.add_argument("--dry-run", action="store_true", help="print the files and card; upload nothing")

    tiny = sub.add_parser("tiny", help="write a tiny random model with the embedded tokenizer")
    tiny.add_argument("--tokenizer", default=None,
                      help="tokenizer folder (default: the embedded tokenizer, built into the cache)")
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--num-layers", type=int, default=2)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--out", required=True, help="output folder (replaced atomically)")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.action == "build":
        model = config.from_arguments("model", args, os.environ)["model"]
        provenance = build_base_model(model["name_or_path"], args.out, package=model["embedded_package"],
                                      gguf_file=model["embedded_file"], dtype=args.dtype)
        print(json.dumps(provenance, indent=2, sort_keys=True))
    elif args.action == "publish":
        from pathlib import Path

        from grail_sim.model.publish import push_final, upload_plan

        report = Path(args.report) if args.report else None
        if args.dry_run:
            print(json.dumps(upload_plan(Path(args.model), report), indent=2))
        else:
            push_final(Path(args.model), args.repo_id, report=report, private=not args.public)
    elif args.action == "smoke":
        log.info("smoke test of %s", args.model)
        prompt = config.from_arguments("model", args, os.environ)["model"]["smoke_prompt"]
        result = smoke(args.model, prompt, max_new_tokens=args.max_new_tokens, device=args.device)
        write_json(args.out, result)
        log.info("%d new tokens in %.2f s (%.1f tokens/s): %r", result["new_tokens"],
                 result["seconds"], result["tokens_per_second"] or 0.0, result["output"])
    else:
        tokenizer = args.tokenizer or embedded_tokenizer_dir()
        build_tiny_model(args.out, tokenizer, hidden_size=args.hidden_size, num_layers=args.num_layers, seed=args.seed)
        log.info("tiny model written to %s", args.out)
    return 0
