"""The verifiable math task (#15): seeded arithmetic problems with graded difficulty, written as a
prompt dataset the trainers and rewards read like the other tasks.

Each row (the math contract, beside Contract 2 of docs/DESIGN.md):

| column | meaning |
|---|---|
| `id` | `math-{seed}-{index}` |
| `task` | `math` |
| `prompt` | chat messages: the style's system prompt, then the problem |
| `problem` | the problem text |
| `answer` | the exact answer, canonical (`answers.canonical_answer`: an integer or a reduced fraction) |
| `solution` | a worked solution ending in `The answer is \\boxed{answer}.` (`answers.solution_text`) |
| `difficulty` | 1 (one operation on small numbers) .. 3 (a two-step word problem with a fraction) |
| `style` | `answer` (`<think>...</think><answer>...</answer>`) or `boxed` (`\\boxed{...}`) |

Levels are drawn in equal shares, so that a small model has room to improve on the harder ones.
The problems come from the seeded generator below, or from a dataset (`math_import`: a hub name, a
saved folder or a file, with a column mapping), as the workflow's `math:` config section says.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from grail_sim.answers import ANSWER_SENTENCE, canonical_answer, reply, solution_text
from grail_sim.errors import PromptError
from grail_sim.prompts.math_import import dataset_splits

STYLES = {
    "answer": ("Solve the arithmetic problem. Think step by step, then reply exactly as "
               "<think>your working</think><answer>the final number</answer>. Write a fraction as a/b."),
    "boxed": ("Solve the arithmetic problem. Think step by step and put the final number in \\boxed{}. "
              "Write a fraction as \\frac{a}{b}."),
}
LEVELS = (1, 2, 3)
# Divisible quantities: a share may be a fraction (level 3 answers are often a/b).
ITEMS = ["litres of juice", "metres of ribbon", "kilograms of rice", "cups of flour", "pizzas", "hours of work"]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima"]


def problem(rng: random.Random, level: int) -> tuple[str, Fraction, str]:
    """(problem text, exact answer, worked solution) of one problem of `level`."""
    if level == 1:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            return f"What is {a} + {b}?", Fraction(a + b), f"{a} + {b} = {a + b}."
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", Fraction(a - b), f"{a} - {b} = {a - b}."
    if level == 2:
        a, b, c = rng.randint(3, 19), rng.randint(3, 19), rng.randint(5, 60)
        return (f"What is {a} * {b} + {c}?", Fraction(a * b + c),
                f"{a} * {b} = {a * b}; {a * b} + {c} = {a * b + c}.")
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total, given, parts = rng.randint(12, 90), rng.randint(1, 11), rng.choice([2, 3, 4, 5])
    left = total - given
    share = Fraction(left, parts)
    return (f"{name} has {total} {item} and gives {given} away. The rest are shared equally among {parts} "
            f"friends. How many {item} does each friend get?", share,
            f"{total} - {given} = {left}; {left} / {parts} = {_plain(share)}.")


def _plain(value: Fraction) -> str:
    return canonical_answer(str(value)) or str(value)


def reference_reply(row: dict) -> str:
    """The reply a solver would give to a row, in the row's style: the sft stage's target.

    answer style: `<think>{working}</think><answer>{answer}</answer>`; boxed style: the solution,
    whose last sentence holds `\\boxed{answer}`."""
    solution = str(row.get("solution") or "")
    if row.get("style") == "boxed":
        return solution
    cut = solution.rfind(ANSWER_SENTENCE)
    return reply(solution[:cut] if cut >= 0 else solution, str(row["answer"]))


def contract_row(row_id: str, fields: dict[str, Any], style: str) -> dict[str, Any]:
    """One row of the math contract from its fields (problem, answer, solution, difficulty)."""
    return {"id": row_id, "task": "math",
            "prompt": [{"role": "system", "content": STYLES[style]}, {"role": "user", "content": fields["problem"]}],
            "problem": fields["problem"], "answer": fields["answer"], "solution": fields["solution"],
            "difficulty": fields["difficulty"], "style": style}


def math_rows(count: int, seed: int, style: str = "answer") -> list[dict[str, Any]]:
    """`count` generated rows of the math contract, levels in equal shares, reproducible from `seed`."""
    if style not in STYLES:
        raise ValueError(f"math style must be one of {', '.join(STYLES)}, got {style!r}")
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        level = LEVELS[index % len(LEVELS)]
        text, value, working = problem(rng, level)
        fields = {"problem": text, "answer": _plain(value), "solution": solution_text(working, _plain(value)),
                  "difficulty": level}
        rows.append(contract_row(f"math-{seed}-{index}", fields, style))
    return rows


def math_splits(section: dict[str, Any]) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """The rows of each split for the `math:` config section, and their stats: generated problems
    (`dataset` null; each split its own seed, so the splits are disjoint), or a dataset's mapped
    onto the contract (`math_import`), with the drops counted."""
    style, seed, counts = section["style"], section["seed"], section["rows"]
    if section["dataset"] is None:
        if counts["train"] == 0 or counts["test"] == 0:
            raise PromptError("math.rows: the generator needs train and test rows > 0")
        splits = {name: math_rows(counts[name], seed * 1000 + offset, style)
                  for offset, name in enumerate(("train", "validation", "test")) if counts[name] > 0}
        return splits, {"source": "generated", "style": style, "seed": seed,
                        "rows": {name: len(rows) for name, rows in splits.items()}, "dropped": {}}
    fields, dropped = dataset_splits(section)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(section["dataset"]).name).strip("-") or "math"
    splits = {name: [contract_row(f"{slug}-{name}-{index}", row, style) for index, row in enumerate(rows)]
              for name, rows in fields.items() if rows}
    return splits, {"source": section["dataset"], "config": section["dataset_config"], "style": style, "seed": seed,
                    "rows": {name: len(rows) for name, rows in splits.items()}, "dropped": dropped}


def write_math_dataset(out: str | Path, section: dict[str, Any]) -> dict[str, Any]:
    """The math prompt dataset of the `math:` section (a DatasetDict, split per folder) with its
    stats.json, saved atomically; returns the stats."""
    from datasets import Dataset, DatasetDict

    from grail_sim import io

    splits, stats = math_splits(section)
    with io.atomic_dir(Path(out)) as tmp:
        DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(tmp))
        io.write_json(tmp / "stats.json", stats)
    return stats
