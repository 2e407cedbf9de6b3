"""Load time, prompt lengths and greedy generation throughput of a policy on real chat prompts.

    .venv/bin/python benchmarks/model_benchmark.py --model results/models/base \
        --prompts ../shared/real/next_video_study2.jsonl --rows 8 --batch-size 4 --max-new-tokens 32

The prompts file is JSONL with a `messages` (or `prompt`) list of {"role", "content"} per row.
Prints one JSON object; nothing is written unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True, help="JSONL with a messages/prompt column")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    args = parser.parse_args()

    import torch

    from grail_sim.io import read_jsonl, write_json
    from grail_sim.model.loading import load_policy

    rows = []
    for row in read_jsonl(args.prompts):
        messages = row.get("messages") or row.get("prompt")
        if not messages:
            raise SystemExit(f"{args.prompts}: row {row.get('id', len(rows))} has no messages/prompt")
        rows.append(messages)
        if len(rows) == args.rows:
            break

    started = time.monotonic()
    model, tokenizer = load_policy(args.model, dtype=args.dtype, device=args.device)
    load_seconds = time.monotonic() - started
    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in rows]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    new_tokens = 0
    generate_seconds = 0.0
    for start in range(0, len(texts), args.batch_size):
        batch = tokenizer(texts[start:start + args.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
        began = time.monotonic()
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        generate_seconds += time.monotonic() - began
        generated = out[:, batch["input_ids"].shape[1]:]
        new_tokens += int((generated != tokenizer.pad_token_id).sum())
        print(f"batch {start // args.batch_size + 1}: {generated.shape[1]} steps, "
              f"{time.monotonic() - began:.1f} s", flush=True)

    result = {
        "model": args.model, "device": str(model.device), "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(), "rows": len(texts), "batch_size": args.batch_size,
        "load_seconds": round(load_seconds, 2),
        "prompt_tokens": {"mean": round(statistics.mean(lengths), 1), "max": max(lengths),
                          "min": min(lengths)},
        "new_tokens": new_tokens, "generate_seconds": round(generate_seconds, 2),
        "new_tokens_per_second": round(new_tokens / generate_seconds, 2),
        "rows_per_second": round(len(texts) / generate_seconds, 3),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
