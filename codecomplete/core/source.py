"""Read source text and turn editor positions into offsets, with one-line errors for every bad input."""

from __future__ import annotations

import sys
from collections.abc import Sequence
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


# Position encodings: how a position's character counts (LSP's names; "utf-32" counts characters).
UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"


def units(text: str, encoding: str = UTF32) -> int:
    """How many code units of ``encoding`` ``text`` takes."""
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == UTF16:
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(text)


def line_starts(text: str) -> list[int]:
    """Character offsets where the lines of ``text`` start (lines end at "\n")."""
    starts = [0]
    find = text.find
    i = find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = find("\n", i + 1)
    return starts


def offset_at(
    text: str, line: int, character: int, *, encoding: str = UTF32, starts: Sequence[int] | None = None
) -> int:
    """Character offset of the 0-based ``line`` and ``character`` (in ``encoding`` code units); UserError when
    the position is outside the text. ``starts`` (``line_starts(text)``) saves a scan when the caller keeps it.
    A "\r" ending a line is not part of it. Messages count from 1, as editors show lines and columns."""
    starts = line_starts(text) if starts is None else starts
    if not 0 <= line < len(starts):
        raise UserError(f"line {line + 1} is out of range: the text has {len(starts)} lines")
    first = int(starts[line])
    end = int(starts[line + 1]) - 1 if line + 1 < len(starts) else len(text)
    content = text[first:end].removesuffix("\r")
    if character < 0:
        raise UserError(f"column {character + 1} is out of range")
    if encoding == UTF32 or content.isascii():  # one unit per character
        if character <= len(content):
            return first + character
    else:
        counted = 0
        for i, ch in enumerate(content):
            if counted >= character:
                return first + i
            counted += units(ch, encoding)
        if counted >= character:
            return first + len(content)
    raise UserError(
        f"column {character + 1} is out of range: line {line + 1} has {units(content, encoding)} "
        + ("characters" if encoding == UTF32 else f"{encoding} code units")
    )


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
