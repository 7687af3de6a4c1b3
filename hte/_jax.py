"""JAX settings for the engine, applied once on first import of a JAX-using module.

- 64-bit floats: the collapsed Gaussian likelihood subtracts sums of squares over up to
  millions of rows, which float32 cannot do accurately.
- A persistent compilation cache (``HTE_JAX_CACHE``, default ``~/.cache/hte/jax``; set it to
  ``off`` to disable), so a new process reuses the sampler compiled by an earlier one.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

_cache = os.environ.get("HTE_JAX_CACHE", str(Path.home() / ".cache" / "hte" / "jax"))
if _cache.lower() not in {"", "off", "0", "false", "none"}:
    try:
        Path(_cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", _cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except OSError:  # read-only home: compile in memory only
        pass
