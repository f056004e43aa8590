"""Which files the index reads (ignore rules, .gitignore) and the watchdog handler that reports changes."""

from __future__ import annotations

import os
import posixpath
import re
from typing import TYPE_CHECKING

import pathspec
from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)

from codecomplete.errors import UserError

if TYPE_CHECKING:
    from codecomplete.workspace.index import RepoIndex

_IGNORED_DIRS = frozenset({
    "node_modules", "__pycache__", "venv", "build", "dist", "target", "site-packages", "bower_components",
})
_NOISE = ("*.lock", "package-lock.json", "pnpm-lock.yaml", "go.sum", "*.min.js", "*.min.css", "*.map",
          "*.svg", "*.csv", "*.tsv", "*.log", "*.ipynb")
WATCHED_EVENTS = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_DELETED, EVENT_TYPE_MOVED})


class IgnoreRules:
    """What the index skips: fixed directory names, hidden names, .gitignore files, globs and noise."""

    def __init__(self, root: str, include: list[str] | None, exclude: list[str] | None) -> None:
        self.root = root
        self.include = _spec(include, "include") if include else None
        self.exclude = _spec(list(exclude or []) + list(_NOISE), "exclude")
        self.gitignores: dict[str, pathspec.GitIgnoreSpec] = {}  # directory (relative; "" = root) -> rules

    def load(self, directory: str) -> None:
        """Read `directory`/.gitignore (for the root also .git/info/exclude, which it overrides)."""
        files = [".git/info/exclude", ".gitignore"] if directory == "" else [".gitignore"]
        lines: list[str] = []
        for name in files:
            try:
                with open(os.path.join(self.root, directory, name), encoding="utf-8", errors="replace") as f:
                    lines.extend(f.read().splitlines())
            except OSError:
                continue
        if lines:
            self.gitignores[directory] = _gitignore(lines)
        else:
            self.gitignores.pop(directory, None)

    def skip_name(self, name: str) -> bool:
        return name.startswith(".") or name in _IGNORED_DIRS

    def gitignored(self, rel: str, is_dir: bool) -> bool:
        """The deepest .gitignore with a matching rule decides, as in git."""
        directory = rel
        while directory:
            directory = posixpath.dirname(directory)
            spec = self.gitignores.get(directory)
            if spec is not None:
                inner = rel[len(directory) + 1 :] if directory else rel
                decided = spec.check_file(inner + "/" if is_dir else inner).include
                if decided is not None:
                    return decided
        return False

    def wanted_file(self, rel: str) -> bool:
        return (self.include is None or self.include.match_file(rel)) and not self.exclude.match_file(rel)

    def excluded(self, rel: str, is_dir: bool) -> bool:
        """Full check of a path found by an event: every ancestor directory, then the path itself."""
        parts = rel.split("/")
        if any(self.skip_name(p) for p in parts):
            return True
        for i in range(1, len(parts)):
            if self.gitignored("/".join(parts[:i]), True):
                return True
        return self.gitignored(rel, is_dir) or (not is_dir and not self.wanted_file(rel))


def _spec(patterns: list[str], what: str) -> pathspec.GitIgnoreSpec:
    try:
        return pathspec.GitIgnoreSpec.from_lines(patterns)
    except (ValueError, TypeError, re.error) as e:
        raise UserError(f"bad {what} glob in {patterns!r}: {e}") from None


def _gitignore(lines: list[str]) -> pathspec.GitIgnoreSpec:
    """A .gitignore's rules; lines git would not understand either are skipped, not fatal."""
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except (ValueError, re.error):
        valid = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except (ValueError, re.error):
                continue
            valid.append(line)
        return pathspec.GitIgnoreSpec.from_lines(valid)


def read_text(path: str, max_bytes: int) -> str | None:
    """The file's text, or None for binaries (NUL bytes), non-UTF-8 and files over max_bytes."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class EventHandler(FileSystemEventHandler):
    def __init__(self, index: RepoIndex) -> None:
        self.index = index

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in WATCHED_EVENTS:  # opened/closed/attrib: our own reads cause these
            return
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return
        paths = [os.fsdecode(event.src_path)]
        if event.event_type == EVENT_TYPE_MOVED:
            paths.append(os.fsdecode(event.dest_path))
        self.index._enqueue(event.event_type, paths, event.is_directory)
