"""Load a policy (a full Hugging Face folder, or a peft adapter merged into its recorded base),
build the tiny random model of tests and benchmarks, and smoke-test generation; with the dtype,
tokenizer and parameter-count helpers that `embedded` builds the base model with.

An adapter's base is found by `adapter_base`, which does not depend on the working directory: a
relative base recorded at training time is looked up beside the adapter's own folder tree, and a
recorded content hash of the base is checked before anything is merged into it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from grail_sim.errors import ModelError
from grail_sim.io import atomic_dir, file_sha256, write_json
from grail_sim.model.cache import cache_entry
from grail_sim.model.reasoning_vocab import expand_vocabulary, find_map, mirrored_decoding

log = logging.getLogger(__name__)


# Keys under which a training run may record an adapter's base model in grail_sim.json: the
# path as training was given it (often relative to the directory training ran from)...
BASE_MODEL_KEYS = ("base_model", "base_model_name_or_path")
# ... the same base as an absolute path, and the base folder's content hash (io.file_sha256),
# which adapter_base checks so that an adapter is only ever merged into the base it was trained on.
BASE_PATH_KEY = "base_model_path"
BASE_SHA_KEY = "base_model_sha256"


# Written beside every model this project builds or trains: where it came from and how it was made.
PROVENANCE_FILE = "grail_sim.json"
THINK_TEMPLATE_KEY = "think_template"  # in PROVENANCE_FILE: the think the run's supervised target taught
PROMPT_OVERRIDES_KEY = "prompt_overrides"  # in PROVENANCE_FILE: the recipe's chat_template and system_prompt
DTYPES = ("float32", "bfloat16", "float16")


def to_torch_dtype(dtype: str):
    """The torch dtype named `dtype` (one of DTYPES); ModelError for any other name."""
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


# CPU flags of native bf16 arithmetic (Linux /proc/cpuinfo names): without one, torch emulates bf16
# matmuls on the CPU, far slower than fp32 (benchmarks/scoring_throughput.md).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo's flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_dtype(dtype: str, device: str = "cpu", cpuinfo: str | None = None) -> str:
    """`auto`: bfloat16 on a GPU that supports it or a CPU with native bf16, else float32; any other
    value is returned as given (and checked)."""
    if dtype != "auto":
        to_torch_dtype(dtype)
        return dtype
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def float32_output_head(model) -> None:
    """Compute a half-precision model's output head (the LM head) in float32, in place.

    The body keeps its dtype; the head becomes a float32 copy fed a float32 hidden state, so the
    logits are not rounded to bf16's 8 mantissa bits. A tied head is untied: fine for inference,
    which never updates it. A float32 model is left as it is.
    """
    import torch

    head = model.get_output_embeddings()
    if head is None or head.weight.dtype == torch.float32:
        return
    full = torch.nn.Linear(head.in_features, head.out_features, bias=head.bias is not None,
                           dtype=torch.float32, device=head.weight.device)
    with torch.no_grad():
        full.weight.copy_(head.weight.float())
        if head.bias is not None:
            full.bias.copy_(head.bias.float())
    full.register_forward_pre_hook(lambda _module, args: tuple(arg.float() for arg in args))
    model.set_output_embeddings(full)


def prepare_tokenizer(tokenizer) -> None:
    """Left padding for batched generation, and a pad token (the EOS token when none is set)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token


def build_tiny_model(out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, *,
                     hidden_size: int = 64, num_layers: int = 2, seed: int = 0, head_dim: int = 16) -> Path:
    """A random LlamaForCausalLM of SmolLM2's architecture and tokenizer, for tests and benchmarks.

    vLLM's CPU attention kernels take head sizes of 32 and up only: its tests build with head_dim 64."""
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer_dir = Path(tokenizer_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as err:
        raise ModelError(f"cannot load a tokenizer from {tokenizer_dir}: {err}") from err
    prepare_tokenizer(tokenizer)
    heads = max(1, hidden_size // head_dim)
    # Untied output embeddings, unlike SmolLM2: a random model with tied ones keeps predicting
    # its last input token (a newline after the chat template), so it would never emit text.
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2) if heads % 2 == 0 else heads,
        max_position_embeddings=8192, tie_word_embeddings=False, rope_theta=100000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / PROVENANCE_FILE, {
            "source": "tiny-random", "tokenizer": str(tokenizer_dir), "hidden_size": hidden_size, "head_dim": head_dim,
            "num_layers": num_layers, "seed": seed, "parameters": parameter_count(model),
            "architecture": type(model).__name__, "dtype": "float32"})
    return out_dir


def _resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def adapter_base(adapter_dir: str | os.PathLike) -> str:
    """The base model an adapter folder was trained on, as a path (or hub id) to load it from.

    Recorded bases are tried in order: grail_sim.json's `base_model_path` (absolute),
    `base_model`, `base_model_name_or_path`, then adapter_config.json's
    `base_model_name_or_path`. Training records the base as it was given, often relative to the
    directory training ran from (`results/models/base`), which is not the adapter folder and
    need not be the current working directory. So:

    - an absolute base is taken where it is;
    - a relative base is looked up against the adapter folder and each folder above it, nearest
      first (training wrote the adapter below the directory it ran from), and the first model
      folder (one with config.json) found is taken;
    - the working directory is tried last, and only when grail_sim.json records the base's
      content (`base_model_sha256`): without that nothing shows a base found there is the one
      the adapter was trained on (it may be another checkout's);
    - when `base_model_sha256` is recorded, a candidate whose content differs is refused, so a
      rebuilt or changed base is never silently merged into;
    - a relative base found nowhere that looks like a hub id (`org/name`) is returned as is.

    Anything else raises ModelError naming the adapter folder and the recorded base.
    """
    adapter_dir = Path(adapter_dir)
    record = _read_json(adapter_dir / PROVENANCE_FILE)
    recorded = _recorded_bases(adapter_dir, record)
    expected_sha = record.get(BASE_SHA_KEY)
    mismatched: list[Path] = []
    for base in recorded:
        for folder in _base_locations(adapter_dir, base, include_cwd=bool(expected_sha)):
            if not (folder / "config.json").is_file():
                continue
            if expected_sha and file_sha256(folder) != expected_sha:
                mismatched.append(folder)
                continue
            return str(folder)
    if mismatched:
        raise ModelError(
            f"adapter folder {adapter_dir} was trained on a base with {BASE_SHA_KEY} {expected_sha}, but the "
            f"base it records ({recorded[0]!r}) has other content at {', '.join(map(str, mismatched))}: the base "
            "was rebuilt or changed after training; restore it or retrain the adapter")
    hub_ids = [base for base in recorded if _looks_like_hub_id(base)]
    if hub_ids:
        return hub_ids[0]
    raise ModelError(
        f"adapter folder {adapter_dir} records its base model as {' / '.join(map(repr, recorded))}, which is "
        "no model folder (looked for as an absolute path, or relative to the adapter folder and the folders above it"
        f"{', or to the working directory' if expected_sha else ''}); move the adapter back below the "
        "directory training ran from, or record the base's absolute path in "
        f"{adapter_dir / PROVENANCE_FILE} ({BASE_PATH_KEY})")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file's content, {} when the file does not exist."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"{path} is not valid JSON: {err}") from err


def trained_think_template(model_dir: str | os.PathLike) -> str:
    """The think template the model at `model_dir` was trained to write before its answer ("" when
    its training recorded none: the base model, a run without a supervised target)."""
    return str(_read_json(Path(model_dir) / PROVENANCE_FILE).get(THINK_TEMPLATE_KEY) or "")


def trained_prompt_overrides(model_dir: str | os.PathLike) -> dict[str, Any]:
    """What the recipe of the model at `model_dir` set about its prompts: {"chat_template": record or
    None, "system_prompt": text or None} ({} when its training recorded nothing)."""
    return dict(_read_json(Path(model_dir) / PROVENANCE_FILE).get(PROMPT_OVERRIDES_KEY) or {})


def trained_system_prompt(model_dir: str | os.PathLike) -> str | None:
    """The system prompt the model at `model_dir` was trained with in place of the prompts stage's, or None."""
    return trained_prompt_overrides(model_dir).get("system_prompt") or None


def _recorded_bases(adapter_dir: Path, record: dict[str, Any]) -> list[str]:
    """Every base the adapter folder records, in the order adapter_base tries them, without repeats."""
    config = _read_json(adapter_dir / "adapter_config.json")
    recorded = [record.get(key) for key in (BASE_PATH_KEY, *BASE_MODEL_KEYS)]
    recorded.append(config.get("base_model_name_or_path"))
    recorded = list(dict.fromkeys(str(base) for base in recorded if base))
    if not recorded:
        raise ModelError(f"adapter folder {adapter_dir} records no base model (neither "
                         f"{PROVENANCE_FILE} {'/'.join((BASE_PATH_KEY, *BASE_MODEL_KEYS))} nor adapter_config.json "
                         "base_model_name_or_path)")
    return recorded


def _base_locations(adapter_dir: Path, base: str, *, include_cwd: bool) -> list[Path]:
    """Where a recorded base may be: itself if absolute, else below the adapter folder's ancestors.

    Ancestors are taken both as written and with symlinks resolved (an adapter reached through a
    link to another disk still finds the base beside its real location).
    """
    if Path(base).is_absolute():
        return [Path(base)]
    written = Path(os.path.abspath(adapter_dir))
    ancestors = [written, *written.parents, adapter_dir.resolve(), *adapter_dir.resolve().parents]
    if include_cwd:
        ancestors.append(Path.cwd())
    return list(dict.fromkeys(Path(os.path.normpath(folder / base)) for folder in ancestors))


def _looks_like_hub_id(base: str) -> bool:
    """`name` or `org/name` without path syntax (`./`, `../`, a second slash): a model hub id."""
    return bool(_HUB_ID.fullmatch(base)) and ".." not in base


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def load_policy(path: str | os.PathLike, *, dtype: str = "float32", device: str = "cpu"):
    """Load `(model, tokenizer)` from a full HF folder or a peft adapter folder (merged on its base).

    The model is in eval mode on `device`; the tokenizer pads on the left and has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist (or is not a folder)")
    torch_dtype = to_torch_dtype(dtype)
    device = _resolve_device(device)
    token_map = _reasoning_map(path)
    try:
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            base = adapter_base(path)
            log.info("loading adapter %s on its base %s", path, base)
            base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
            if token_map is not None:  # the adapter's trained reasoning rows sit on the expanded base
                _expand_base(base_model, token_map, path)
            model = PeftModel.from_pretrained(base_model, str(path)).merge_and_unload()
            has_tokenizer = (path / "tokenizer_config.json").is_file()
            tokenizer = AutoTokenizer.from_pretrained(str(path) if has_tokenizer else base)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(path))
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"cannot load a model from folder {path}: {type(err).__name__}: {err}") from err
    prepare_tokenizer(tokenizer)
    if token_map is not None:
        mirrored_decoding(tokenizer, token_map)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


def _reasoning_map(path: Path):
    """The folder's reasoning token map (reasoning_vocab_size > 0 at training), or None."""
    try:
        return find_map(path)
    except ValueError as err:
        raise ModelError(str(err)) from None


def _expand_base(base_model, token_map, adapter_dir: Path) -> None:
    rows = int(base_model.get_input_embeddings().weight.shape[0])
    if rows != token_map.base_vocab_size:
        raise ModelError(f"{adapter_dir}: its reasoning token map expands a vocabulary of {token_map.base_vocab_size} "
                         f"rows, but the base it records has {rows}")
    expand_vocabulary(base_model, token_map.size, token_map.mirrored_ids)


def served_model_dir(path: str | os.PathLike, *, dtype: str = "bfloat16") -> Path:
    """A folder vLLM can load for `path`: the folder itself for a full model; for a peft adapter, the
    adapter merged into its base and saved (with its tokenizer) under the grail-sim cache, keyed by
    the adapter's and the base's content, so each adapter is merged once. vLLM's own LoRA path needs
    the base served with enable_lora and a rank limit; a merged copy works for every adapter."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        return path
    base = adapter_base(path)
    base_identity = file_sha256(base) if Path(base).is_dir() else base  # a hub id names its own content
    key = hashlib.sha256(f"{file_sha256(path)}:{base_identity}:{dtype}".encode()).hexdigest()[:16]
    # A locked cache entry: the split jobs of one model (validation, test, ...) merge the same adapter
    # at the same time, and an unlocked second merge replaced the folder the first job's engine was
    # loading from. The first merges; the others wait on the lock and reuse its complete entry.
    with cache_entry(f"merged-{path.parent.name}-{key}") as (merged, build):
        if build is not None:
            model, tokenizer = load_policy(path, dtype=dtype, device="cpu")
            model.save_pretrained(str(build))
            tokenizer.save_pretrained(str(build))
            log.info("merged adapter %s into %s for vLLM", path, merged)
    return merged


def smoke(model_dir: str | os.PathLike, prompt: str, *, max_new_tokens: int = 32,
          device: str = "cpu") -> dict[str, Any]:
    """Greedy-generate a short chat answer; raises ModelError when the answer is empty."""
    import torch

    model, tokenizer = load_policy(model_dir, device=device)
    messages = [{"role": "user", "content": prompt}]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = prompt
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    started = time.monotonic()
    with torch.inference_mode():
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
    seconds = time.monotonic() - started
    new_tokens = generated[0, inputs["input_ids"].shape[1]:]
    output = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    if not output:
        raise ModelError(f"model {model_dir} generated no text for the prompt {prompt!r} "
                         f"({len(new_tokens)} new tokens, all special or blank)")
    return {"model": str(model_dir), "prompt": prompt, "output": output,
            "new_tokens": int(len(new_tokens)), "seconds": round(seconds, 3),
            "tokens_per_second": round(len(new_tokens) / seconds, 2) if seconds > 0 else None}


def parameter_count(model) -> int:
    """How many weights `model` has, recorded in the provenance of the models built here."""
    return sum(p.numel() for p in model.parameters())


def recorded_base_sha256(adapter_dir: str | os.PathLike) -> str | None:
    """The base content hash an adapter folder records, if any (`adapter_base` refuses a base whose
    content differs from it)."""
    return _read_json(Path(adapter_dir) / PROVENANCE_FILE).get(BASE_SHA_KEY)


def base_model_record(model_dir: str | os.PathLike) -> dict[str, str]:
    """What a trained adapter records of its base so that `adapter_base` finds the same base from
    any working directory: the absolute path and a content hash (nothing for a hub id)."""
    path = Path(model_dir)
    if not path.is_dir():
        return {}
    return {BASE_PATH_KEY: str(path.resolve()), BASE_SHA_KEY: file_sha256(path)}
