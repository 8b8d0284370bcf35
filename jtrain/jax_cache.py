"""JAX's persistent compilation cache, on by default in jtrain's cache directory: a re-run of the same
experiment loads its compiled programs instead of compiling them again.

    JTRAIN_COMPILATION_CACHE=0     off
    JTRAIN_CACHE_DIR=DIR           the cache in DIR/jax_compilation_cache (default ~/.cache/jtrain)
    JAX_COMPILATION_CACHE_DIR=DIR  JAX's own setting wins when set
"""

from __future__ import annotations

import os


def cache_dir() -> str:
    root = os.environ.get("JTRAIN_CACHE_DIR") or "~/.cache/jtrain"
    return os.path.join(os.path.abspath(os.path.expanduser(root)), "jax_compilation_cache")


def enable() -> str | None:
    """Turns the cache on (once per process, before the first compilation); returns its directory or None."""
    import jax

    if os.environ.get("JTRAIN_COMPILATION_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = cache_dir()
    jax.config.update("jax_compilation_cache_dir", path)
    # jtrain's programs on a CPU compile in well under JAX's default threshold of 1 s, and a re-run wants them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
