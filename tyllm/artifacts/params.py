"""`.params` files are safetensors files (no pickle) with a tyllm format tag in their metadata.

Identical tensors are stored once: the others are recorded as aliases in the metadata
(`tyllm.aliases`: name -> stored name) and restored on load as the same tensor, so a tied
embedding / LM head costs its bytes once on disk and in memory.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tyllm.artifacts.huge_pages import huge_page_bytes
from tyllm.errors import ArtifactError

PARAMS_FORMAT = "tyllm.params/1"
ALIASES = "tyllm.aliases"
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "I8": torch.int8,
          "BOOL": torch.bool}


def deduplicate(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
    """(tensors stored, {alias: stored name}) with every repeated tensor stored once."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, list[str]] = {}
    for name, t in tensors.items():
        key = (t.dtype, tuple(t.shape))
        same = next((s for s in seen.get(key, []) if torch.equal(stored[s], t)), None)
        if same is None:
            stored[name] = t
            seen.setdefault(key, []).append(name)
        else:
            aliases[name] = same
    return stored, aliases


def unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies tensors that share storage with an earlier one (a die's LM head rows viewing its
    embedding table): safetensors stores every tensor in its own bytes."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        storage = t.untyped_storage().data_ptr()
        out[name] = t.clone() if storage in seen else t
        seen.add(storage)
    return out


def save_params(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    contiguous = {name: t.detach().contiguous() for name, t in tensors.items()}
    stored, aliases = deduplicate(contiguous)
    stored = unshare(stored)
    metadata = {"format": PARAMS_FORMAT} | ({ALIASES: json.dumps(aliases)} if aliases else {})
    save_file(stored, str(path), metadata=metadata)


def load_params(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tag = metadata.get("format")
        if tag != PARAMS_FORMAT:
            raise ArtifactError(f"{path} is not a tyllm params file (format {tag!r}, expected "
                                f"{PARAMS_FORMAT!r}); recompile the tree.")
        tensors = read_owned(path)
        for alias, name in json.loads(metadata.get(ALIASES, "{}")).items():
            tensors[alias] = tensors[name]
        return tensors
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(f"Cannot read {path}: {e}. The file is damaged or truncated; "
                            f"recompile the tree.") from e


def read_owned(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (already validated by safe_open) read into one
    buffer of its own (huge pages requested: tyllm.artifacts.huge_pages), each tensor 64-byte
    aligned as TVM wants it: no file mapping stays behind and nothing is copied twice, so a
    loaded tree holds each of its bytes once."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header, base = json.loads(f.read(size)), 8 + size
        entries = [(name, info) for name, info in header.items() if name != "__metadata__"]
        offsets = aligned_offsets([end - begin for begin, end in
                                   (info["data_offsets"] for _, info in entries)])
        buffer = huge_page_bytes(offsets[-1])
        tensors = {}
        for (name, info), offset in zip(entries, offsets[:-1], strict=True):
            begin, end = info["data_offsets"]
            raw = buffer[offset:offset + end - begin]
            f.seek(base + begin)
            if f.readinto(raw.numpy()) != end - begin:
                raise ValueError(f"tensor {name!r} is cut short")
            tensors[name] = raw.view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def aligned_offsets(sizes: list[int], alignment: int = 64) -> list[int]:
    """Where each of `sizes` bytes starts when each start is `alignment`-aligned, then the
    total."""
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + -(-size // alignment) * alignment)
    return offsets


def unique_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the distinct tensors (aliases counted once)."""
    distinct = {t.data_ptr(): t for t in tensors.values()}
    return sum(t.numel() * t.element_size() for t in distinct.values())
