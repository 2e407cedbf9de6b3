"""The supervised format warm-up before RL, and a quick greedy accuracy check on held-out rows.
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any, Mapping

from grail_sim import answers
from grail_sim.training.settings import WarmupSettings

LOG = logging.getLogger(__name__)


def warmup_target(row: dict, template: str) -> str:
    """`<think>short text</think><answer>gold</answer>` for one training row: the think is `template`
    filled for the human's choice (`answers.think_text`, which the think-forced scoring fills the
    same way for every option)."""
    gold = int(row["gold_index"])
    item = {}
    slate = row.get("slate_items")
    if slate:
        try:
            items = json.loads(slate) if isinstance(slate, str) else slate
            item = items[gold - 1] if 0 < gold <= len(items) else {}
        except (ValueError, TypeError, json.JSONDecodeError):
            item = {}
    return answers.reply(answers.think_text(template, gold, item), str(gold))


def assistant_turn(tokenizer, messages: list, prompt_text: str, content: str) -> str:
    """`content` as the chat template renders an assistant reply after `prompt_text`, end of turn
    included, so that the warm-up teaches the token on which generation stops (`<|im_end|>` for
    SmolLM2), whatever the tokenizer calls EOS."""
    full = tokenizer.apply_chat_template(list(messages) + [{"role": "assistant", "content": content}],
                                         tokenize=False)
    if full.startswith(prompt_text) and content in full[len(prompt_text):]:
        return full[len(prompt_text):]
    return content + (tokenizer.eos_token or "")


def balanced_order(data, rng: random.Random) -> list[int]:
    """Row indices interleaved round-robin over gold positions, so that the warm-up does not teach
    the position prior (answering "1" everywhere, the reference's failure) before RL starts."""
    by_position: dict[int, list[int]] = {}
    for index, gold in enumerate(data["gold_index"]):
        by_position.setdefault(int(gold), []).append(index)
    for rows in by_position.values():
        rng.shuffle(rows)
    order, depth = [], max(len(rows) for rows in by_position.values())
    for level in range(depth):
        for position in sorted(by_position):
            rows = by_position[position]
            order.append(rows[level % len(rows)])
    return order


def supervised_warmup(model, tokenizer, data, settings: WarmupSettings | Mapping[str, Any], *, seed: int,
                      device: str) -> list[dict]:
    """A few supervised steps on (prompt, think/answer target) pairs; loss on the target tokens only.

    `settings` is the recipe's `warmup_sft` section (a mapping of its keys is accepted too)."""
    import torch

    if not isinstance(settings, WarmupSettings):
        settings = WarmupSettings.from_mapping(settings)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    rng = random.Random(seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    if settings.balance_positions:
        order = balanced_order(data, rng)
    model.train()
    history, cursor, started = [], 0, time.perf_counter()
    for step in range(1, settings.steps + 1):
        batch_rows = []
        for _ in range(settings.batch_size):
            if cursor >= len(order):
                rng.shuffle(order)
                cursor = 0
            batch_rows.append(data[order[cursor]])
            cursor += 1
        loss = _warmup_loss(model, tokenizer, batch_rows, settings, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append({"warmup_step": step, "warmup_loss": float(loss.detach())})
        if step == 1 or step % 10 == 0 or step == settings.steps:
            LOG.info("warm-up step %d/%d: loss %.4f (%.1fs)", step, settings.steps, float(loss.detach()),
                     time.perf_counter() - started)
    model.eval()
    return history


def _warmup_loss(model, tokenizer, batch_rows: list[dict], settings: WarmupSettings, device: str):
    """Cross-entropy of the think/answer targets (and the end of turn) after their prompts."""
    import torch

    sequences, labels = [], []
    for row in batch_rows:
        prompt_text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        prompt_ids = prompt_ids[-settings.max_prompt_tokens:]
        target_ids = tokenizer(assistant_turn(tokenizer, row["prompt"], prompt_text,
                                              warmup_target(row, settings.think_template)),
                               add_special_tokens=False)["input_ids"]
        sequences.append(prompt_ids + target_ids)
        labels.append([-100] * len(prompt_ids) + target_ids)
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=device)
    attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    label_ids = torch.tensor([[-100] * (width - len(s)) + s for s in labels], device=device)
    # Left padding puts every target at the end: the vocabulary projection is only needed for the
    # last `keep` positions, which saves most of the memory and a fifth of the compute.
    keep = max(sum(1 for t in row if t != -100) for row in labels) + 1
    logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=keep).logits
    targets = label_ids[:, -keep + 1:]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def quick_accuracy(model, tokenizer, data, *, rows: int, max_new_tokens: int, device: str,
                   batch_size: int = 8) -> dict:
    """Greedy accuracy, parse rate and format rate on the first `rows` rows of `data`."""
    import torch

    rows = min(int(rows), len(data))
    if rows <= 0:
        return {"rows": 0}
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    correct = parsed = formatted = 0
    positions: dict[int, int] = {}
    try:
        for start in range(0, rows, batch_size):
            batch = [data[i] for i in range(start, min(rows, start + batch_size))]
            texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                     for r in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
            for row, ids in zip(batch, output[:, encoded["input_ids"].shape[1]:]):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                choice = answers.parse_choice(text, int(row["n_options"]))
                parsed += choice is not None
                formatted += answers.has_format(text)
                correct += choice is not None and choice == int(row["gold_index"])
                if choice is not None:
                    positions[choice] = positions.get(choice, 0) + 1
    finally:
        tokenizer.padding_side = previous_side
        model.train(was_training)
    return {"rows": rows, "accuracy": correct / rows, "parsed_rate": parsed / rows,
            "format_rate": formatted / rows, "predicted_positions": dict(sorted(positions.items()))}
