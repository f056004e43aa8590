"""Ranking snippets: identifier statistics per file and BM25 postings over them.

Scoring runs on immutable numpy postings (``Postings``) rebuilt in the background after disk changes, plus a
small set for open documents rebuilt lazily when one of them changes, so a query is a few array gathers.
"""

from __future__ import annotations

import posixpath
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from codecomplete.core.languages import spec_for
from codecomplete.workspace.imports import parse_imports, strip_extension
from codecomplete.workspace.outline import Chunk, chunk_file

# BM25: term-frequency saturation and length normalisation for snippets, saturation for query terms
K1, B, K3 = 1.2, 0.75, 1.2
_NEAR_CURSOR_CHARS = 1200  # identifiers this close to the cursor count 1.5 times
_IDENT = re.compile(r"\b[^\W\d]\w*")
_STOPWORDS = frozenset({
    "and", "as", "assert", "async", "await", "break", "case", "catch", "char", "class", "const", "continue",
    "def", "default", "defer", "del", "delete", "do", "double", "elif", "else", "enum", "except", "export",
    "extends", "extern", "false", "final", "finally", "float", "fn", "for", "from", "func", "function",
    "go", "goto", "if", "impl", "implements", "import", "in", "include", "int", "interface", "is", "lambda",
    "let", "long", "match", "mod", "mut", "namespace", "new", "nil", "none", "None", "not", "null", "of",
    "or", "package", "pass", "private", "protected", "pub", "public", "raise", "return", "self", "Self",
    "short", "signed", "sizeof", "static", "str", "string", "struct", "super", "switch", "template", "this",
    "throw", "throws", "true", "True", "False", "try", "type", "typedef", "typename", "typeof", "undefined",
    "union", "unsigned", "use", "var", "void", "volatile", "where", "while", "with", "yield", "define",
    "endif", "ifdef", "ifndef", "bool", "auto"
})
INDEX_STEMS = frozenset({"__init__", "index", "mod", "lib"})  # a file standing for its directory


def _identifiers(text: str) -> dict[str, int]:
    counts = Counter(_IDENT.findall(text))
    return {w: n for w, n in counts.items() if len(w) > 1 and w not in _STOPWORDS}


class Vocabulary:
    """Identifier -> dense id. Grows only; lookups are lock-free, new ids are assigned under a lock."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def assign(self, words: Iterable[str]) -> list[int]:
        ids = self._ids
        out = []
        for w in words:
            i = ids.get(w)
            if i is None:
                with self._lock:
                    i = ids.setdefault(w, len(ids))
            out.append(i)
        return out

    def get(self, word: str) -> int | None:
        return self._ids.get(word)


# A snippet as stored: (start, end, text, summary). Records are kept as plain tuples of strings and
# numbers, which CPython's garbage collector stops tracking: with one object per snippet, definition
# and import, a full collection (which stops every thread) took ~150 ms on a 2,000-file workspace.
Row = tuple[int, int, str, "str | None"]


@dataclass(slots=True)
class Entry:
    """One indexed file: its snippets and their identifier statistics as flat arrays."""

    key: str
    language: str | None
    stamp: tuple[int, int]  # (mtime_ns, size) of the disk copy; (-1, len) for open documents
    rows: list[Row]  # the snippets
    definitions: list[tuple[str, str, int, int, str, str]]  # Definition fields
    imports: tuple[tuple[str, ...], tuple[tuple[str, bool, bool], ...]]  # Imports: names, Hint fields
    terms: np.ndarray  # term id of each (chunk, term) entry
    tfs: np.ndarray  # its count in the chunk
    entry_chunk: np.ndarray  # chunk index (within this file) of each entry
    lengths: np.ndarray  # identifier count of each chunk
    def_terms: np.ndarray  # names defined in the file ...
    def_chunk: np.ndarray  # ... and the chunk holding each definition's first line
    searchable: bool = True  # False: kept only for its imports (an open document outside the index)


@dataclass
class OpenDocument:
    """An open document: its text and the analysis of the text it had when last analysed."""

    text: str
    language: str | None
    entry: Entry | None = None
    analyzed: str | None = None


def analyze(
    key: str, text: str, language: str | None, stamp: tuple[int, int], vocab: Vocabulary, *, polite: bool
) -> Entry:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    chunks, definitions = chunk_file(text, language, polite)
    imports = parse_imports(text, language)
    terms: list[int] = []
    tfs: list[int] = []
    entry_chunk: list[int] = []
    lengths: list[int] = []
    for i, chunk in enumerate(chunks):
        counts = _identifiers(chunk.text)
        terms.extend(vocab.assign(counts))
        tfs.extend(counts.values())
        entry_chunk.extend([i] * len(counts))
        lengths.append(sum(counts.values()))
    pairs: dict[tuple[int, int], None] = {}
    starts = [c.start for c in chunks]
    for d in definitions:
        i = _chunk_at(starts, chunks, d.start_line)
        if i is not None:
            pairs[(vocab.assign([d.name])[0], i)] = None
    return Entry(
        key=key,
        language=language,
        stamp=stamp,
        rows=[(c.start, c.end, c.text, c.summary) for c in chunks],
        definitions=[(d.name, d.kind, d.start_line, d.end_line, d.signature, d.doc) for d in definitions],
        imports=(imports.names, tuple((h.path, h.relative, h.directory) for h in imports.hints)),
        terms=np.asarray(terms, dtype=np.int64),
        tfs=np.asarray(tfs, dtype=np.float64),
        entry_chunk=np.asarray(entry_chunk, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.float64),
        def_terms=np.asarray([t for t, _ in pairs], dtype=np.int64),
        def_chunk=np.asarray([c for _, c in pairs], dtype=np.int64),
    )


def _chunk_at(starts: list[int], chunks: list[Chunk], row: int) -> int | None:
    lo, hi = 0, len(starts)
    while lo < hi:
        mid = (lo + hi) // 2
        if starts[mid] <= row:
            lo = mid + 1
        else:
            hi = mid
    i = lo - 1
    return i if i >= 0 and row < chunks[i].end else None


def _csr(terms: np.ndarray, chunks: np.ndarray, weights: np.ndarray | None, size: int):
    """Postings sorted by term: indptr[t]..indptr[t+1] index the chunks (and weights) holding term t."""
    order = np.argsort(terms, kind="stable")
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=size), out=indptr[1:])
    return indptr, chunks[order], None if weights is None else weights[order]


def _gather(indptr: np.ndarray, chunks: np.ndarray, weights: np.ndarray | None, q_ids: np.ndarray,
            q_w: np.ndarray, n: int) -> np.ndarray | None:
    """Sum over query terms of q_w[t] * posting weight, per chunk, in one vectorized pass."""
    keep = q_ids < len(indptr) - 1
    q_ids, q_w = q_ids[keep], q_w[keep]
    starts = indptr[q_ids]
    lens = indptr[q_ids + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return None
    idx = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
    w = np.repeat(q_w, lens)
    if weights is not None:
        w = w * weights[idx]
    return np.bincount(chunks[idx], weights=w, minlength=n)


class Postings:
    """Immutable postings over the snippets of a set of files."""

    def __init__(self, entries: list[Entry], vocab_size: int, avgdl: float | None = None) -> None:
        self.entries = entries
        self.keys = [e.key for e in entries]
        self.file_index = {k: i for i, k in enumerate(self.keys)}
        counts = np.asarray([len(e.rows) for e in entries], dtype=np.int64)
        self.file_lo = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n = int(self.file_lo[-1])
        self.chunk_file = np.repeat(np.arange(len(entries), dtype=np.int64), counts)
        self.families = np.asarray([family_code(e.language) for e in entries], dtype=np.int64)
        self.searchable = np.asarray([e.searchable for e in entries], dtype=np.float64)
        lengths = np.concatenate([e.lengths for e in entries]) if entries else np.zeros(0)
        self.avgdl = avgdl or (float(lengths.mean()) if self.n and lengths.sum() else 1.0)
        n_terms = [len(e.terms) for e in entries]
        terms = np.concatenate([e.terms for e in entries]) if entries else np.zeros(0, np.int64)
        chunk = (np.concatenate([e.entry_chunk for e in entries]) if entries else np.zeros(0, np.int64)) + (
            np.repeat(self.file_lo[:-1], n_terms)
        )
        tfs = np.concatenate([e.tfs for e in entries]) if entries else np.zeros(0)
        norm = tfs * (K1 + 1) / (tfs + K1 * (1 - B + B * lengths[chunk] / self.avgdl))
        self.size = vocab_size
        self.indptr, self.post_chunk, self.post_norm = _csr(terms, chunk, norm, vocab_size)
        self.df = np.diff(self.indptr)
        n_defs = [len(e.def_terms) for e in entries]
        def_terms = np.concatenate([e.def_terms for e in entries]) if entries else np.zeros(0, np.int64)
        def_chunk = (np.concatenate([e.def_chunk for e in entries]) if entries else np.zeros(0, np.int64)) + (
            np.repeat(self.file_lo[:-1], n_defs)
        )
        self.def_indptr, self.def_chunk, _ = _csr(def_terms, def_chunk, None, vocab_size)
        self.modules: dict[str, list[str]] = {}  # path stem (and its suffixes) -> file keys
        self.dirs: dict[str, list[str]] = {}  # directory (and its suffixes) -> file keys
        for e in entries:
            stem = strip_extension(e.key)
            directory = posixpath.dirname(e.key)
            stems = [stem, directory] if posixpath.basename(stem) in INDEX_STEMS and directory else [stem]
            for s in stems:
                for suffix in suffixes(s):
                    self.modules.setdefault(suffix, []).append(e.key)
            for suffix in suffixes(directory):
                self.dirs.setdefault(suffix, []).append(e.key)

    def df_of(self, q_ids: np.ndarray) -> np.ndarray:
        out = np.zeros(len(q_ids))
        keep = q_ids < self.size
        out[keep] = self.df[q_ids[keep]]
        return out

    def scores(self, q_ids: np.ndarray, q_w: np.ndarray, d_ids: np.ndarray, d_w: np.ndarray) -> np.ndarray:
        total = np.zeros(self.n)
        bm25 = _gather(self.indptr, self.post_chunk, self.post_norm, q_ids, q_w, self.n)
        if bm25 is not None:
            total += bm25
        defs = _gather(self.def_indptr, self.def_chunk, None, d_ids, d_w, self.n)
        if defs is not None:
            total += defs
        return total


def suffixes(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[i:]) for i in range(len(parts))]


_FAMILY_CODES: dict[str | None, int] = {None: 0}


def family_code(language: str | None) -> int:
    """A small integer per code family (TypeScript counts as JavaScript), for vectorised comparisons."""
    spec = spec_for(language)
    family = spec.code_family if spec is not None else language
    return _FAMILY_CODES.setdefault(family, len(_FAMILY_CODES))


def query_counts(text: str, cursor: int | None) -> Counter[str]:
    """Identifier weights of the code around the cursor; the word being typed is left out."""
    if cursor is None:
        counts: Counter[str] = Counter(_IDENT.findall(text))
    else:
        cursor = max(0, min(cursor, len(text)))
        lo = _word_edge(text, max(0, cursor - _NEAR_CURSOR_CHARS), -1)
        hi = _word_edge(text, min(len(text), cursor + _NEAR_CURSOR_CHARS), 1)
        start, end = _word_edge(text, cursor, -1), _word_edge(text, cursor, 1)
        near = Counter(_IDENT.findall(text, lo, start)) + Counter(_IDENT.findall(text, end, hi))
        counts = Counter(_IDENT.findall(text, 0, lo)) + Counter(_IDENT.findall(text, hi))
        for word, n in near.items():
            counts[word] += n * 1.5
    return Counter({w: n for w, n in counts.items() if len(w) > 1 and w not in _STOPWORDS})


def _word_edge(text: str, i: int, step: int) -> int:
    """Move offset `i` out of the identifier it falls inside, toward `step`."""
    if step < 0:
        while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
            i -= 1
    else:
        while i < len(text) and (text[i].isalnum() or text[i] == "_"):
            i += 1
    return i
