"""Math problems from a dataset (#15): a hub dataset by name, a saved `datasets` folder, or a local
.json/.jsonl/.parquet/.csv file, mapped onto the math contract (`math_task`) by the `math:` config
section's `columns`, `answer_pattern` and `dataset_splits`.

- `columns` names the source column of each contract field; DeepScaleR's names (problem, answer,
  solution) are the defaults. For GSM8K: `columns: {problem: question, answer: answer, solution: null}`
  with `answer_pattern: "####\\s*(.+)$"`: the answer column's text after `####` is the answer and the
  text before it the worked solution.
- Each split comes from the source split `dataset_splits` names; a null split is carved from the
  train source after a seeded shuffle, disjoint from the training problems (GSM8K has no validation
  split, DeepScaleR only a train split).
- Rows whose problem or answer is empty, or whose answer the pattern does not find, are dropped and
  counted per split and reason (returned, logged and written to the dataset's stats.json).
- Answers are stored canonical (`answers.canonical_answer`: "1,234" -> "1234", "0.50" -> "1/2") so
  that `answer_exact_match` compares one spelling; symbolic answers keep their text, which
  `boxed_accuracy` (math-verify) checks.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from grail_sim.answers import canonical_answer, solution_text
from grail_sim.errors import PromptError

LOG = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_source(name: str, config_name: str | None):
    """The source DatasetDict: a saved folder, a local file (its one split is `train`), or a hub name."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(name)
    try:
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            return load_from_disk(str(path))
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise PromptError(f"math.dataset {name}: a file must end in one of {sorted(FILE_BUILDERS)}")
            return DatasetDict(train=load_dataset(builder, data_files=str(path), split="train"))
        return load_dataset(name, config_name)
    except PromptError:
        raise
    except Exception as err:  # the hub's, the file readers' and datasets' own errors alike
        raise PromptError(f"math.dataset {name!r} does not load: {type(err).__name__}: {err}") from None


def mapped_fields(source: Mapping[str, Any], section: Mapping[str, Any], pattern: re.Pattern | None
                 ) -> tuple[dict[str, Any] | None, str | None]:
    """(the math fields of one source row, None) or (None, why it is dropped)."""
    columns = section["columns"]
    problem = str(source.get(columns["problem"]) or "").strip()
    raw = str(source.get(columns["answer"]) or "").strip()
    if not problem:
        return None, "empty problem"
    working = ""
    if pattern is not None:
        matches = list(pattern.finditer(raw))
        if not matches:
            return None, "answer_pattern not found"
        working, raw = raw[:matches[-1].start()].strip(), matches[-1].group(1).strip()
    canonical = canonical_answer(raw)
    if not canonical:
        return None, "empty answer"
    # A number in its one spelling; symbolic text as written, for math-verify (canonical_answer
    # would lower-case it).
    answer = canonical if _is_number(canonical) else raw
    solution_column = columns["solution"]
    if solution_column and source.get(solution_column):
        working = str(source[solution_column]).strip()
    difficulty = source.get(columns["difficulty"]) if columns["difficulty"] else None
    return {"problem": problem, "answer": answer, "solution": solution_text(working, answer) if working else "",
            "difficulty": None if difficulty is None else str(difficulty)}, None


def _is_number(answer: str) -> bool:
    return re.fullmatch(r"-?\d+(/\d+)?", answer) is not None


def dataset_splits(section: Mapping[str, Any]) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """The mapped rows of each split of `math.dataset`, and the drops of each split by reason."""
    for column in ("problem", "answer"):
        if not section["columns"][column]:
            raise PromptError(f"math.columns.{column} must name a source column")
    source = load_source(section["dataset"], section["dataset_config"])
    pattern = _compile(section["answer_pattern"])
    wanted, counts, seed = section["dataset_splits"], section["rows"], section["seed"]
    train_source = _split(source, wanted["train"], section)
    _check_columns(train_source, section)
    shuffled = train_source.shuffle(seed=seed)
    carved = [name for name in ("validation", "test") if wanted[name] is None and counts[name] > 0]
    for name in ("validation", "test"):
        if wanted[name] is None and counts[name] == 0:
            LOG.info("math split %s: no source split and rows.%s 0, so none", name, name)
    taken = sum(counts[name] for name in carved)
    if taken >= len(shuffled):
        raise PromptError(f"math.dataset {section['dataset']}: carving {taken} problems for {carved} leaves none of "
                          f"the {len(shuffled)} in source split {wanted['train']!r} to train on")
    pools, start = {}, 0
    for name in carved:  # carved first, from the front of the shuffle; training takes the rest
        pools[name] = shuffled.select(range(start, start + counts[name]))
        start += counts[name]
    pools["train"] = shuffled.select(range(start, len(shuffled)))
    for name in ("validation", "test"):
        if wanted[name] is not None:
            pools[name] = _split(source, wanted[name], section).shuffle(seed=seed)
    rows, drops = {}, {}
    for name in ("train", "validation", "test"):
        if name not in pools:
            continue
        rows[name], drops[name] = _mapped(pools[name], section, pattern, counts[name])
        LOG.info("math split %s: %d problems from %s (dropped %s)", name, len(rows[name]), section["dataset"],
                 dict(drops[name]) or "none")
    return rows, drops


def _check_columns(pool, section: Mapping[str, Any]) -> None:
    missing = [section["columns"][field] for field in ("problem", "answer")
               if section["columns"][field] not in pool.column_names]
    if missing:
        raise PromptError(f"math.dataset {section['dataset']} lacks column(s) {missing} (math.columns); it has "
                          f"{pool.column_names}")


def _mapped(pool, section, pattern, limit: int) -> tuple[list[dict], dict[str, int]]:
    _check_columns(pool, section)
    rows, drops = [], Counter()
    for source in pool:
        if limit and len(rows) >= limit:
            break
        fields, why = mapped_fields(source, section, pattern)
        if fields is None:
            drops[why] += 1
        else:
            rows.append(fields)
    return rows, dict(drops)


def _split(source, name: str, section: Mapping[str, Any]):
    if name not in source:
        raise PromptError(f"math.dataset {section['dataset']} has no split {name!r} (math.dataset_splits); it has "
                          f"{sorted(source)}")
    return source[name]


def _compile(text: str | None) -> re.Pattern | None:
    if not text:
        return None
    try:
        pattern = re.compile(text, re.MULTILINE | re.DOTALL)
    except re.error as err:
        raise PromptError(f"math.answer_pattern {text!r} is not a regular expression: {err}") from None
    if pattern.groups < 1:
        raise PromptError(f"math.answer_pattern {text!r} needs a group around the answer, e.g. ####\\s*(.+)$")
    return pattern
