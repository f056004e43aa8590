"""The workspace index: snippets from the rest of the repository for cross-file context.

Split by job: ``outline`` (definitions and snippets of a file), ``imports`` (what a file imports), ``ranking``
(identifier statistics and BM25), ``watching`` (ignore rules and file events) and ``index`` (``RepoIndex``, which
keeps them fresh and answers queries).
"""

from codecomplete.workspace.imports import Hint, Imports, parse_imports
from codecomplete.workspace.index import RepoIndex
from codecomplete.workspace.outline import MAX_SNIPPET_LINES, Definition, extract_definitions

__all__ = ["MAX_SNIPPET_LINES", "Definition", "Hint", "Imports", "RepoIndex", "extract_definitions", "parse_imports"]
