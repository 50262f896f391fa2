"""``hybrid-search dashboards install``: import the saved objects into Kibana or OpenSearch Dashboards.

The objects live as exported NDJSON in ``config/dashboards/`` (one file per product, written for the alias
``corpus``). For another alias they are renamed before import: ids, references, index-pattern titles and
the ``[corpus]`` tag in titles. The import goes through each product's saved-objects import API with
``overwrite=true``, so installing again replaces the objects in place (idempotent). This module never
writes to the search cluster itself.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import quote

from hybrid_search.backends.base import check_index_name
from hybrid_search.config.errors import ConfigError, DashboardsError
from hybrid_search.config.settings import BackendSettings, check_url

__all__ = ["PRODUCTS", "InstallResult", "Product", "install_saved_objects", "saved_objects"]

log = logging.getLogger(__name__)

SAVED_OBJECTS_DIR: Traversable = resources.files("hybrid_search.app.saved_objects")  # inside the package
DEFAULT_ALIAS = "corpus"
_ID_PREFIX = f"hybrid-search-{DEFAULT_ALIAS}"
_RETRY_STATUS = frozenset({502, 503, 504})  # Kibana answers 503 while it starts
_SPACE_ID = re.compile(r"^[a-z0-9_-]{1,100}$")


@dataclass(frozen=True, slots=True)
class Product:
    """One dashboards product: its saved-objects file, its XSRF header and what to call it."""

    key: str
    title: str
    file: str
    xsrf_header: str
    compose_profile: str


PRODUCTS: dict[str, Product] = {
    "kibana": Product("kibana", "Kibana", "kibana.ndjson", "kbn-xsrf", "elasticsearch"),
    "opensearch-dashboards": Product(
        "opensearch-dashboards", "OpenSearch Dashboards", "opensearch-dashboards.ndjson", "osd-xsrf", "opensearch"
    ),
}


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What an import stored: each object's type and id."""

    product: str
    url: str
    alias: str
    objects: tuple[tuple[str, str], ...]

    @property
    def dashboard_id(self) -> str:
        return next(obj_id for kind, obj_id in self.objects if kind == "dashboard")


def _rename(value: Any, alias: str) -> Any:
    if isinstance(value, str):
        if value.startswith(_ID_PREFIX):
            value = f"hybrid-search-{alias}" + value[len(_ID_PREFIX) :]
        return value.replace(f"[{DEFAULT_ALIAS}]", f"[{alias}]")
    if isinstance(value, list):
        return [_rename(v, alias) for v in value]
    if isinstance(value, dict):
        return {k: _rename(v, alias) for k, v in value.items()}
    return value


def saved_objects(
    product: str, alias: str = DEFAULT_ALIAS, directory: Traversable = SAVED_OBJECTS_DIR
) -> list[dict[str, Any]]:
    """The product's saved objects, renamed for ``alias``."""
    if product not in PRODUCTS:
        raise ConfigError(f"unknown dashboards product {product!r}: use {' or '.join(PRODUCTS)}")
    check_index_name(alias)
    path = directory / PRODUCTS[product].file
    if not path.is_file():
        raise ConfigError(f"{path} is missing: reinstall hybrid-search (the saved objects ship with it)")
    objects = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    renamed = [_rename(obj, alias) for obj in objects]
    for obj in renamed:
        if obj["type"] == "index-pattern":  # titles name the indexes: corpus, corpus-queries, corpus-ingest
            title = obj["attributes"]["title"]
            obj["attributes"]["title"] = alias + title[len(DEFAULT_ALIAS) :]
    return renamed


def _headers(product: Product, settings: BackendSettings) -> dict[str, str]:
    import urllib3

    headers = {product.xsrf_header: "true"}
    api_key, basic = settings.credentials()
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif basic:
        headers.update(urllib3.make_headers(basic_auth=":".join(basic)))
    return headers


def install_saved_objects(
    url: str,
    product: str,
    alias: str = DEFAULT_ALIAS,
    *,
    settings: BackendSettings | None = None,
    space: str | None = None,
    attempts: int = 6,
    wait: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> InstallResult:
    """Import the saved objects for ``alias`` into the product at ``url``, overwriting earlier copies.

    Retries (up to ``attempts``) while the product says it is starting (502/503/504). A refused connection
    fails at once, unless ``wait`` seconds are given to wait for the product to come up (just after
    ``docker compose up``). Objects the product refuses are listed by type, id and reason.
    """
    import urllib3

    settings = settings or BackendSettings()
    check_url(url, "dashboards URL")
    if space is not None and not _SPACE_ID.match(space):
        raise ConfigError(
            f"Kibana space {space!r} is not a space id: lowercase letters, digits, '_' and '-' "
            "(the id in the space's URL, /s/ID/app/...)"
        )
    objects = saved_objects(product, alias)  # checks the product and the alias
    info = PRODUCTS[product]
    body = "".join(json.dumps(obj) + "\n" for obj in objects).encode("utf-8")
    base = url.rstrip("/") + (f"/s/{quote(space, safe='')}" if space else "")
    endpoint = f"{base}/api/saved_objects/_import?overwrite=true"
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED" if settings.verify_certs else "CERT_NONE",
        ca_certs=str(settings.ca_certs) if settings.ca_certs else None,
        timeout=urllib3.Timeout(connect=10.0, read=settings.request_timeout),
        retries=False,
    )
    headers = _headers(info, settings)
    fields = {"file": (f"hybrid-search-{alias}.ndjson", body, "application/ndjson")}
    attempt, deadline = 1, time.monotonic() + wait
    while True:
        try:
            response = pool.request("POST", endpoint, fields=fields, headers=headers)
            if response.status not in _RETRY_STATUS or attempt >= attempts:
                return _result(info, url, alias, objects, response.status, response.data)
        except urllib3.exceptions.HTTPError as exc:
            if time.monotonic() >= deadline:
                raise DashboardsError(
                    f"{info.title} at {url} did not answer ({type(exc).__name__}); check the URL and that it is "
                    f"up (docker compose --profile {info.compose_profile} up -d), or give --wait SECONDS while "
                    "it starts"
                ) from exc
        log.info("%s at %s is not ready (attempt %d of %d); retrying", info.title, url, attempt, attempts)
        pause = min(2.0 ** min(attempt, 5), 30.0)
        if wait:
            pause = max(0.0, min(pause, deadline - time.monotonic()))
        sleep(pause)
        attempt += 1


def _result(
    info: Product, url: str, alias: str, objects: list[dict[str, Any]], status: int, data: bytes
) -> InstallResult:
    text = data.decode("utf-8", "replace")
    if status in (401, 403):
        raise DashboardsError(
            f"{info.title} at {url} refused the credentials (HTTP {status}): set "
            "HYBRID_SEARCH_API_KEY, or --username and HYBRID_SEARCH_PASSWORD"
        )
    if status == 404:
        raise DashboardsError(
            f"{url} has no saved-objects import API (HTTP 404): is this {info.title}'s URL "
            "(and the space, if you gave one)?"
        )
    try:
        answer: Mapping[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        answer = {}
    if status >= 300 or not isinstance(answer, Mapping):
        raise DashboardsError(f"{info.title} at {url} answered HTTP {status}: {text[:300]}")
    errors = answer.get("errors") or []
    if not answer.get("success") or errors:
        listed = "; ".join(
            f"{e.get('type')} {e.get('id')}: {(e.get('error') or {}).get('type', e.get('error'))}" for e in errors[:5]
        )
        raise DashboardsError(
            f"{info.title} imported {answer.get('successCount', 0)} of {len(objects)} saved "
            f"objects; refused: {listed or text[:300]}"
        )
    if answer.get("successCount") != len(objects):
        raise DashboardsError(
            f"{info.title} reported {answer.get('successCount')} objects imported, "
            f"expected {len(objects)}: {text[:300]}"
        )
    return InstallResult(info.key, url, alias, tuple((o["type"], o["id"]) for o in objects))
