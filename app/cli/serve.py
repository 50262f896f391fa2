"""``hybrid-search serve``: the workbench (JSON API and page) over HTTP, loopback by default."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from hybrid_search.app.cli import options

HELP = "serve the search workbench: a JSON API and a page to compare modes and judge hits"

KEY_ENV = "HYBRID_SEARCH_API_KEY"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p, help="the index the page opens first (every index is served)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; others need an API key)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api-key", help=f"require this key on every request (or set {KEY_ENV}); needed off loopback")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a settings profile (from tune) the page can show as a column and compare; repeat for more",
    )
    options.common(p)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from hybrid_search.config.errors import ConfigError
    from hybrid_search.config.extras import require

    key = args.api_key or os.environ.get(KEY_ENV) or None
    if not is_loopback(args.host) and not key:
        raise ConfigError(
            f"--host {args.host} is reachable from other machines: give --api-key (or set {KEY_ENV}) so every "
            "request must carry it, or serve on 127.0.0.1"
        )
    profiles = {}
    for item in args.profile:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--profile {item!r}: write NAME=PATH")
        profiles[name] = path
    uvicorn = require("uvicorn", extra="serve", purpose="hybrid-search serve")
    from hybrid_search.app.workbench.api import create_app

    options.quiet_model_loading()
    app = create_app(options.load(args), api_key=key, profiles=profiles)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving the workbench at http://{shown}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
