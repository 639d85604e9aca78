"""Minimal safetensors reader/writer (no dependency on the `safetensors` package).

File layout (https://github.com/huggingface/safetensors):
  * 8 bytes: little-endian u64 N = length of the JSON header;
  * N bytes: UTF-8 JSON header
        {name: {"dtype": "F32" | "U8" | ..., "shape": [...], "data_offsets": [begin, end]}, ...,
         "__metadata__": {str: str}}
    padded with spaces so that 8 + N is a multiple of 8 (keeps the data area 8-byte aligned);
  * the data area: raw little-endian tensor bytes; offsets are relative to its start.

Tensors are written back to back in the order given (no gaps), which is what the reference
implementation's validator requires.
"""

import json
import struct

import numpy as np
import torch

# safetensors dtype string <-> numpy dtype (little-endian). Only what the tests need.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
}
_NP_TO_ST = {v: k for k, v in _DTYPES.items()}


def _to_numpy(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous().numpy()
    a = np.ascontiguousarray(t)
    # Normalise byte order to little-endian.
    return a.astype(a.dtype.newbyteorder("<"), copy=False)


def save_file(tensors, path, metadata=None):
    """Write {name: tensor/ndarray} to `path`. `metadata` is a {str: str} dict (or None)."""
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        a = _to_numpy(t)
        if a.dtype not in _NP_TO_ST:
            raise TypeError(f"{name}: unsupported dtype {a.dtype}")
        raw = a.tobytes(order="C")
        header[name] = {
            "dtype": _NP_TO_ST[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str -> str")
        header["__metadata__"] = dict(metadata)

    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-(8 + len(hjson))) % 8)  # pad so the data area starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)


def load_file(path):
    """Read a safetensors file. Returns ({name: torch.Tensor}, metadata dict or {})."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    data = memoryview(buf)[8 + n :]
    metadata = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dt = _DTYPES[info["dtype"]]
        a = np.frombuffer(data[begin:end], dtype=dt).reshape(info["shape"])
        out[name] = torch.from_numpy(a.copy())
    return out, metadata
