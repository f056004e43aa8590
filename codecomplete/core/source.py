"""Read source text and turn editor positions into offsets, with one-line errors for every bad input."""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from codecomplete.errors import UserError

_BINARY_SNIFF = 8192
# Far above any source file worth completing in; what is bigger is a log, a dump or a device, never read whole.
MAX_SOURCE_BYTES = 64 << 20


def read_source(location: str) -> str:
    """The text of a UTF-8 source file, or of standard input for ``-``.

    Only regular files are opened (a FIFO would block, a device like /dev/zero would never end), checked before
    opening and again on the open descriptor, and at most ``MAX_SOURCE_BYTES`` are read; every failure, a
    too-long path included, is a one-line UserError.
    """
    if location == "-":
        data = sys.stdin.buffer.read(MAX_SOURCE_BYTES + 1)
        name = "standard input"
    else:
        name = _shown(location)
        data = _read_regular(Path(location).expanduser(), name)
    if len(data) > MAX_SOURCE_BYTES:
        raise UserError(f"{name}: is too large for a source file (over {MAX_SOURCE_BYTES >> 20} MiB)")
    return decode_source(data, name)


def _read_regular(path: Path, name: str) -> bytes:
    try:
        _check_regular(os.stat(path), name)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UserError(f"{name}: no such file") from None
    except NotADirectoryError:
        raise UserError(f"{name}: no such file (a part of the path is not a directory)") from None
    except ValueError:  # an embedded NUL byte
        raise UserError(f"{name}: is not a valid path") from None
    except OSError as exc:  # too long a name, no permission, a loop of symlinks, ...
        raise UserError(f"{name}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        try:
            _check_regular(os.fstat(f.fileno()), name)  # the path may have been swapped since the stat
            return f.read(MAX_SOURCE_BYTES + 1)
        except OSError as exc:
            raise UserError(f"{name}: cannot read ({exc.strerror or exc})") from None


def _check_regular(st: os.stat_result, name: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{name}: is a directory, not a source file")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{name}: is not a regular file (a FIFO, device or socket), not a source file")
    if st.st_size > MAX_SOURCE_BYTES:
        raise UserError(f"{name}: is too large for a source file ({st.st_size >> 20} MiB; "
                        f"at most {MAX_SOURCE_BYTES >> 20} MiB)")


def _shown(location: str, limit: int = 160) -> str:
    """A path as an error message shows it: a pathological one is shortened, so the message stays one line."""
    location = location.replace("\n", "\\n").replace("\r", "\\r")
    return location if len(location) <= limit else f"{location[:limit // 2]}...{location[-limit // 2:]}"


def decode_source(data: bytes, name: str) -> str:
    """Source bytes as text: binary files and other encodings are refused in one line, never guessed at."""
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


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_starts(text: str) -> list[int]:
    """Character offsets where the lines of ``text`` start. Lines end at "\n", "\r\n" or a lone "\r" (LSP's three
    line endings; a lone "\r" is rare, so texts without any "\r" take the fast path)."""
    if "\r" in text:
        return [0, *(m.end() for m in _LINE_BREAK.finditer(text))]
    starts = [0]
    find = text.find
    i = find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = find("\n", i + 1)
    return starts


def has_lone_cr(text: str) -> bool:
    """Whether a "\r" ends a line by itself somewhere (old Mac line endings): tree-sitter does not count those."""
    return "\r" in text and re.search(r"\r(?!\n)", text) is not None


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
    end = int(starts[line + 1]) - 1 if line + 1 < len(starts) else len(text)  # before "\n", or a lone "\r"
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
