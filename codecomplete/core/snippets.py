"""Cross-file context as the prompt sees it: snippets from other files, and how each model family reads them.

The workspace index (``codecomplete.workspace``) finds the snippets; this module only says what a snippet is and
renders snippets for the prompt, so the completion core never depends on how they were found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from codecomplete.core.languages import comment_marker
from codecomplete.errors import UserError


@dataclass(frozen=True, slots=True)
class Snippet:
    """Lines [start_line, end_line) (0-based) of `path` (relative to the root, '/'-separated)."""

    path: str
    start_line: int
    end_line: int
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of repository context: `text` to encode, after the family's `marker` token if set.

    `marker` is "repo_name" or "file_sep"; the prompt builder maps it to the token id (llama.cpp's
    `llama_vocab_fim_rep`/`llama_vocab_fim_sep`), never to marker text inside a string.
    """

    text: str
    marker: str | None = None


class SnippetSource(Protocol):
    """What finds snippets for the code around a cursor (the workspace index)."""

    def query(
        self,
        ctx_text: str,
        current_path: str | None,
        *,
        budget_tokens: int,
        count_tokens: Callable[[str], int],
        window: tuple[int, int] | None = None,
        cursor: int | None = None,
    ) -> list[Snippet]: ...

    def relative(self, path: str) -> str: ...


def style_for_family(family: str) -> str:
    """Repo-level FIM tokens for families trained with them, path comments otherwise."""
    return "file_sep" if family in ("qwen", "starcoder") else "comment"


def cost_text(path: str, text: str) -> str:
    """What a snippet's token cost is measured on: a header at least as long as any style renders."""
    return f"// path: {path}\n{text}\n\n"


def format_snippets(
    snippets: Sequence[Snippet],
    language: str | None,
    style: str = "comment",
    *,
    repo_name: str | None = None,
    current_path: str | None = None,
) -> list[Segment]:
    """Render snippets for placement before the prefix.

    "comment": `# path: src/util.py` (in the current language's comment syntax) above each snippet's
    code; "file_sep": Qwen2.5-Coder's repo layout (`<|repo_name|>name\\n`, then `<|file_sep|>path\\ncode`
    per file). With `current_path`, the current file's own header comes last, right before the prefix.
    """
    if style == "comment":
        mark = comment_marker(language)
        out = [Segment(f"{mark} path: {s.path}\n{s.text}\n\n") for s in snippets]
        if current_path is not None:
            out.append(Segment(f"{mark} path: {current_path}\n"))
        return out
    if style == "file_sep":
        out = [Segment(f"{repo_name}\n", "repo_name")] if repo_name else []
        out.extend(Segment(f"{s.path}\n{s.text}\n", "file_sep") for s in snippets)
        if current_path is not None:
            out.append(Segment(f"{current_path}\n", "file_sep"))
        return out
    raise UserError(f"unknown snippet style {style!r}: use comment or file_sep")
