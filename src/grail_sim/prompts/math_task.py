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
| `solution` | a worked solution ending in `\\boxed{answer}` |
| `difficulty` | 1 (one operation on small numbers) .. 3 (a two-step word problem with a fraction) |
| `style` | `answer` (`<think>...</think><answer>...</answer>`) or `boxed` (`\\boxed{...}`) |

Levels are drawn in equal shares, so that a small model has room to improve on the harder ones.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path
from typing import Any

from grail_sim.answers import canonical_answer, latex_answer

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


def math_rows(count: int, seed: int, style: str = "answer") -> list[dict[str, Any]]:
    """`count` rows of the math contract, levels in equal shares, reproducible from `seed`."""
    if style not in STYLES:
        raise ValueError(f"math style must be one of {', '.join(STYLES)}, got {style!r}")
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        level = LEVELS[index % len(LEVELS)]
        text, value, working = problem(rng, level)
        rows.append({"id": f"math-{seed}-{index}", "task": "math",
                     "prompt": [{"role": "system", "content": STYLES[style]}, {"role": "user", "content": text}],
                     "problem": text, "answer": _plain(value),
                     "solution": f"{working} The answer is \\boxed{{{latex_answer(str(value))}}}.",
                     "difficulty": level, "style": style})
    return rows


def write_math_dataset(out: str | Path, *, rows: dict[str, int], seed: int, style: str = "answer") -> dict:
    """A DatasetDict with a split per `rows` entry (disjoint seeds), saved atomically; returns counts."""
    from datasets import Dataset, DatasetDict

    from grail_sim import io

    splits = {name: Dataset.from_list(math_rows(count, seed * 1000 + offset, style))
              for offset, (name, count) in enumerate(rows.items()) if count > 0}
    with io.atomic_dir(Path(out)) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))
    return {name: len(split) for name, split in splits.items()}
