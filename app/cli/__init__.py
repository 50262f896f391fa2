"""The ``hybrid-search`` command line: one module per command, each with its flags (and the settings they
override, declared beside them in ``options``), and its ``run``.

A command module is light at import time (argparse only), so building the whole parser loads no torch,
no transformers and no engine client, and ``hybrid-search --help`` is instant. Errors reach the user as
one line saying what to do; ``--debug`` shows the traceback. This package owns logging configuration;
library modules never set log levels.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["COMMANDS", "build_parser", "main"]

log = logging.getLogger("hybrid-search")

# command -> its module under hybrid_search.app.cli (the order of --help)
COMMANDS = {
    "ingest": "ingest",
    "delete-docs": "delete_docs",
    "search": "search",
    "eval": "eval",
    "tune": "tune",
    "tune-defaults": "tune_defaults",
    "serve": "serve",
    "inspect": "inspect",
    "indexes": "indexes",
    "compact": "compact",
    "drop": "drop",
    "prune": "prune",
    "rollback": "rollback",
    "repair": "repair",
    "reindex": "reindex",
    "train": "train",
    "dashboards": "dashboards",
    "duplicates": "duplicates",
    "duplicates-eval": "duplicates_eval",
    "bench": "bench",
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"hybrid_search.app.cli.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-search",
        description="Hybrid BM25 + dense search with fusion and cross-encoder reranking.",
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("hybrid-search")
    except PackageNotFoundError:
        installed = "unknown"
    parser.add_argument("--version", action="version", version=f"hybrid-search {installed}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _command(name)
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        command.set_defaults(command_parser=command)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an option the command does not take is reported with that command's usage and the nearest
    option it does take (argparse alone reports it from the top-level parser, with the top-level usage)."""
    import difflib

    args, extras = build_parser().parse_known_args(argv)
    if extras:
        command: argparse.ArgumentParser = args.command_parser
        known = [o for action in command._actions for o in action.option_strings if o.startswith("--")]
        hints = []
        for extra in extras:
            close = difflib.get_close_matches(extra.split("=")[0], known, n=1, cutoff=0.6)
            hints.append(f"{extra} (did you mean {close[0]}?)" if close and extra.startswith("-") else extra)
        command.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def _parse_filters(items: Sequence[str]) -> dict[str, object] | None:
    """``--filter`` values as filters (kept here for callers of the earlier single-module CLI)."""
    from hybrid_search.app.cli.search import parse_filters

    return parse_filters(items)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    for chatty in ("elastic_transport", "opensearch"):  # per-retry warnings with tracebacks; our errors say it
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.debug else logging.ERROR)
    from hybrid_search.config.errors import HybridSearchError

    try:
        code: int = _command(args.command).run(args)
        return code
    except HybridSearchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted" + (": rerun with --resume to continue" if args.command == "ingest" else ""), file=sys.stderr
        )
        return 130
    except Exception as exc:  # anything unplanned still reaches the user as one line
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
