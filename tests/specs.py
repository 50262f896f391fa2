"""Strict validation of request bodies against the official Elasticsearch / OpenSearch OpenAPI specifications.

As published, the schemas let unknown keys through and use ``oneOf`` where alternatives overlap. This loader
rewrites a copy of the whole document before validating with ``jsonschema`` (draft 2020-12):

1. every object schema refuses unknown keys: a plain one with ``additionalProperties: false`` (cheap), one
   built from ``allOf`` pieces with ``unevaluatedProperties: false`` on the schema holding the ``allOf``
   (never inside its branches, and never on a base that other schemas extend), so inheritance still works;
2. ``oneOf`` becomes ``anyOf`` (alternatives such as "a query or a list of queries" overlap);
3. a ``discriminator`` with a mapping becomes ``if``/``then`` on the discriminating property, so an error
   points at the field that is wrong rather than at every alternative.

Bodies are built in the long forms the specifications describe (``{"term": {"f": {"value": v}}}``), so the
shorthand forms the specifications lack need no special case. One form has no long twin: a field sort
(``{"@timestamp": {"order": "desc"}}``). The Elasticsearch TypeScript spec declares it as ``SortOptions``'
field-keyed entries, which its OpenAPI output drops, so the loader restores them (``FIELD_SORTS``).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = "urn:spec"


_KEYED = {"properties", "additionalProperties", "patternProperties"}
# Components whose bare ``{"type": "object"}`` branch stands for a map keyed by field name (the generator
# lost its value type); everywhere else a bare branch adds nothing and unknown keys stay refused.
FIELD_MAPS = {"_types.query_dsl:TermsQuery", "_types.query_dsl.TermsQuery"}


# ``SortOptions`` keyed by a field name: what the Elasticsearch OpenAPI output lost (OpenSearch has it).
FIELD_SORTS = {
    "_types:SortOptions": {
        "type": "object",
        "properties": {
            "order": {"$ref": "#/components/schemas/_types:SortOrder"},
            "missing": {},
            "mode": {"$ref": "#/components/schemas/_types:SortMode"},
            "unmapped_type": {"type": "string"},
        },
        "additionalProperties": False,
    }
}


def _one_of_keys(node: dict[str, Any]) -> dict[str, Any]:
    """``minProperties``/``maxProperties`` 1 on an allOf branch means "exactly one of these keys"."""
    if node.get("maxProperties") == 1 and node.get("minProperties", 1) == 1 and node.get("properties"):
        keys = list(node["properties"])
        node = {k: v for k, v in node.items() if k not in ("minProperties", "maxProperties")}
        node["anyOf"] = [{"required": [k]} for k in keys]
        node["not"] = {"anyOf": [{"required": [a, b]} for i, a in enumerate(keys) for b in keys[i + 1 :]]}
    return node


def _close(node: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown keys: cheaply (additionalProperties) for a plain object, through annotations
    (unevaluatedProperties) where allOf/anyOf pieces contribute properties."""
    if _KEYED & set(node) - {"properties"} or "unevaluatedProperties" in node:
        return node
    composed = any(k in node for k in ("allOf", "anyOf", "$ref", "if"))
    if composed:
        return {**node, "unevaluatedProperties": False}
    if "properties" in node:
        return {**node, "additionalProperties": False}
    return node


def _rewrite(node: Any, *, branch: bool = False) -> Any:
    """Rewrite one schema (see the module docstring). ``branch``: an allOf branch, left open for its holder."""
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "allOf" and isinstance(value, list):
            out[key] = [_rewrite(v, branch=True) for v in value]
        elif key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: _rewrite(v) for k, v in value.items()}
        elif key in ("oneOf", "anyOf"):
            out["anyOf"] = [_rewrite(v, branch=True) for v in value]
        elif key == "discriminator":
            continue
        else:
            out[key] = _rewrite(value)
    disc = node.get("discriminator")
    if isinstance(disc, dict) and disc.get("mapping"):
        prop = disc["propertyName"]
        out.pop("anyOf", None)
        out["allOf"] = out.get("allOf", []) + [
            {"if": {"properties": {prop: {"const": name}}, "required": [prop]}, "then": {"$ref": ref}}
            for name, ref in disc["mapping"].items()
        ]
        out.setdefault("properties", {})[prop] = {"enum": sorted(disc["mapping"])}
        if disc.get("x-default"):  # the discriminator may be left out: then the default alternative applies
            out["allOf"].append({"if": {"not": {"required": [prop]}}, "then": {"$ref": disc["x-default"]}})
        else:
            out.setdefault("required", [prop])
    if branch:
        return _one_of_keys(out)
    if out.get("type") == "object" and not _KEYED & set(out) and "allOf" not in out and "anyOf" not in out:
        out["additionalProperties"] = True  # free-form (e.g. "_meta" values)
        return out
    if "allOf" in out and not (
        "properties" in out or any(isinstance(b, dict) and ("properties" in b or "$ref" in b) for b in out["allOf"])
    ):
        return out
    return _close(out)


def _inheritance_bases(components: dict[str, Any], prefix: str) -> set[str]:
    """Components that others extend through ``allOf``: they must stay open so subclasses can add keys."""
    bases: set[str] = set()
    for schema in components.values():
        for branch in schema.get("allOf", []) if isinstance(schema, dict) else []:
            ref = branch.get("$ref", "") if isinstance(branch, dict) else ""
            if ref.startswith(prefix):
                bases.add(ref[len(prefix) :])
    return bases


def _load(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    import yaml

    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _discriminant(schemas: dict[str, Any], ref: str, prop: str) -> tuple[list[str], bool]:
    """The values ``prop`` may take in the component ``ref`` points at, and whether it is required there."""
    node = schemas.get(ref.rsplit("/", 1)[-1], {})
    for piece in [node, *node.get("allOf", [])]:
        spec = (piece.get("properties") or {}).get(prop) if isinstance(piece, dict) else None
        if isinstance(spec, dict) and ("enum" in spec or "const" in spec):
            return list(spec.get("enum", [spec.get("const")])), prop in piece.get("required", [])
    return [], False


def _derive_discriminator_mappings(schemas: dict[str, Any]) -> None:
    """A ``discriminator`` without a mapping (Elasticsearch's ``Property``: ~50 field types) gets one read
    from each alternative's enum, so a body is checked against its one type instead of all of them (nested
    mappings otherwise cost 50 to the power of their depth). An alternative whose discriminator may be left
    out (``object``) becomes the default for bodies without it."""
    for schema in schemas.values():
        disc = schema.get("discriminator") if isinstance(schema, dict) else None
        if not isinstance(disc, dict) or disc.get("mapping"):
            continue
        prop, mapping, default = disc["propertyName"], {}, None
        for alt in schema.get("oneOf", []):
            values, required = _discriminant(schemas, alt.get("$ref", ""), prop)
            if not values:
                break  # an alternative without a declared value: keep the plain anyOf
            mapping.update({v: alt["$ref"] for v in values})
            if not required:
                default = alt["$ref"]
        else:
            disc["mapping"] = mapping
            if default:
                disc["x-default"] = default


def _rewrite_document(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    components = doc.get("components", {})
    schemas = components.get("schemas", {})
    _derive_discriminator_mappings(schemas)
    bases = _inheritance_bases(schemas, "#/components/schemas/")
    for name, schema in list(schemas.items()):
        if name in FIELD_SORTS:
            schema["additionalProperties"] = FIELD_SORTS[name]
        if name in FIELD_MAPS:
            for b in schema.get("allOf", []):
                if b.get("type") == "object" and not _KEYED & set(b):
                    b["additionalProperties"] = True
        schemas[name] = _rewrite(schema, branch=name in bases)
    for name, body in list(components.get("requestBodies", {}).items()):
        components["requestBodies"][name] = _rewrite(body)
    return doc


def _relocate(node: Any) -> Any:
    """Point local ``#/...`` references at the registered root document."""
    if isinstance(node, list):
        return [_relocate(v) for v in node]
    if isinstance(node, dict):
        return {
            k: (ROOT + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _relocate(v))
            for k, v in node.items()
        }
    return node


class SpecValidator:
    """Validate request bodies of one specification file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc = _relocate(_rewrite_document(_load(path)))
        self.registry = Registry().with_resource(ROOT, Resource(contents=self.doc, specification=DRAFT202012))

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            pointer = node["$ref"][len(ROOT) + 1 :]
            node = self.doc
            for part in pointer.strip("/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def request_schema(self, method: str, path: str) -> dict[str, Any]:
        """The (strict) JSON schema of the request body of ``method path``."""
        operation = self.doc["paths"][path][method.lower()]
        body = self._resolve(operation["requestBody"])
        content = body["content"]
        media = next(m for m in ("application/json", "application/x-ndjson") if m in content)
        schema = content[media]["schema"]
        return {"allOf": [schema], "unevaluatedProperties": False} if "$ref" in schema else schema

    def schema(self, component: str) -> dict[str, Any]:
        return {"allOf": [{"$ref": f"{ROOT}#/components/schemas/{component}"}], "unevaluatedProperties": False}

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
            for e in validator.iter_errors(instance)
        ]

    def check_request(self, method: str, path: str, body: Any) -> list[str]:
        return self.errors(self.request_schema(method, path), body)


@cache
def validator(path: str) -> SpecValidator:
    return SpecValidator(Path(path))


def log_request_cases(mapping: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    """(method, path, body, valid) for every request the log sink sends about one log index, each broken
    twin marked invalid; both engines' spec tests run them."""
    from hybrid_search.backends.cluster import latest_body, log_index_body

    bad_index = log_index_body(mapping)
    bad_index["mappings"]["dynamic"] = "strictly"
    bad_latest = latest_body()
    bad_latest["sort"] = [{"@timestamp": {"order": "newest"}}]
    return [
        ("put", "/{index}", log_index_body(mapping), True),
        ("put", "/{index}/_mapping", {"properties": mapping["properties"]}, True),
        ("post", "/{index}/_search", latest_body(), True),
        ("put", "/{index}", bad_index, False),
        ("post", "/{index}/_search", bad_latest, False),
    ]


def incremental_write_requests(filters):
    """(method, path, body) of every request an incremental write builds (``ingest.incremental``), and one
    misspelt body each spec must refuse: the same list for the Elasticsearch and OpenSearch spec tests."""
    from hybrid_search.backends.cluster.bodies import ids_body, matching_ids_body, write_gen_body

    meta = {"hybrid_search": {"dims": 3}, "hybrid_search_writes": {"generation": 2}}
    valid = [
        ("post", "/{index}/_search", matching_ids_body(filters)),
        ("post", "/{index}/_mget", ids_body(["a", "b"])),
        ("put", "/{index}/_mapping", write_gen_body(meta)),
    ]
    return valid, ("post", "/{index}/_mget", {"idss": ["a"]})
