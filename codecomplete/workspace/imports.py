"""What a source file imports, by regular expression per language: names, and hints at the files they name.

Fast enough to run on every query; the workspace ranks snippets of imported files and definitions of
imported names higher.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from codecomplete.core.languages import spec_for


@dataclass(frozen=True, slots=True)
class Hint:
    """A module the current file imports, as a '/'-separated path without extension."""

    path: str
    relative: bool = False  # relative to the importing file's directory
    directory: bool = False  # names a directory (Go package, Java wildcard), not a file


@dataclass(frozen=True, slots=True)
class Imports:
    names: tuple[str, ...]  # symbols imported by name
    hints: tuple[Hint, ...]


_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)
_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w.][\w., \t]*)", re.M)
_JS_FROM = re.compile(r"\b(?:import|export)\s+(?:type\s+)?([\w*{}\s,$]*?)\s*from\s*['\"]([^'\"\n]+)['\"]")
_JS_BARE = re.compile(r"\bimport\s*\(?\s*['\"]([^'\"\n]+)['\"]")
_JS_REQUIRE = re.compile(
    r"(?:(?:const|let|var)\s+([\w{}\s,:$]+?)\s*=\s*)?\brequire\s*\(\s*['\"]([^'\"\n]+)['\"]\s*\)"
)
_GO_IMPORT = re.compile(r"^[ \t]*import\s*(?:\(([^)]*)\)|(?:[\w.]+\s+)?\"([^\"\n]+)\")", re.M)
_RUST_USE = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)
_RUST_MOD = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", re.M)
_JAVA_IMPORT = re.compile(r"^[ \t]*import\s+(static\s+)?([\w.]+?)(\.\*)?\s*;", re.M)
_C_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*\"([^\"\n]+)\"", re.M)
_LUA_REQUIRE = re.compile(r"\brequire\s*\(?\s*['\"]([\w./-]+)['\"]")
_WORD = re.compile(r"[^\W\d]\w*")
_SOURCE_EXTENSIONS = re.compile(r"\.(py|pyi|[cm]?[jt]sx?|go|rs|java|c|h|cc|cpp|cxx|hh|hpp|hxx|lua|sh)$")


def strip_extension(path: str) -> str:
    """A module path as imports name it: without a source file extension."""
    return _SOURCE_EXTENSIONS.sub("", path)


def _names(clause: str) -> list[str]:
    """Imported names from `a, b as c, {d, e as f}`, `(a, b)` or `{a: b}`: the exporting module's names."""
    out = []
    for part in re.split(r"[,{}()]", clause):
        part = part.strip()
        if not part or part.startswith("*"):
            continue
        word = re.split(r"\s+as\s+|\s*:\s*", part)[0].strip().removeprefix("type ").strip()
        if _WORD.fullmatch(word):
            out.append(word)
    return out


def _rust_paths(tree: str, prefix: list[str]) -> list[list[str]]:
    """Expand a `use` tree (`a::b::{c, d::{e as f}}`) into its paths."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        path = [s.strip() for s in re.split(r"\s+as\s+", tree)[0].split("::") if s.strip()]
        return [prefix + path]
    head = [s for s in tree[:brace].split("::") if s.strip()]
    inner = tree[brace + 1 : tree.rfind("}")]
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (ch == "{") - (ch == "}")
        current += ch
    parts.append(current)
    return [p for part in parts if part.strip() for p in _rust_paths(part, prefix + head)]


def parse_imports(text: str, language: str | None) -> Imports:
    """Imported names and modules, by regular expression per language (fast enough for every query)."""
    names: list[str] = []
    hints: list[Hint] = []
    spec = spec_for(language)
    syntax = spec.imports if spec is not None else None
    if syntax == "python":
        for m in _PY_FROM.finditer(text):
            dots, module, clause = m.group(1), m.group(2).replace(".", "/"), m.group(3).split("#")[0]
            imported = _names(clause)
            names.extend(imported)
            base = posixpath.join("../" * (len(dots) - 1), module) if dots else module
            hints.append(Hint(base.rstrip("/") or ".", relative=bool(dots)))
            hints.extend(Hint(posixpath.join(base, n), relative=bool(dots)) for n in imported)
        for m in _PY_IMPORT.finditer(text):
            for part in m.group(1).split("#")[0].split(","):
                module = re.split(r"\s+as\s+", part.strip())[0]
                if module:
                    hints.append(Hint(module.replace(".", "/")))
    elif syntax == "javascript":
        specs: list[str] = []
        for m in _JS_FROM.finditer(text):
            names.extend(_names(m.group(1)))
            specs.append(m.group(2))
        specs.extend(m.group(1) for m in _JS_BARE.finditer(text))
        for m in _JS_REQUIRE.finditer(text):
            if m.group(1):
                names.extend(_names(m.group(1)))
            specs.append(m.group(2))
        for spec in specs:
            relative = spec.startswith(".")
            path = strip_extension(spec if relative else re.sub(r"^[@~]/", "", spec))
            hints.append(Hint(path, relative=relative))
    elif syntax == "go":
        for m in _GO_IMPORT.finditer(text):
            paths = re.findall(r"\"([^\"\n]+)\"", m.group(1)) if m.group(1) is not None else [m.group(2)]
            hints.extend(Hint(p, relative=p.startswith("."), directory=True) for p in paths)
    elif syntax == "rust":
        # Where `self::`/`super::` lead depends on mod.rs layouts: module paths are matched as suffixes.
        for m in _RUST_USE.finditer(text):
            for path in _rust_paths(m.group(1), []):
                module = [s for s in path if s not in ("crate", "self", "super", "*")]
                if module and path[-1] != "*":
                    names.append(module[-1])
                if len(module) > 1:
                    hints.append(Hint("/".join(module[:-1])))
                if module:
                    hints.append(Hint("/".join(module)))
        hints.extend(Hint(m.group(1)) for m in _RUST_MOD.finditer(text))
    elif syntax == "java":
        for m in _JAVA_IMPORT.finditer(text):
            parts = m.group(2).split(".")
            if m.group(3):
                hints.append(Hint("/".join(parts), directory=not m.group(1)))
                continue
            names.append(parts[-1])
            hints.append(Hint("/".join(parts[:-1] if m.group(1) else parts)))
    elif syntax == "c":
        hints.extend(Hint(strip_extension(p)) for p in _C_INCLUDE.findall(text))
    elif syntax == "lua":
        hints.extend(Hint(p.replace(".", "/")) for p in _LUA_REQUIRE.findall(text))
    return Imports(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(hints)))
