"""Reasoning-vocabulary expansion (#15, the RLVR seed's `model.reasoning_vocab_size`): a second copy
of (part of) the vocabulary that the policy may use only inside `<think>`. It belongs to the model:
`load_policy` rebuilds and decodes it, and the trainers and evaluation's HF generator use it too.

- `expand_vocabulary` resizes the embeddings from n_s to n_s + N rows. Row n_s + i copies the input
  embedding and output-head rows of the token it mirrors (ids 0..N-1 by default, so N = n_s
  duplicates the whole vocabulary); with tied embeddings the one shared matrix is copied once.
- `ReasoningLogitsProcessor` (a transformers LogitsProcessor) allows the reasoning ids only while a
  `<think>` block is open in the sequence, and masks them everywhere else.
- `decode_reasoning` maps each reasoning id back to the token it mirrors and counts them.
- `ReasoningTokenMap` is saved as `reasoning_token_map.json` beside a model (`save`) and in every
  checkpoint (`MapInCheckpoints`, a TrainerCallback).
- Under LoRA the new rows stay trainable through peft's `trainable_token_indices`
  (`lora_trainable_tokens`): only the N new rows of the embedding (and of a separate head) train
  beside the adapter, not the whole matrix.
- `mirrored_decoding` makes a tokenizer decode reasoning ids as the tokens they mirror, so that TRL's
  completions, the rewards and evaluation read the text the policy meant (`</think>` spelled with
  reasoning ids closes the block), while the ids themselves, and their log-probabilities, stay as
  generated.
- `constrained_generate` adds the logits processor to a model's `generate` for the duration of a
  `with` block: TRL's GRPO calls `generate` with a GenerationConfig only, which cannot carry one.
- `find_map` reads a model folder's map (None without one): `load_policy` uses it to resize the base
  under an adapter and to decode, the HF generator to apply the processor.

Generation with the processor is HF `generate` only: vLLM's sampler takes no transformers
LogitsProcessor, so a vLLM run cannot apply the mask (recipes and evaluation refuse the combination).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

MAP_FILE = "reasoning_token_map.json"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class ReasoningTokenMap:
    """base_vocab_size n_s, and the ids the reasoning rows n_s.. mirror (in order)."""

    base_vocab_size: int
    mirrored_ids: list[int]

    @property
    def size(self) -> int:
        return len(self.mirrored_ids)

    def is_reasoning(self, token_id: int) -> bool:
        return token_id >= self.base_vocab_size

    def mirror_of(self, token_id: int) -> int:
        return self.mirrored_ids[token_id - self.base_vocab_size] if self.is_reasoning(token_id) else token_id

    def save(self, folder: str | Path) -> Path:
        from grail_sim import io

        path = Path(folder) / MAP_FILE
        io.write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "ReasoningTokenMap":
        path = Path(folder) / MAP_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(int(data["base_vocab_size"]), [int(i) for i in data["mirrored_ids"]])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a reasoning token map ({type(err).__name__}: {err})") from None


def find_map(folder: str | Path) -> ReasoningTokenMap | None:
    """The reasoning token map saved in model folder `folder`, or None when it has none."""
    return ReasoningTokenMap.load(folder) if (Path(folder) / MAP_FILE).is_file() else None


def expand_vocabulary(model, size: int, mirrored_ids: Sequence[int] | None = None) -> ReasoningTokenMap:
    """Add `size` reasoning rows to `model`'s embeddings (and head), each a copy of the row it mirrors."""
    import torch

    embeddings = model.get_input_embeddings()
    base = int(embeddings.weight.shape[0])
    mirrored = list(range(size)) if mirrored_ids is None else [int(i) for i in mirrored_ids]
    if size < 1 or len(mirrored) != size or not all(0 <= i < base for i in mirrored):
        raise ValueError(f"reasoning_vocab_size {size} needs {size} mirrored ids in 0..{base - 1}")
    model.resize_token_embeddings(base + size, mean_resizing=False)
    index = torch.tensor(mirrored)
    with torch.no_grad():
        inputs = model.get_input_embeddings().weight
        inputs[base:] = inputs[index]
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != inputs.data_ptr():  # untied: its own copy
            head.weight[base:] = head.weight[index]
            if getattr(head, "bias", None) is not None:
                head.bias[base:] = head.bias[index]
    return ReasoningTokenMap(base, mirrored)


def lora_trainable_tokens(token_map: ReasoningTokenMap) -> dict[str, list[int]]:
    """peft `LoraConfig(trainable_token_indices=...)`: the reasoning rows of the input embedding."""
    return {"embed_tokens": list(range(token_map.base_vocab_size, token_map.base_vocab_size + token_map.size))}


def decode_reasoning(token_ids: Sequence[int], token_map: ReasoningTokenMap) -> tuple[list[int], int]:
    """The ids with every reasoning id replaced by the token it mirrors, and how many there were."""
    mapped = [token_map.mirror_of(int(i)) for i in token_ids]
    return mapped, sum(1 for i in token_ids if token_map.is_reasoning(int(i)))


def count_reasoning(sequences: Sequence[Sequence[int]], token_map: ReasoningTokenMap) -> int:
    """How many reasoning ids `sequences` hold in all."""
    return sum(1 for ids in sequences for i in ids if token_map.is_reasoning(int(i)))


def mirrored_decoding(tokenizer, token_map: ReasoningTokenMap) -> None:
    """Make `tokenizer` (in place) decode each reasoning id as the token it mirrors.

    transformers routes `decode` and `batch_decode` through `_decode`, one sequence at a time, so
    wrapping that one method covers both. The tokenizer's files are unchanged (`save_pretrained`
    writes no methods); `tokenizer.reasoning_token_map` records the map it decodes with."""
    if getattr(tokenizer, "reasoning_token_map", None) is not None:
        return
    plain_decode = tokenizer._decode

    def _decode(token_ids, *args, **kwargs):
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        return plain_decode(decode_reasoning(ids, token_map)[0], *args, **kwargs)

    tokenizer._decode = _decode
    tokenizer.reasoning_token_map = token_map


@contextmanager
def constrained_generate(model, processor) -> Iterator[None]:
    """`model.generate` with `processor` appended to its logits processors, inside the block only."""
    from transformers import LogitsProcessorList

    unconstrained = model.generate

    def generate(*args, logits_processor=None, **kwargs):
        processors = LogitsProcessorList([*(logits_processor or []), processor])
        return unconstrained(*args, logits_processor=processors, **kwargs)

    model.generate = generate  # an instance attribute shadows the class's method ...
    try:
        yield
    finally:
        del model.generate  # ... and deleting it brings the method back


# The tail of a sequence read to find its last think tag: a reply's think block is shorter than this.
TAG_WINDOW = 1024


def think_is_open(text: str) -> bool:
    """Whether `text` ends inside a `<think>` block (its last `<think>` comes after its last `</think>`)."""
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)


def make_logits_processor(tokenizer, token_map: ReasoningTokenMap):
    """A transformers LogitsProcessor allowing reasoning ids only inside an open `<think>` block.

    The tags are found in the decoded text (reasoning ids read as the tokens they mirror), not as
    token patterns: BPE spells `<think>` differently after a space or a newline."""
    from transformers import LogitsProcessor

    class ReasoningLogitsProcessor(LogitsProcessor):
        def __call__(self, input_ids, scores):
            for row, sequence in enumerate(input_ids.tolist()):
                plain = [token_map.mirror_of(i) for i in sequence[-TAG_WINDOW:]]
                if not think_is_open(tokenizer.decode(plain)):
                    scores[row, token_map.base_vocab_size:] = -float("inf")
            return scores

    return ReasoningLogitsProcessor()


def map_in_checkpoints(token_map: ReasoningTokenMap) -> Any:
    """A TrainerCallback writing the map into every checkpoint folder as it is saved."""
    from transformers import TrainerCallback

    class MapInCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                token_map.save(folder)

    return MapInCheckpoints()
