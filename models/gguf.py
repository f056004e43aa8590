"""GGUF structure checks: a truncated or corrupt model file fails in milliseconds with a line naming it, instead
of crashing llama.cpp later."""

from __future__ import annotations

import mmap
import os
import stat
import struct
from pathlib import Path
from typing import Any

from codecomplete.errors import UserError

_GGUF_MAGIC = b"GGUF"
_GGUF_DEFAULT_ALIGNMENT = 32
_GGML_MAX_DIMS = 4
# Far above any real model; a count beyond these means a corrupt header, not a big model.
_MAX_TENSORS = 1 << 20
_MAX_KV = 1 << 20
# GGUF metadata value types -> struct format of a scalar (8 = string, 9 = array are handled apart).
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_TYPE_STRING, _TYPE_ARRAY = 8, 9
# ggml tensor types -> (elements per block, bytes per block), as in ggml.c's type_traits.
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip


class _Corrupt(Exception):
    """A structural problem; validate_gguf turns it into a UserError naming the file."""


class _Reader:
    """Bounds-checked little-endian reads over a memory map (the file is never read whole)."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise _Corrupt("truncated")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Corrupt("truncated")
        self.pos += n

    def string(self) -> bytes:
        n = self.take("Q")
        self.skip(n)
        return self.buf[self.pos - n : self.pos]

    def skip_value(self, vtype: int) -> None:
        if vtype == _TYPE_STRING:
            self.skip(self.take("Q"))
        elif vtype == _TYPE_ARRAY:
            etype, count = self.take("I"), self.take("Q")
            if etype in _SCALAR_FORMATS:
                self.skip(count * struct.calcsize(_SCALAR_FORMATS[etype]))
            elif etype == _TYPE_STRING:
                for _ in range(count):
                    self.skip(self.take("Q"))
            else:  # arrays of arrays do not occur in GGUF files
                raise _Corrupt(f"bad metadata array type {etype}")
        elif vtype in _SCALAR_FORMATS:
            self.skip(struct.calcsize(_SCALAR_FORMATS[vtype]))
        else:
            raise _Corrupt(f"bad metadata value type {vtype}")


def validate_gguf(path: Path) -> None:
    """Check that ``path`` is a complete GGUF model file, or raise a one-line UserError naming it.

    Parses the header, every metadata key/value and the tensor table through a memory map, then
    checks that each tensor's data lies inside the file - a truncated download fails here in
    milliseconds instead of crashing llama.cpp later. Only a regular file is opened: a FIFO would
    block whoever validates (the daemon, a CLI), a device would never end.
    """
    path = Path(path)
    try:
        check_regular_file(path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise UserError(f"cannot read model file {shown_path(path)}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped since the check
                raise UserError(f"model path is not a regular file (a FIFO, device or socket): {shown_path(path)}")
            head = fh.read(4)
            if head != _GGUF_MAGIC:
                raise UserError(f"not a GGUF model file: {path}")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _check_structure(buf)
    except _Corrupt as exc:
        raise UserError(f"corrupt GGUF model file ({exc}): {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def check_regular_file(path: Path) -> os.stat_result:
    """``os.stat`` of a model path that must be a regular file, without opening it: a missing file, a directory,
    a FIFO, device or socket, or a path the system refuses (too long, a NUL byte) is a one-line UserError."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"model file not found: {shown_path(path)}") from None
    except ValueError:  # an embedded NUL byte
        raise UserError(f"not a valid model path: {shown_path(path)}") from None
    except OSError as exc:  # too long a name, no permission, a loop of symlinks, ...
        raise UserError(f"cannot read model file {shown_path(path)}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"model path is a directory, not a GGUF file: {shown_path(path)}")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"model path is not a regular file (a FIFO, device or socket): {shown_path(path)}")
    return st


def shown_path(path: Path | str, limit: int = 160) -> str:
    """A path as an error message shows it: a pathological one is shortened, so the message stays one line."""
    text = str(path).replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def _check_structure(buf: mmap.mmap) -> None:
    reader = _Reader(buf)
    reader.skip(4)  # magic, checked by the caller
    version = reader.take("I")
    if version not in (2, 3):
        raise _Corrupt(f"unsupported GGUF version {version}")
    n_tensors, n_kv = reader.take("Q"), reader.take("Q")
    if n_tensors > _MAX_TENSORS or n_kv > _MAX_KV:
        raise _Corrupt("implausible tensor or metadata count")
    alignment = _GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = reader.string()
        vtype = reader.take("I")
        if key == b"general.alignment" and vtype == 4:
            alignment = reader.take("I")
        else:
            reader.skip_value(vtype)
    if alignment == 0 or alignment & (alignment - 1):
        raise _Corrupt(f"bad alignment {alignment}")
    data_end = 0
    for _ in range(n_tensors):
        name = reader.string()
        n_dims = reader.take("I")
        if not 1 <= n_dims <= _GGML_MAX_DIMS:
            raise _Corrupt(f"tensor {name.decode(errors='replace')} has {n_dims} dimensions")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= reader.take("Q")
        ggml_type, offset = reader.take("I"), reader.take("Q")
        if offset % alignment:
            raise _Corrupt(f"tensor {name.decode(errors='replace')} is misaligned")
        block, block_bytes = GGML_BLOCK_SIZES.get(ggml_type, (1, 0))  # unknown type: check its offset only
        data_end = max(data_end, offset + n_elements // block * block_bytes)
    data_start = -(-reader.pos // alignment) * alignment
    if data_start + data_end > len(buf):
        raise _Corrupt(f"truncated: tensor data needs {data_start + data_end} bytes, file has {len(buf)}")
