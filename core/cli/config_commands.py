"""``mtl config schema`` (the config's JSON schema, for editors), ``mtl config show`` (a
config with every default filled in) and ``mtl config reference`` (docs/config.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from mtlkit.cli.base import Command, CommandContext, add_config_arguments
from mtlkit.components.filled import filled_config
from mtlkit.config.json_schema import config_json_schema
from mtlkit.config.loading import load_config
from mtlkit.config.reference import BUILTIN_DISTRIBUTION, config_reference
from mtlkit.files import atomic_write_text, check_output_file, to_json
from mtlkit.text import printable, shown


def _out_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--out", metavar="FILE", help=f"write the {what} to FILE, not stdout")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")


def _check_out(args: argparse.Namespace) -> None:
    # before any work: `config show cfg.yaml --out cfg.yaml` must not replace a commented
    # config unasked
    if args.out:
        check_output_file(Path(args.out), overwrite=args.force)


def _emit(text: str, out: str | None, ctx: CommandContext) -> int:
    """``text`` to ``out`` (written atomically) or to standard output, unwrapped."""
    if out:
        atomic_write_text(Path(out), text)
        ctx.err.print(f"wrote {shown(out)}")
    else:
        ctx.console.file.write(printable(text))
        ctx.console.file.flush()
    return 0


def _schema_arguments(parser: argparse.ArgumentParser) -> None:
    _out_argument(parser, "schema")
    parser.add_argument(
        "--base",
        action="store_true",
        help="components as free mappings, without the installed plugins' options",
    )


def _schema(args: argparse.Namespace, ctx: CommandContext) -> int:
    _check_out(args)
    schema = config_json_schema(None if args.base else ctx.host)
    return _emit(to_json(schema), args.out, ctx)


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    _out_argument(parser, "resolved config")


def _show(args: argparse.Namespace, ctx: CommandContext) -> int:
    _check_out(args)
    config = load_config(args.config, args.overrides)
    shown_config = filled_config(config, ctx.host)
    return _emit(yaml.safe_dump(shown_config, sort_keys=False), args.out, ctx)


def _reference_arguments(parser: argparse.ArgumentParser) -> None:
    _out_argument(parser, "reference")
    parser.add_argument(
        "--builtin",
        action="store_true",
        help="only mtlkit's own components (as docs/config.md), not other installed plugins'",
    )


def _reference(args: argparse.Namespace, ctx: CommandContext) -> int:
    _check_out(args)
    distributions = [BUILTIN_DISTRIBUTION] if args.builtin else None
    return _emit(config_reference(ctx.host, distributions), args.out, ctx)


def config_commands() -> dict[str, Command]:
    return {
        "config schema": Command(
            "print the JSON schema of a run configuration (for editors' YAML completion)",
            _schema_arguments,
            _schema,
        ),
        "config show": Command(
            "print a configuration with every default filled in, components' options included",
            _show_arguments,
            _show,
        ),
        "config reference": Command(
            "print the configuration reference (Markdown: every key, every component)",
            _reference_arguments,
            _reference,
        ),
    }
