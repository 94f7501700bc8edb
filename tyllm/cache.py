"""Where tyllm keeps what it derives on its own (converted checkpoints, engine trees)."""

import os
from pathlib import Path


def cache_root() -> Path:
    """$TYLLM_CACHE, else ~/.cache/tyllm."""
    return Path(os.environ.get("TYLLM_CACHE") or Path.home() / ".cache" / "tyllm")
