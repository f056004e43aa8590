"""Settings have one source, ``codecomplete.config.Settings``: the VS Code extension's manifest and the Neovim
README must offer exactly its fields (camelCase, as editors send them), with the same defaults."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from codecomplete.config import Settings

ROOT = Path(__file__).resolve().parents[1]
EDITOR_ONLY = {"serverPath"}  # how the extension starts the server: not a server setting


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def defaults() -> dict[str, Any]:
    out = {}
    for f in fields(Settings):
        value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out[camel(f.name)] = value
    return out


def vscode_settings() -> dict[str, dict[str, Any]]:
    manifest = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text(encoding="utf-8"))
    configuration = manifest["contributes"]["configuration"]
    sections = configuration if isinstance(configuration, list) else [configuration]
    props = {k: v for section in sections for k, v in section["properties"].items()}
    return {k.removeprefix("codecomplete."): v for k, v in props.items() if k.removeprefix("codecomplete.")
            not in EDITOR_ONLY}


def nvim_readme_settings() -> dict[str, str]:
    """Rows of the README's server settings table (the section whose heading names them): | `key` | default | ..."""
    text = (ROOT / "editors" / "nvim" / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^#+ [^\n]*[Ss]erver settings[^\n]*$(.*?)(?=^#)", text + "\n#", re.M | re.S)
    assert section is not None, "editors/nvim/README.md has no server settings section"
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `(\w+)` \| ([^|]*) \|", section.group(1), re.M)}


def test_every_editor_offers_exactly_the_server_settings() -> None:
    ours = set(defaults())
    assert set(vscode_settings()) == ours, "editors/vscode/package.json vs Settings"
    assert set(nvim_readme_settings()) == ours, "editors/nvim/README.md settings table vs Settings"


def test_the_vscode_defaults_are_the_servers() -> None:
    expected = defaults()
    for key, spec in vscode_settings().items():
        if "default" in spec:
            assert spec["default"] == expected[key], key
        else:
            assert expected[key] is None, f"{key}: no default in package.json, the server's is {expected[key]!r}"
