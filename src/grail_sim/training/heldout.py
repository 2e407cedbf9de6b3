"""A quick greedy accuracy check of a policy on held-out rows (`heldout_rows` of an RL recipe), before
and after training: how often it answers the human's choice, parses and keeps the answer format.
"""

from __future__ import annotations

from grail_sim import answers


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
