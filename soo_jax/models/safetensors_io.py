"""Minimal memory-mapped safetensors reader (numpy has no bfloat16; ml_dtypes does).

Reading tensor by tensor from a memory map keeps host memory to one tensor at a time, which is
what lets the loader place a 78B checkpoint on a mesh without holding it twice.
"""

from __future__ import annotations

import json
import pathlib
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class SafetensorsFile:
    """Lazily reads named tensors from one .safetensors file."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {self.path}")
        with open(self.path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise ValueError(f"{self.path} is not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", prefix)
            try:
                header = json.loads(f.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{self.path} is not a safetensors file (bad header: {e})") from None
        header.pop("__metadata__", None)
        self._entries = header
        self._data_start = 8 + header_len
        self._size = self.path.stat().st_size

    def keys(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        dtype_name = entry["dtype"]
        if dtype_name not in _DTYPES:
            raise ValueError(f"tensor {name!r} in {self.path} has unsupported dtype {dtype_name}")
        dtype = np.dtype(_DTYPES[dtype_name])
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if self._data_start + end > self._size or end - start != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"tensor {name!r} in {self.path} is truncated or its header is corrupt")
        if end == start:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self._data_start + start, shape=shape)
