"""Saved objects and ``dashboards install``.

File checks: the NDJSON files are what ``app/saved_objects/generate.py`` writes from the code's mappings,
every field an object names exists in the mapping the code creates for its index, every reference
resolves, and renaming for another alias leaves nothing pointing at ``corpus``.

The import call: no Kibana or OpenSearch Dashboards can run on this machine (no Docker daemon, no
binaries on a reachable registry), so ``install`` is exercised against a small HTTP stand-in of the
documented saved-objects import API (multipart ``file``, the XSRF header, ``overwrite=true``, the
``success``/``successCount``/``errors`` answer) that also produces the faults a real product can answer
with. The same calls against real Kibana and OpenSearch Dashboards run in the testcontainers layer at the
end, which skips where no Docker daemon answers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import threading
import time
import urllib.request
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from servers import docker_available, free_port

from hybrid_search.app.dashboards import PRODUCTS, SAVED_OBJECTS_DIR, install_saved_objects, saved_objects
from hybrid_search.backends.logsinks import mapping_fields
from hybrid_search.config.errors import ConfigError, DashboardsError

ENGINE = {"kibana": "elasticsearch", "opensearch-dashboards": "opensearch"}


def _generator():
    spec = importlib.util.spec_from_file_location("generate_saved_objects", SAVED_OBJECTS_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- file checks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_files_are_what_the_generator_writes(product):
    gen = _generator()
    assert (SAVED_OBJECTS_DIR / PRODUCTS[product].file).read_text(encoding="utf-8") == gen.render(product), (
        "saved objects are stale: run python app/saved_objects/generate.py and commit the result"
    )


def _kuery_fields(query: str) -> set[str]:
    return set(re.findall(r"([A-Za-z_@][\w.@]*)\s*:", query))


def _referenced_fields(obj: dict) -> set[str]:
    """Every field name a saved object uses, read from its own attributes (independently of the generator)."""
    a = obj["attributes"]
    fields: set[str] = set()
    if obj["type"] == "index-pattern":
        fields |= {a["timeFieldName"]} if a.get("timeFieldName") else set()
        fields |= {f["value"] for f in json.loads(a["sourceFilters"])}
        fields |= {f["name"] for f in json.loads(a["fields"]) if not f["name"].startswith("_")}
    if obj["type"] == "visualization":
        state = json.loads(a["visState"])
        fields |= {agg["params"]["field"] for agg in state["aggs"] if "field" in agg["params"]}
    if obj["type"] == "search":
        fields |= set(a["columns"]) | {s[0] for s in a["sort"]}
    if "kibanaSavedObjectMeta" in a:
        source = json.loads(a["kibanaSavedObjectMeta"]["searchSourceJSON"])
        fields |= _kuery_fields(source["query"]["query"])
    return fields


@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_every_referenced_field_exists_in_the_code_mappings(product):
    from hybrid_search.app.logs import INGEST_LOG_MAPPING, QUERY_LOG_MAPPING
    from hybrid_search.backends.base import IndexSpec
    from hybrid_search.backends.elasticsearch import es_index_body
    from hybrid_search.backends.opensearch import os_index_body

    corpus = (es_index_body if ENGINE[product] == "elasticsearch" else os_index_body)(IndexSpec(dims=384))
    by_title = {
        "corpus": mapping_fields(corpus["mappings"]),
        "corpus-queries": mapping_fields(QUERY_LOG_MAPPING),
        "corpus-ingest": mapping_fields(INGEST_LOG_MAPPING),
    }
    objects = saved_objects(product)
    patterns = {o["id"]: o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    assert sorted(patterns.values()) == sorted(by_title)
    checked = 0
    for obj in objects:
        refs = [r["id"] for r in obj["references"] if r["type"] == "index-pattern"]
        title = patterns[obj["id"]] if obj["type"] == "index-pattern" else (patterns[refs[0]] if refs else None)
        for name in _referenced_fields(obj):
            assert name in by_title[title], f"{obj['type']} {obj['id']} uses {name!r}, not in the {title} mapping"
            checked += 1
    assert checked > 40
    assert (
        "vector"
        in json.loads(next(o for o in objects if o["id"] == "hybrid-search-corpus")["attributes"]["sourceFilters"])[0][
            "value"
        ]
    )  # hidden in Discover


@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_references_resolve_and_the_dashboard_has_every_panel(product):
    objects = saved_objects(product)
    ids = [(o["type"], o["id"]) for o in objects]
    assert len(ids) == len(set(ids))
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']} refers to a missing {ref}"
    (dash,) = [o for o in objects if o["type"] == "dashboard"]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    assert {p["panelRefName"] for p in panels} == {r["name"] for r in dash["references"]}
    titles = {o["attributes"]["title"] for o in objects if o["type"] in ("visualization", "search")}
    for wanted in (
        "Searches over time",
        "Latency p50 / p95",
        "Zero-result rate",
        "Top queries",
        "Reranker rank changes",
        "Ingest runs",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted
    envelope = "typeMigrationVersion" if product == "kibana" else "migrationVersion"
    assert all(envelope in o for o in objects)


def test_renaming_for_another_alias():
    objects = saved_objects("kibana", "nq")
    text = json.dumps(objects)
    assert "corpus" not in text
    patterns = sorted(o["attributes"]["title"] for o in objects if o["type"] == "index-pattern")
    assert patterns == ["nq", "nq-ingest", "nq-queries"]
    assert all(o["id"].startswith("hybrid-search-nq") for o in objects)
    with pytest.raises(ConfigError, match="not valid"):
        saved_objects("kibana", "Bad Name")
    with pytest.raises(ConfigError, match="unknown dashboards product"):
        saved_objects("grafana")


# --- the import call against a stand-in of the API ------------------------------------------------
class ImportApi:
    """A stand-in of the saved-objects import API: stores objects by (type, id), overwriting when asked."""

    def __init__(self, product: str) -> None:
        self.header = PRODUCTS[product].xsrf_header
        self.stored: dict[tuple[str, str], dict] = {}
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict | None]] = []  # canned answers first (faults), then real handling

    def handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict]:
        if self.script:
            status, body = self.script.pop(0)
            return status, body or {}
        if handler.headers.get(self.header) != "true":
            return 400, {"message": f"Request must contain a {self.header} header."}
        raw = handler.rfile.read(int(handler.headers["Content-Length"]))
        message = BytesParser(policy=default).parsebytes(
            f"Content-Type: {handler.headers['Content-Type']}\r\n\r\n".encode() + raw
        )
        (part,) = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
        lines = part.get_payload(decode=True).decode("utf-8").splitlines()
        objects = [json.loads(line) for line in lines if line.strip()]
        overwrite = "overwrite=true" in handler.path
        self.requests.append({"path": handler.path, "count": len(objects), "filename": part.get_filename()})
        errors = []
        for obj in objects:
            key = (obj["type"], obj["id"])
            if key in self.stored and not overwrite:
                errors.append({"id": obj["id"], "type": obj["type"], "error": {"type": "conflict"}})
            else:
                self.stored[key] = obj
        return 200, {"success": not errors, "successCount": len(objects) - len(errors), "errors": errors}


@contextlib.contextmanager
def serve(api: ImportApi):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if not self.path.startswith(("/api/saved_objects/_import", "/s/")):
                status, body = 404, {"message": "Not Found"}
            else:
                status, body = api.handle(self)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_install_imports_everything_and_again_idempotently(product):
    api = ImportApi(product)
    with serve(api) as url:
        first = install_saved_objects(url, product, "nq")
        stored_once = dict(api.stored)
        second = install_saved_objects(url, product, "nq")
    assert first == second and len(first.objects) == len(saved_objects(product))
    assert api.stored == stored_once and len(api.stored) == len(first.objects)  # overwritten, not duplicated
    assert all("overwrite=true" in r["path"] for r in api.requests) and len(api.requests) == 2
    assert api.requests[0]["filename"].endswith(".ndjson")
    assert first.dashboard_id == "hybrid-search-nq-dashboard"


def test_install_waits_for_a_starting_product_and_names_refused_objects():
    api = ImportApi("kibana")
    naps: list[float] = []
    with serve(api) as url:
        api.script = [(503, {"message": "Kibana server is not ready yet"})] * 2
        result = install_saved_objects(url, "kibana", sleep=naps.append)
        assert len(naps) == 2 and len(result.objects) == len(api.stored)
        api.script = [
            (
                200,
                {
                    "success": False,
                    "successCount": 13,
                    "errors": [
                        {
                            "id": "hybrid-search-corpus-latency",
                            "type": "visualization",
                            "error": {"type": "missing_references"},
                        }
                    ],
                },
            )
        ]
        with pytest.raises(
            DashboardsError, match="refused: visualization hybrid-search-corpus-latency: missing_references"
        ):
            install_saved_objects(url, "kibana")
        api.script = [(401, {"message": "Unauthorized"})]
        with pytest.raises(DashboardsError, match="refused the credentials"):
            install_saved_objects(url, "kibana")
        with pytest.raises(DashboardsError, match="no saved-objects import API"):
            install_saved_objects(url + "/wrong", "kibana")
        api.script = [(200, {"success": True, "successCount": 3, "errors": []})]
        with pytest.raises(DashboardsError, match="expected"):
            install_saved_objects(url, "kibana")


def test_install_against_nothing_says_what_to_check_at_once():
    naps: list[float] = []
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DashboardsError, match=r"did not answer .*docker compose --profile opensearch up"):
        install_saved_objects(url, "opensearch-dashboards", sleep=naps.append)
    assert naps == []  # a refused connection is not retried unless asked to wait
    with pytest.raises(DashboardsError, match="--wait"):
        install_saved_objects(url, "opensearch-dashboards", wait=0.5, sleep=naps.append)
    assert naps  # with --wait it kept trying until the deadline
    with pytest.raises(ConfigError, match="http"):
        install_saved_objects("localhost:5601", "kibana")


def test_cli_install_inspect_and_query_log(tmp_path):
    from conftest import SAMPLE
    from test_cli import run

    data = str(tmp_path / "data")
    assert run("ingest", str(SAMPLE), "--index", "demo", "--data-dir", data, "--quiet").returncode == 0
    out = run(
        "search", "green tea", "--index", "demo", "--data-dir", data, "--mode", "bm25", "--log-queries", "--quiet"
    )
    assert out.returncode == 0 and "1 written, 0 dropped, 0 failed of 1" in out.stderr
    out = run("inspect", "--index", "demo", "--data-dir", data, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["stats"]["alias"] == "demo" and report["stats"]["count"] == 40
    assert report["stats"]["spec"]["dims"] == 384 and report["stats"]["vector"]["m"] == 16
    assert report["last_ingest"]["stored"] == 40 and report["queries_logged"] == 1
    assert report["last_query"]["mode"] == "bm25" and report["last_query"]["query"] == "green tea"
    api = ImportApi("opensearch-dashboards")
    with serve(api) as url:
        out = run("dashboards", "install", "--dashboards-url", url, "--index", "demo")
    assert out.returncode == 0, out.stderr
    assert "/app/dashboards#/view/hybrid-search-demo-dashboard" in out.stdout
    assert ("index-pattern", "hybrid-search-demo-queries") in api.stored


# --- real products (testcontainers) ---------------------------------------------------------------
STACKS = {
    "kibana": (
        "docker.elastic.co/elasticsearch/elasticsearch:9.1.5",
        "docker.elastic.co/kibana/kibana:9.1.5",
        {"discovery.type": "single-node", "xpack.security.enabled": "false"},
        {"ELASTICSEARCH_HOSTS": "http://engine:9200"},
    ),
    "opensearch-dashboards": (
        "opensearchproject/opensearch:3.2.0",
        "opensearchproject/opensearch-dashboards:3.2.0",
        {"discovery.type": "single-node", "DISABLE_SECURITY_PLUGIN": "true", "DISABLE_INSTALL_DEMO_CONFIG": "true"},
        {"OPENSEARCH_HOSTS": '["http://engine:9200"]', "DISABLE_SECURITY_DASHBOARDS_PLUGIN": "true"},
    ),
}


def _wait_ready(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/api/status", timeout=5) as resp:
                if resp.status == 200:
                    return
        time.sleep(3)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f}s")


@pytest.fixture(scope="module", params=sorted(STACKS))
def real_product(request):
    reason = docker_available()
    if reason:
        pytest.skip(reason)
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    engine_image, ui_image, engine_env, ui_env = STACKS[request.param]
    with Network() as network:
        engine = DockerContainer(engine_image).with_network(network).with_network_aliases("engine")
        ui = DockerContainer(ui_image).with_network(network).with_exposed_ports(5601)
        for k, v in engine_env.items():
            engine.with_env(k, v)
        for k, v in ui_env.items():
            ui.with_env(k, v)
        with engine, ui:
            url = f"http://{ui.get_container_host_ip()}:{ui.get_exposed_port(5601)}"
            _wait_ready(url)
            yield request.param, url


@pytest.mark.docker
@pytest.mark.integration
def test_install_into_the_real_product(real_product):
    product, url = real_product
    first = install_saved_objects(url, product, "nq")
    again = install_saved_objects(url, product, "nq")  # idempotent: overwrite
    assert first == again
    header = {PRODUCTS[product].xsrf_header: "true"}
    for kind, obj_id in first.objects:
        req = urllib.request.Request(f"{url}/api/saved_objects/{kind}/{obj_id}", headers=header)
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
        assert body["id"] == obj_id and not body.get("error")
    found = f"{url}/api/saved_objects/_find?type=index-pattern&search_fields=title&search=nq*&per_page=100"
    with urllib.request.urlopen(urllib.request.Request(found, headers=header), timeout=30) as resp:
        titles = {o["attributes"]["title"] for o in json.loads(resp.read())["saved_objects"]}
    assert {"nq", "nq-queries", "nq-ingest"} <= titles
