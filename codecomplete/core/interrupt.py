"""A cancel flag that llama.cpp watches too (the engine makes it llama.cpp's abort callback's data)."""

from __future__ import annotations

import ctypes
import threading


class Interrupt(threading.Event):
    """Set on cancel or supersession. Besides the Python checks between tokens, llama.cpp reads this flag's byte
    between graph nodes, so a cancelled or overtaken evaluation stops within a node rather than after its prompt
    block (a 16-token block takes ~100 ms on two cores): what a keystroke arriving during a prefetch waited for.
    Only ctypes here, so the editor's thin LSP process can make one without loading llama.cpp."""

    def __init__(self) -> None:
        super().__init__()
        self.c_flag = ctypes.create_string_buffer(2)  # empty until set; the engine's callback is its strlen

    def set(self) -> None:
        self.c_flag.value = b"x"
        super().set()

    def clear(self) -> None:
        self.c_flag.value = b""
        super().clear()
