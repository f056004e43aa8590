"""The ``codecomplete`` command: one-shot infills, model management, the language server.

Every user-facing failure is a ``UserError``: printed as one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from codecomplete import __version__
from codecomplete.errors import UserError

EXIT_USAGE = 2


# Commands that live in their own modules, imported only when used so `codecomplete infill` starts fast.
# Each module exposes a click command named `command`.
LAZY_COMMANDS = {
    "bench": ("codecomplete.tools.bench", "Replay typing through the language server and measure latency and reuse."),
    "eval": ("codecomplete.tools.evaluate",
             "Measure completion quality: HumanEval infilling and masked repository lines."),
    "serve": ("codecomplete.serving.app", "Run the shared daemon that keeps one model loaded for every editor."),
    "doctor": ("codecomplete.tools.doctor",
               "Check the installation: llama.cpp backend, model, grammars, daemon, config."),
    "tray": ("codecomplete.tools.tray", "Tray icon that starts or attaches to the daemon."),
    "soak": ("codecomplete.tools.soak", "Several editors type real files through one daemon for a long time."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            import importlib

            return importlib.import_module(LAZY_COMMANDS[name][0]).command
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        eager = click.Group.list_commands(self, ctx)
        rows = [(name, cmd.get_short_help_str()) for name in eager
                if (cmd := click.Group.get_command(self, ctx, name)) is not None]
        rows += [(name, help_text) for name, (_, help_text) in LAZY_COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codecomplete")
def cli() -> None:
    """Private, low-latency code completion on your own machine."""


def _settings(**overrides: Any):
    from codecomplete.config import load_settings

    return load_settings({k: v for k, v in overrides.items() if v is not None})


@cli.command(context_settings={"ignore_unknown_options": True})  # so "-:42:17" (stdin) is a location
@click.argument("location", metavar="PATH:LINE:COL")
@click.option("--lang", "language", help="Language (python, javascript, go, ...); default: from the file name.")
@click.option("--model", help="Catalog name or path to a .gguf file; default: the configured or embedded model.")
@click.option("--format", "fmt", type=click.Choice(["auto", "psm", "spm", "prefix"]), help="Prompt layout.")
@click.option("--max-tokens", type=click.IntRange(1, 4096), help="Most tokens to generate.")
@click.option("--budget", "token_budget", type=click.IntRange(16), help="Prompt token budget for the context.")
@click.option("--time-budget-ms", type=click.IntRange(1), help="Wall-time budget for evaluation + generation.")
@click.option("--no-postprocess", is_flag=True, help="Show the model's raw output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with prompt, tokens and timings.")
@click.option("--no-daemon", is_flag=True, help="Load the model in this process even when the daemon runs.")
def infill(location, language, model, fmt, max_tokens, token_budget, time_budget_ms, no_postprocess, as_json,
           no_daemon):
    """Complete the code at PATH:LINE:COL (1-based; PATH '-' reads standard input)."""
    from codecomplete.core.languages import language_for_path, normalize_language
    from codecomplete.core.source import offset_at, parse_location, read_source

    path, line, col = parse_location(location)
    if language:
        lang = normalize_language(language)
        if lang is None:
            from codecomplete.core.languages import KNOWN_LANGUAGES

            raise UserError(f"unknown language {language!r} (known: {', '.join(KNOWN_LANGUAGES)})")
    else:
        lang = None if path == "-" else language_for_path(path)
    try:  # read_source names every failure it knows (FIFO, device, too large, too long a name) in one line
        text = read_source(path)
    except (OSError, ValueError) as exc:  # and anything it does not is still one line, exit 2, no traceback
        raise UserError(f"{path[:160]}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    offset = offset_at(text, line, col)
    settings = _settings(
        model=model,
        format=fmt,
        max_tokens=max_tokens,
        max_tokens_single_line=max_tokens,
        token_budget=token_budget,
        time_budget_ms=time_budget_ms,
        postprocess=False if no_postprocess else None,
    )
    result = None
    if not no_daemon:  # a running daemon answers without a cold model load
        from codecomplete.serving.client import complete_with_daemon

        result = complete_with_daemon(text, offset, lang, settings)
    if result is None:
        from codecomplete.core.pipeline import Completer
        from codecomplete.engines import load_engine

        engine = load_engine(settings)
        result = Completer(engine, settings).complete(text, offset, lang).to_json()
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        click.echo(result["completion"])


@cli.group()
def models() -> None:
    """List, locate and download models (weights live in your data dir, never in the repo)."""


@models.command("list")
def models_list() -> None:
    """Known models, their FIM family and whether they are on disk."""
    from codecomplete.models import describe_models

    rows = describe_models()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        size = r.get("size") or r.get("approx_size")
        size_s = f"{size / 1e9:6.2f} GB" if size else "     ?   "
        mark = "on disk" if r["present"] else "-"
        click.echo(f"{r['name']:<{width}}  {r['fim']:<9}  {r.get('quant') or '':<7}  {size_s}  {mark}")


@models.command("path")
@click.argument("name")
def models_path(name: str) -> None:
    """Print the file a model name resolves to."""
    from codecomplete.models import resolve_model

    click.echo(str(resolve_model(name)))


@models.command("pull")
@click.argument("name")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def models_pull(name: str, quiet: bool) -> None:
    """Download a catalog model from its hub repository (resumable, size-checked)."""
    from codecomplete.models import pull

    click.echo(str(pull(name, progress=not quiet)))


@cli.command()
@click.option("--tcp", "tcp", metavar="127.0.0.1:PORT", help="Listen on loopback TCP instead of stdio (debugging).")
@click.option("--no-daemon", is_flag=True, help="Load the model in this process instead of the shared daemon.")
def lsp(tcp: str | None, no_daemon: bool) -> None:
    """Run the language server over stdio (editors start this)."""
    from codecomplete.lsp.server import run

    run(tcp=tcp, daemon=not no_daemon)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning UserErrors into one line and exit status 2."""
    try:
        cli.main(args=argv, prog_name="codecomplete", standalone_mode=False)
    except UserError as exc:
        click.echo(f"codecomplete: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("codecomplete: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
