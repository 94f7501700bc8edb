"""Die calls and replies between ranks as bytes: a JSON header that describes the value (lists,
tuples, dicts with text keys, numbers, text, None, tensors) and the tensors' raw bytes after it.
Nothing is unpickled: a rank only rebuilds plain values and tensors of the dtypes it knows."""

import json

import numpy as np
import torch

DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int8,
    torch.uint8, torch.bool)}


def encode(value) -> bytes:
    blobs: list[bytes] = []
    header = json.dumps(_describe(value, blobs)).encode()
    return len(header).to_bytes(8, "little") + header + b"".join(blobs)


def decode(data: bytes):
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    return _rebuild(header, memoryview(data)[8 + size:], [0])


def _describe(value, blobs: list[bytes]):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous()
        raw = t.view(torch.uint8) if t.dtype == torch.bfloat16 else t
        blobs.append(raw.numpy().tobytes())
        return {"tensor": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                "bytes": len(blobs[-1])}
    if isinstance(value, list | tuple):
        return {"list" if isinstance(value, list) else "tuple":
                [_describe(v, blobs) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _describe(v, blobs) for k, v in value.items()}}
    raise TypeError(f"a die message cannot carry {type(value).__name__}")


def _rebuild(header, payload: memoryview, at: list[int]):
    if not isinstance(header, dict):
        return header
    if "tensor" in header:
        dtype, count = DTYPES[header["tensor"]], header["bytes"]
        raw = payload[at[0]:at[0] + count]
        at[0] += count
        if dtype == torch.bfloat16:
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(torch.bfloat16)
        else:
            flat = torch.from_numpy(np.frombuffer(raw, dtype=_numpy(dtype)).copy())
        return flat.reshape(header["shape"])
    if "list" in header:
        return [_rebuild(v, payload, at) for v in header["list"]]
    if "tuple" in header:
        return tuple(_rebuild(v, payload, at) for v in header["tuple"])
    return {k: _rebuild(v, payload, at) for k, v in header["dict"].items()}


def _numpy(dtype: torch.dtype):
    return torch.empty(0, dtype=dtype).numpy().dtype
