"""Workspace index: cross-file snippets for the prompt, ranked by relevance to the code at the cursor.

Files are split into definition-aligned snippets (``outline``) and kept fresh by a watchdog observer
(``watching``); open documents' unsaved text overrides the disk copy. A query scores snippets with BM25 over
identifiers (``ranking``), plus a bonus for snippets that define identifiers used at the cursor or imported by
the current file (``imports``), then favours imported files, recently edited files and open documents. The
chosen snippets are returned in path order, not score order, so the prompt's start stays identical while the
user types and the KV cache keeps reusing it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import queue
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np
from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
)
from watchdog.observers import Observer

from codecomplete.core.languages import language_for_path, normalize_language
from codecomplete.core.snippets import Snippet, cost_text
from codecomplete.errors import UserError
from codecomplete.workspace.imports import Hint, Imports
from codecomplete.workspace.outline import Chunk, Definition
from codecomplete.workspace.ranking import (
    K3,
    Entry,
    OpenDocument,
    Postings,
    Vocabulary,
    analyze,
    family_code,
    query_counts,
    suffixes,
)
from codecomplete.workspace.watching import EventHandler, IgnoreRules, read_text

log = logging.getLogger(__name__)

_DOCUMENT = "document"  # queue item: an open document changed
_DEBOUNCE_S = 0.05  # collect a burst of events (an editor's save, a checkout) into one rebuild
_MAX_BATCH_S = 0.3
_DEF_WEIGHT = 2.0  # a snippet defining an identifier used at the cursor, per unit of that identifier's idf
_IMPORTED_NAME_WEIGHT = 1.5  # a snippet defining a name the current file imports
_IMPORTED_FILE_BOOST = 1.5  # any snippet of a module the current file imports
_OTHER_LANGUAGE = 0.5  # snippets in another language family than the current file
_OPEN_BOOST = 1.2
_RECENT_BOOST = 0.5  # the most recently edited file gets 1 + this, decaying over _RECENT_FILES
_RECENT_FILES = 16
_STICKY = 1.2  # hysteresis: last query's picks win near-ties, so the selection does not flicker
_MIN_RELATIVE = 0.1  # drop candidates scoring below this share of the best one
_CANDIDATES = 48


class RepoIndex:
    """Snippets of a workspace, kept fresh by watchdog, ranked per completion request.

    Thread-safe: the LSP feeds documents from its thread, completions query from theirs, and one
    background thread scans, follows file events and rebuilds the postings.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        max_file_bytes: int = 1_000_000,
    ) -> None:
        path = os.path.realpath(os.fspath(root))
        if not os.path.isdir(path):
            raise UserError(f"workspace root {os.fspath(root)!r} is not a directory")
        if max_file_bytes < 1:
            raise UserError(f"max_file_bytes must be positive, got {max_file_bytes}")
        self.root = path
        self.max_file_bytes = max_file_bytes
        self._rules = IgnoreRules(path, include, exclude)
        self._vocab = Vocabulary()
        self._lock = threading.RLock()
        self._files: dict[str, Entry] = {}  # disk copies
        self._docs: dict[str, OpenDocument] = {}  # open documents
        self._doc_segment: Postings | None = None  # over the open documents' latest analyses
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._base = Postings([], 0)
        self._events: queue.Queue[tuple[str, list[str], bool] | None] = queue.Queue()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_pick: tuple[str | None, frozenset[tuple[str, str]]] = (None, frozenset())
        self._costs: dict[tuple[str, str], int] = {}
        self._cost_fn: Callable[[str], int] | None = None
        self.watching = False
        self.watch_error: str | None = None  # why live updates are off (e.g. the inotify watch limit)
        self.build_ms = 0.0  # last postings rebuild
        self.scan_s = 0.0  # initial scan

    # -- lifecycle

    def start(self) -> RepoIndex:
        """Scan and watch in a background thread; returns at once. Queries see files as they are indexed."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="repoindex", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._events.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the initial scan is done."""
        return self._ready.wait(timeout)

    def __enter__(self) -> RepoIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- documents

    def update_document(self, path: str, text: str, language: str | None = None) -> None:
        """Unsaved text of an open document; it replaces the disk copy until forget_document().

        `language` may be an LSP languageId; by default the file extension decides.
        """
        key = self._key(path)
        name = (normalize_language(language) if language else None) or language_for_path(key)
        with self._lock:
            doc = self._docs.get(key)
            if doc is None:
                self._docs[key] = OpenDocument(text, name)
            elif doc.text != text:
                doc.text = text
        if self._running():
            self._events.put((_DOCUMENT, [], False))

    def forget_document(self, path: str) -> None:
        key = self._key(path)
        with self._lock:
            if self._docs.pop(key, None) is not None:
                self._doc_segment = None

    def mark_edited(self, path: str) -> None:
        """Record an edit: recently edited files rank higher."""
        key = self._key(path)
        with self._lock:
            self._recent[key] = None
            self._recent.move_to_end(key)
            while len(self._recent) > _RECENT_FILES:
                self._recent.popitem(last=False)

    def definitions(self, path: str) -> list[Definition]:
        entry = self._entry(self._key(path))
        return [Definition(*d) for d in entry.definitions] if entry is not None else []

    def snippets(self, path: str) -> list[Snippet]:
        """All snippets of one file (open-document text first), in order, unscored."""
        key = self._key(path)
        entry = self._entry(key)
        return [Snippet(key, start, end, text, 0.0) for start, end, text, _ in entry.rows] if entry else []

    def stats(self) -> dict[str, float | int | bool]:
        base = self._base
        return {"files": len(base.keys), "snippets": base.n, "identifiers": len(self._vocab),
                "ready": self._ready.is_set(), "watching": self.watching, "build_ms": round(self.build_ms, 2),
                "scan_s": round(self.scan_s, 3)}

    # -- queries

    def query(
        self,
        ctx_text: str,
        current_path: str | None,
        *,
        budget_tokens: int,
        count_tokens: Callable[[str], int],
        imports: list[str] | None = None,
        exclude_path: str | None = None,
        window: tuple[int, int] | None = None,
        cursor: int | None = None,
    ) -> list[Snippet]:
        """The best snippets for the code around the cursor within `budget_tokens`, in path order.

        `ctx_text` is the code around the cursor (the prefix and suffix windows); `cursor` its offset
        in there, so the word being typed is left out of the query and identifiers near it count more.
        `window` is the line range [start, end) of `current_path` that ctx_text covers: snippets of the
        current file overlapping it are never returned (the whole current file without it).
        `imports` adds imported names to those parsed from the current file; `exclude_path` drops a
        file entirely. A snippet's cost is `count_tokens` of its text with a path header; a candidate
        that does not fit may come in folded form (signatures and docstrings only).
        """
        if budget_tokens <= 0:
            return []
        ranked = self._rank(ctx_text, current_path, imports, exclude_path, window, cursor)
        current = self._key(current_path) if current_path else None
        sticky_for, sticky = self._last_pick
        if sticky_for == current and sticky:
            ranked = sorted(
                ((score * _STICKY if (path, chunk.text) in sticky else score, path, chunk)
                 for score, path, chunk in ranked),
                key=lambda r: (-r[0], r[1], r[2].start),
            )
        if count_tokens != self._cost_fn:  # another model's tokenizer: cached costs are void
            self._costs, self._cost_fn = {}, count_tokens
        elif len(self._costs) > 50_000:
            self._costs = {}
        costs = self._costs
        chosen: list[Snippet] = []
        picked: set[tuple[str, str]] = set()
        remaining = budget_tokens
        top = ranked[0][0] if ranked else 0.0
        for score, path, chunk in ranked:
            if score < top * _MIN_RELATIVE or remaining <= 0:
                break
            for text in (chunk.text, chunk.summary):
                if text is None:
                    continue
                cost = costs.get((path, text))
                if cost is None:
                    cost = costs[(path, text)] = count_tokens(cost_text(path, text))
                if cost <= remaining:
                    remaining -= cost
                    chosen.append(Snippet(path, chunk.start, chunk.end, text, score))
                    picked.add((path, chunk.text))
                    break
        self._last_pick = (current, frozenset(picked))
        chosen.sort(key=lambda s: (s.path, s.start_line))
        return chosen

    def rank(
        self,
        ctx_text: str,
        current_path: str | None,
        *,
        imports: list[str] | None = None,
        exclude_path: str | None = None,
        window: tuple[int, int] | None = None,
        cursor: int | None = None,
    ) -> list[Snippet]:
        """Candidate snippets, best first (what query() picks from; for tests and diagnostics)."""
        return [
            Snippet(path, c.start, c.end, c.text, score)
            for score, path, c in self._rank(ctx_text, current_path, imports, exclude_path, window, cursor)
        ]

    def _rank(
        self,
        ctx_text: str,
        current_path: str | None,
        imports: list[str] | None,
        exclude_path: str | None,
        window: tuple[int, int] | None,
        cursor: int | None,
    ) -> list[tuple[float, str, Chunk]]:
        current = self._key(current_path) if current_path else None
        base = self._base
        docs = self._documents(current)
        excluded = self._key(exclude_path) if exclude_path else None
        current_entry = self._entry(current) if current else None
        current_language = current_entry.language if current_entry else (
            language_for_path(current) if current else None)

        counts = query_counts(ctx_text, cursor)
        q_words = [w for w in counts if self._vocab.get(w) is not None]
        q_ids = np.asarray([self._vocab.get(w) for w in q_words], dtype=np.int64)
        q_tf = np.asarray([counts[w] for w in q_words], dtype=np.float64)
        names_found, hint_rows = current_entry.imports if current_entry else ((), ())
        found = Imports(names_found, tuple(Hint(*h) for h in hint_rows))
        names = [w for w in dict.fromkeys([*found.names, *(imports or [])]) if self._vocab.get(w) is not None]
        n_ids = np.asarray([self._vocab.get(w) for w in names], dtype=np.int64)

        total = max(1, base.n + docs.n)

        def idf(ids: np.ndarray) -> np.ndarray:
            df = base.df_of(ids) + docs.df_of(ids)
            return np.log1p((total - df + 0.5) / (df + 0.5))

        q_w = idf(q_ids) * q_tf * (K3 + 1) / (q_tf + K3)
        d_ids = np.concatenate([q_ids, n_ids])
        d_w = np.concatenate([q_w * _DEF_WEIGHT, idf(n_ids) * _IMPORTED_NAME_WEIGHT])
        imported = self._imported_files(found.hints, current, (base, docs)) if current else set()
        with self._lock:
            recent = list(reversed(self._recent))
            open_keys = {k for k, d in self._docs.items() if d.entry is not None}

        candidates: list[tuple[float, str, Chunk]] = []
        for seg, is_docs in ((base, False), (docs, True)):
            if seg.n == 0:
                continue
            scores = seg.scores(q_ids, q_w, d_ids, d_w)
            mult = np.ones(len(seg.keys))
            if current_language is not None:
                mult[seg.families != family_code(current_language)] *= _OTHER_LANGUAGE
            if is_docs:
                mult *= _OPEN_BOOST
            for key in imported:
                i = seg.file_index.get(key)
                if i is not None:
                    mult[i] *= _IMPORTED_FILE_BOOST
            for rank_, key in enumerate(recent):
                i = seg.file_index.get(key)
                if i is not None:
                    mult[i] *= 1 + _RECENT_BOOST * (1 - rank_ / _RECENT_FILES)
            mult *= seg.searchable
            for key in {excluded} if is_docs else open_keys | {excluded}:
                i = seg.file_index.get(key)
                if i is not None:
                    mult[i] = 0
            scores *= mult[seg.chunk_file]
            i = seg.file_index.get(current) if current else None
            if i is not None:
                lo = int(seg.file_lo[i])
                for j, (start, end, text, _) in enumerate(seg.entries[i].rows):
                    overlaps = window is None or start < window[1] and end > window[0]
                    if overlaps or text in ctx_text:  # the text test covers a stale analysis
                        scores[lo + j] = 0
            idx = np.flatnonzero(scores > 0)
            if len(idx) > _CANDIDATES:
                idx = idx[np.argpartition(-scores[idx], _CANDIDATES)[:_CANDIDATES]]
            for j in idx.tolist():
                f = int(seg.chunk_file[j])
                chunk = Chunk(*seg.entries[f].rows[j - int(seg.file_lo[f])])
                candidates.append((float(scores[j]), seg.keys[f], chunk))
        candidates.sort(key=lambda c: (-c[0], c[1], c[2].start))
        return candidates[:_CANDIDATES]

    def _imported_files(self, hints: Iterable[Hint], current: str, segments: Iterable[Postings]) -> set[str]:
        found: set[str] = set()
        here = posixpath.dirname(current)
        for hint in hints:
            if hint.relative:
                target = posixpath.normpath(posixpath.join(here, hint.path))
                if target.startswith(".."):
                    continue
                keys = [target]
            else:
                keys = suffixes(hint.path)
            for seg in segments:
                table = seg.dirs if hint.directory else seg.modules
                for k in keys:  # longest suffix first: the most specific match wins
                    hit = table.get(k)
                    if hit:
                        found.update(hit)
                        break
        found.discard(current)
        return found

    def _documents(self, current: str | None) -> Postings:
        """The segment of open documents' latest analyses.

        Documents whose analysis is out of date are analysed here, except the one being typed in
        (`current`) while the background thread is there to redo it: until then its previous analysis,
        or its disk copy, stands in. What matters of it here is the part outside the cursor window,
        which rarely changes, and a big file takes ~30 ms per 1,000 lines to analyse.
        """
        background = self._running()

        def now(key: str, doc: OpenDocument) -> bool:
            if doc.analyzed == doc.text:
                return False
            if key != current or not background:
                return True
            return doc.entry is None and key not in self._files

        with self._lock:
            todo = [(k, d.text, d.language) for k, d in self._docs.items() if now(k, d)]
        self._analyze_documents(todo, polite=False)
        with self._lock:
            if self._doc_segment is None:
                entries = [d.entry for _, d in sorted(self._docs.items()) if d.entry is not None]
                self._doc_segment = Postings(entries, len(self._vocab), self._base.avgdl)
            return self._doc_segment

    def _analyze_documents(self, todo: list[tuple[str, str, str | None]], *, polite: bool) -> None:
        for key, text, language in todo:
            entry = analyze(key, text, language, (-1, len(text)), self._vocab, polite=polite)
            entry.searchable = not os.path.isabs(key) and not self._rules.excluded(key, False)
            with self._lock:
                doc = self._docs.get(key)
                if doc is not None:
                    doc.entry, doc.analyzed = entry, text
                    self._doc_segment = None

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def _entry(self, key: str | None) -> Entry | None:
        if key is None:
            return None
        with self._lock:
            doc = self._docs.get(key)
            if doc is None:
                return self._files.get(key)
        if doc.entry is None:
            self._documents(key)
        return doc.entry or self._files.get(key)

    def relative(self, path: str) -> str:
        """How the index names ``path``: relative to the root with '/' (absolute outside the root)."""
        return self._key(path)

    def _key(self, path: str) -> str:
        """Index key: the path relative to the root with '/' separators; absolute outside the root."""
        full = os.path.realpath(os.path.join(self.root, path))
        rel = os.path.relpath(full, self.root)
        if rel == ".." or rel.startswith(".." + os.sep):
            return full.replace(os.sep, "/")
        return rel.replace(os.sep, "/")

    # -- background work

    def _enqueue(self, kind: str, paths: list[str], is_dir: bool) -> None:
        rels = [self._inside(p) for p in paths]
        if kind == EVENT_TYPE_MOVED and (rels[0] is None or rels[1] is None):  # into or out of the tree
            kind = EVENT_TYPE_CREATED if rels[0] is None else EVENT_TYPE_DELETED
        kept = [r for r in rels if r is not None]
        if not kept or all(self._noise(r) for r in kept):
            return  # outside the root, or .git churn and friends: not worth waking the worker
        self._events.put((kind, kept, is_dir))

    def _inside(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return None if rel == "." or rel == ".." or rel.startswith("../") else rel

    def _noise(self, rel: str) -> bool:
        """Events under skipped names are dropped early; a .gitignore outside them changes the rules."""
        directory, name = posixpath.split(rel)
        if name == ".gitignore":
            return bool(directory) and self._rules.excluded(directory, True)
        return any(self._rules.skip_name(part) for part in rel.split("/"))

    def _run(self) -> None:
        observer = None
        try:
            try:
                observer = Observer()
                observer.schedule(EventHandler(self), self.root, recursive=True)
                observer.start()
                self.watching = True
            except OSError as e:
                self.watch_error = f"cannot watch {self.root}: {e}"
                log.warning("%s; the index will not follow changes on disk", self.watch_error)
                observer = None
            t0 = time.perf_counter()
            self._scan()
            self.scan_s = time.perf_counter() - t0
            self._ready.set()
            while not self._stopping.is_set():
                batch = self._next_batch()
                if batch:
                    self._apply(batch)
        except Exception:
            log.exception("repository index stopped")
        finally:
            self._ready.set()
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            self.watching = False

    def _next_batch(self) -> list[tuple[str, list[str], bool]]:
        item = self._events.get()
        if item is None:
            return []
        batch = [item]
        deadline = time.monotonic() + _MAX_BATCH_S
        while time.monotonic() < deadline:
            try:
                item = self._events.get(timeout=_DEBOUNCE_S)
            except queue.Empty:
                break
            if item is None:
                return []
            batch.append(item)
        return batch

    def _apply(self, batch: list[tuple[str, list[str], bool]]) -> None:
        if any(kind == _DOCUMENT for kind, _, _ in batch):
            with self._lock:
                todo = [(k, d.text, d.language) for k, d in self._docs.items() if d.analyzed != d.text]
            self._analyze_documents(todo, polite=True)
        events = [item for item in batch if item[0] != _DOCUMENT]
        if not events:
            return
        if any(posixpath.basename(p) == ".gitignore" for _, paths, _ in events for p in paths):
            self._scan()
            return
        files: dict[str, None] = {}
        for kind, paths, is_dir in events:
            if kind == EVENT_TYPE_MOVED:
                gone, new = paths
                if is_dir:
                    self._drop_tree(gone)
                    self._scan_dir(new)
                else:
                    files[gone] = None
                    files[new] = None
            elif is_dir and kind == EVENT_TYPE_DELETED:
                self._drop_tree(paths[0])
            elif is_dir:
                self._scan_dir(paths[0])
            else:
                files[paths[0]] = None
        for rel in files:
            if self._refresh(rel):
                self.mark_edited(rel)
        self._publish()

    def _drop_tree(self, rel: str) -> None:
        with self._lock:
            for key in [k for k in self._files if k == rel or k.startswith(rel + "/")]:
                del self._files[key]

    def _refresh(self, rel: str) -> bool:
        """Bring one path's entry up to date with the disk; True if its content was (re)indexed."""
        try:
            st = os.lstat(os.path.join(self.root, rel))
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or self._rules.excluded(rel, False):
            with self._lock:
                self._files.pop(rel, None)
            return False
        return self._index_file(rel, st)

    def _index_file(self, rel: str, st: os.stat_result) -> bool:
        stamp = (st.st_mtime_ns, st.st_size)
        old = self._files.get(rel)
        if old is not None and old.stamp == stamp:
            return False
        text = None
        if st.st_size <= self.max_file_bytes:
            try:
                text = read_text(os.path.join(self.root, rel), self.max_file_bytes)
            except OSError:
                text = None
        if text is None:
            with self._lock:
                self._files.pop(rel, None)
            return False
        entry = analyze(rel, text, language_for_path(rel), stamp, self._vocab, polite=True)
        with self._lock:
            self._files[rel] = entry
        return True

    def _scan_dir(self, rel_dir: str) -> set[str]:
        """Index every wanted file under rel_dir (loading .gitignore files on the way); the keys seen."""
        seen: set[str] = set()
        if rel_dir and self._rules.excluded(rel_dir, True):
            return seen
        top = os.path.join(self.root, rel_dir)
        interval = 0.5
        next_publish = time.monotonic() + interval
        for dirpath, dirnames, filenames in os.walk(top):
            if self._stopping.is_set():
                break
            rel_here = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_here = "" if rel_here == "." else rel_here
            self._rules.load(rel_here)
            keep = []
            for d in sorted(dirnames):
                rel = posixpath.join(rel_here, d)
                if not (self._rules.skip_name(d) or os.path.islink(os.path.join(dirpath, d))
                        or self._rules.gitignored(rel, True)):
                    keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                if self._stopping.is_set():
                    break
                rel = posixpath.join(rel_here, name)
                if self._rules.skip_name(name) or self._rules.gitignored(rel, False) or not (
                    self._rules.wanted_file(rel)
                ):
                    continue
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    self._index_file(rel, st)
                    if rel in self._files:
                        seen.add(rel)
            if not self._ready.is_set() and time.monotonic() > next_publish:
                self._publish()  # a long first scan: let queries see what is there so far
                interval *= 2
                next_publish = time.monotonic() + interval
        return seen

    def _scan(self) -> None:
        """Walk the whole tree; entries for files no longer there (or now ignored) are dropped."""
        self._rules.gitignores.clear()
        seen = self._scan_dir("")
        if not self._stopping.is_set():
            with self._lock:
                for key in [k for k in self._files if k not in seen]:
                    del self._files[key]
        self._publish()

    def _publish(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            entries = [self._files[k] for k in sorted(self._files)]
        self._base = Postings(entries, len(self._vocab))
        self.build_ms = (time.perf_counter() - t0) * 1000
