"""`.params` files are safetensors files (no pickle) with a tyllm format tag in their metadata."""

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tyllm.errors import ArtifactError

PARAMS_FORMAT = "tyllm.params/1"


def save_params(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    contiguous = {name: t.detach().contiguous() for name, t in tensors.items()}
    save_file(contiguous, str(path), metadata={"format": PARAMS_FORMAT})


def load_params(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            tag = (f.metadata() or {}).get("format")
        if tag != PARAMS_FORMAT:
            raise ArtifactError(f"{path} is not a tyllm params file (format {tag!r}, expected "
                                f"{PARAMS_FORMAT!r}); recompile the tree.")
        return load_file(str(path))
    except (OSError, ValueError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(f"Cannot read {path}: {e}. The file is damaged or truncated; "
                            f"recompile the tree.") from e
