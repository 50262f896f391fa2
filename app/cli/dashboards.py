"""``hybrid-search dashboards install``: Kibana / OpenSearch Dashboards saved objects for an index."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "Kibana / OpenSearch Dashboards saved objects"


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    d = actions.add_parser("install", help="import the data views, visualizations and dashboard (overwrites)")
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("--kibana-url", help="Kibana, e.g. http://localhost:5601")
    where.add_argument("--dashboards-url", help="OpenSearch Dashboards, e.g. http://localhost:5602")
    options.index_flag(
        d, help=f"corpus alias the objects are for, and its -queries and -ingest logs {options.DEFAULT_NOTE}"
    )
    d.add_argument("--space", help="Kibana space (default: the default space)")
    options.setting(
        d, "--username", path="backend.username", help="user for basic auth; the password: HYBRID_SEARCH_PASSWORD"
    )
    d.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep trying a product that does not answer yet for this long (default: fail at once)",
    )
    options.common(d)


def run(args: argparse.Namespace) -> int:
    from hybrid_search.app.dashboards import PRODUCTS, install_saved_objects

    settings = options.load(args)
    product, url = ("kibana", args.kibana_url) if args.kibana_url else ("opensearch-dashboards", args.dashboards_url)
    result = install_saved_objects(
        url, product, settings.index.name, settings=settings.backend, space=args.space, wait=args.wait
    )
    base = url.rstrip("/") + (f"/s/{args.space}" if args.space else "")  # the space id was checked on install
    print(
        f"imported {len(result.objects)} saved objects into {PRODUCTS[product].title} for {result.alias} "
        f"(and {result.alias}-queries, {result.alias}-ingest); open {base}/app/dashboards#/view/{result.dashboard_id}"
    )
    return 0
