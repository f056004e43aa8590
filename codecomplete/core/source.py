"""Read source text and turn editor positions into offsets, with one-line errors for every bad input."""

from __future__ import annotations

import sys
from pathlib import Path

from codecomplete.errors import UserError

_BINARY_SNIFF = 8192


def read_source(location: str) -> str:
    """The text of a UTF-8 source file, or of standard input for ``-``."""
    if location == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        path = Path(location).expanduser()
        if not path.exists():
            raise UserError(f"{location}: no such file")
        if path.is_dir():
            raise UserError(f"{location}: is a directory, not a source file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{location}: cannot read ({exc.strerror})") from None
        name = location
    return decode_source(data, name)


def decode_source(data: bytes, name: str) -> str:
    if b"\0" in data[:_BINARY_SNIFF]:
        raise UserError(f"{name}: looks like a binary file, not source text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: is not UTF-8 text (invalid byte at offset {exc.start})") from None


def offset_at(text: str, line: int, column: int) -> int:
    """Character offset of 0-based ``line`` and 0-based ``column`` (in characters); UserError when outside."""
    lines = text.split("\n")
    if line < 0 or line >= len(lines):
        raise UserError(f"line {line + 1} is out of range: the text has {len(lines)} lines")
    length = len(lines[line].rstrip("\r"))
    if column < 0 or column > length:
        raise UserError(f"column {column + 1} is out of range: line {line + 1} has {length} characters")
    return sum(len(x) + 1 for x in lines[:line]) + column


def parse_location(spec: str) -> tuple[str, int, int]:
    """``path:LINE:COL`` (1-based, like compilers print) → (path, line0, col0)."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise UserError(f"{spec!r}: expected PATH:LINE:COLUMN, e.g. src/app.py:42:17 (or -:42:17 for stdin)")
    path, line_s, col_s = parts
    try:
        line, col = int(line_s), int(col_s)
    except ValueError:
        raise UserError(f"{spec!r}: LINE and COLUMN must be numbers") from None
    if line < 1 or col < 1:
        raise UserError(f"{spec!r}: LINE and COLUMN start at 1")
    return path, line - 1, col - 1
