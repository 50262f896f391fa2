"""Typed settings for hybrid-search, with every default in this one module.

Sources, later ones winning: the defaults below, a settings file (TOML or YAML, given by ``--config`` or
``HYBRID_SEARCH_CONFIG``), environment variables (``HYBRID_SEARCH_<SECTION>__<FIELD>``, e.g.
``HYBRID_SEARCH_SEARCH__RRF_K=20``), then explicit overrides such as CLI flags.

Credentials never live in these objects: a :class:`Secret` names the environment variable that holds the
value and reads it only when a connection is made, so settings can be printed, logged and serialised safely.
"""

from __future__ import annotations

import contextvars
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from hybrid_search.config.chunking import Chunking
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.names import check_user_index_name
from hybrid_search.config.text import Analyzer

__all__ = [
    "BackendSettings",
    "IndexSettings",
    "IngestSettings",
    "LogSettings",
    "ModelSettings",
    "SearchSettings",
    "Secret",
    "Settings",
    "check_url",
    "load_settings",
    "redact_url",
]

ENV_PREFIX = "HYBRID_SEARCH_"
CONFIG_ENV = "HYBRID_SEARCH_CONFIG"

DEFAULT_BI_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-12-v2"
DEFAULT_DATA_DIR = Path(".hybrid-search")
DEFAULT_INDEX = "corpus"


_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential held in an environment variable; only its name is ever stored or shown."""

    env_var: str

    def __post_init__(self) -> None:
        if not isinstance(self.env_var, str) or not _ENV_VAR_NAME.match(self.env_var):
            # never echo it: a value here is most likely the credential itself, put where its name belongs
            raise ConfigError(
                "a credential setting (backend.password / backend.api_key) must name the environment variable "
                "that holds it (e.g. ES_PASSWORD), not the credential itself; the value given is not shown"
            )

    def resolve(self) -> str | None:
        """The value, read now from the environment; ``None`` when the variable is unset or empty."""
        return os.environ.get(self.env_var) or None

    def __repr__(self) -> str:
        return f"Secret(env_var={self.env_var!r})"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Section):
    """Bi-encoder and cross-encoder choice and how they run."""

    bi_encoder: str = DEFAULT_BI_ENCODER
    cross_encoder: str = DEFAULT_CROSS_ENCODER
    # learned-sparse (SPLADE) encoder for ingest: None indexes no sparse vectors; "splade-tiny" is the offline
    # copy (the offline extra), or any SPLADE hub id / folder (naver/splade-cocondenser-ensembledistil)
    sparse_encoder: str | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: fp16 on CUDA; on a CPU the bi-encoder in bf16 where the CPU has AMX (~3x fp32 there), else fp32;
    # query vectors are fp32 under auto (a reduced precision rounds a query differently beside others)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_length: int | None = None  # None: the model's own max_seq_length
    batch_tokens: int | None = Field(default=None, ge=64)  # padded tokens per batch; None: 4096 CPU, 65536 CUDA
    max_batch_size: int = Field(default=256, ge=1)
    query_prompt: str | None = None  # None: what the model declares, or a known family's prompt
    document_prompt: str | None = None
    trust_remote_code: bool = False
    # bi-encoder: torch, or ONNX Runtime on the CPU (exported at first use and cached; "onnx" is int8 where the
    # CPU has int8 dot products, "onnx-fp32" never quantizes); auto (measured fastest, README speed): torch on a
    # GPU, with a dtype set or with AMX (bf16); onnx int8 on a CPU with int8 dot products (VNNI) and no AMX
    encode_runtime: Literal["auto", "torch", "onnx", "onnx-fp32"] = "auto"
    rerank_runtime: Literal["auto", "onnx", "torch"] = "auto"
    rerank_max_length: int = Field(default=512, ge=16)
    rerank_batch_size: int = Field(default=32, ge=1)


EXACT_BELOW = 20_000  # ``index.exact_below``'s default, also the embedded backend's when built without settings


class IndexSettings(_Section):
    """Index naming, text analysis and HNSW parameters."""

    name: str = DEFAULT_INDEX
    analyzer: Analyzer = "standard"
    hnsw_m: int = Field(default=16, ge=2)
    hnsw_ef_construction: int = Field(default=100, ge=8)
    hnsw_ef_search: int = Field(default=100, ge=8)
    # embedded: an index of fewer vectors is searched exactly (a flat scan, as fast as the graph's search up to
    # about this size on 2 cores) and builds no HNSW graph; the graph is built when it grows past (0: always)
    exact_below: int = Field(default=EXACT_BELOW, ge=0)
    # Elasticsearch: dense_vector index_options type (int8/bbq quantise the HNSW graph's vectors)
    es_vector_index: Literal["hnsw", "int8_hnsw", "bbq_hnsw"] = "hnsw"
    # OpenSearch: k-NN engine and the faiss scalar-quantisation encoder
    opensearch_engine: Literal["lucene", "faiss"] = "lucene"
    opensearch_fp16: bool = False  # faiss only: store vectors as fp16 (SQfp16 encoder)
    replicas: int = Field(default=1, ge=0)  # restored after a bulk load (0 while loading)
    refresh_interval: str = "1s"  # restored after a bulk load (-1 while loading)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        check_user_index_name(value)  # at load time: before a model loads, a cluster is asked or a file is written
        return value


class IngestSettings(_Section):
    """How documents are batched and how bad records are treated."""

    batch_size: int = Field(default=1024, ge=1)  # documents per encode + upsert step
    strict: bool = False  # first bad record is fatal
    checkpoint_seconds: float = Field(default=30.0, ge=0.0)  # embedded: how often derived indexes persist
    # A rebuild that would leave the alias with fewer than this fraction of the documents it serves now is
    # refused (the build is kept for ``--resume --allow-shrink``), so a wrong field or file cannot empty it.
    min_kept_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    allow_shrink: bool = False
    # refuse a text or metadata field that none of the first 1,000 records has (off for a field that only
    # appears later in the source)
    check_fields: bool = True
    # break a cluster writer lock whose holder is gone before taking it (embedded locks die with their process)
    force_unlock: bool = False
    # per-record limits: a record over one is a reject with its reason, never a failed ingest
    max_field_chars: int = Field(default=1_000_000, ge=1)  # any one field (title, text, metadata value)
    max_depth: int = Field(default=32, ge=1)  # nesting of JSON objects / lists in one record
    # passages of long documents (``ingest.chunking``): auto splits only texts longer than the model reads,
    # on sentences; none keeps one vector per document; or words|sentences|tokens:SIZE:OVERLAP
    chunking: str = "auto"

    @field_validator("chunking")
    @classmethod
    def _known_chunking(cls, value: str) -> str:
        try:
            return str(Chunking.parse(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


# the retrieval legs and the named presets over them (``search.request`` builds requests from these)
LEG_NAMES = ("bm25", "knn", "sparse")
MODE_PRESETS: dict[str, tuple[str, ...]] = {
    "bm25": ("bm25",),
    "knn": ("knn",),
    "sparse": ("sparse",),
    "hybrid": ("bm25", "knn"),
    "hybrid3": ("bm25", "knn", "sparse"),
}


def mode_legs(mode: str) -> tuple[str, ...]:
    """The legs a mode (without ``+rerank``) names: a preset's, or distinct known legs joined by ``+``
    (``bm25+sparse``); ``ConfigError`` otherwise."""
    base = mode.strip().lower().replace(" ", "")
    legs = MODE_PRESETS.get(base) or tuple(base.split("+"))
    if any(leg not in LEG_NAMES for leg in legs) or len(set(legs)) != len(legs):
        raise ConfigError(
            f"unknown mode {mode!r}: use {', '.join(MODE_PRESETS)} or distinct legs ({', '.join(LEG_NAMES)}) "
            "joined by + (e.g. bm25+sparse), each optionally with +rerank"
        )
    return legs


class SearchSettings(_Section):
    """Retrieval depths, fusion and rerank parameters."""

    # The defaults were chosen by measurement (`hybrid-search tune-defaults`, README "Tune"): over nine judged
    # corpora, an l2-normalised linear fusion weighted 0.8 towards kNN over the top 200 of each retriever beat
    # equal-weight RRF on eight, and was the choice of every leave-one-corpus-out fold; reranking interpolated
    # half-and-half with the first stage never fell far below the first stage, where the cross-encoder alone did.
    mode: str = "hybrid"  # bm25, knn, sparse, hybrid (bm25 + knn), hybrid3 (+ sparse), or legs: bm25+sparse
    # Hard bounds on one request, so no call can exhaust a serving process (10,000 is Elasticsearch's
    # index.max_result_window and its kNN num_candidates limit); a request above one is refused with the limit
    max_top_k: int = Field(default=10_000, ge=1)
    max_rerank_depth: int = Field(default=1_000, ge=1)  # cross-encoder pairs per query: ~10 s on a 2-core CPU
    max_query_chars: int = Field(default=10_000, ge=16)
    top_k: int = Field(default=10, ge=1, le=10_000)
    bm25_depth: int = Field(default=200, ge=1, le=10_000)
    knn_depth: int = Field(default=200, ge=1, le=10_000)
    # HNSW candidate pool per kNN query: at 1M documents 200 gave recall@10 0.94, 400 gave 0.97 for 0.3 ms more
    num_candidates: int = Field(default=400, ge=1, le=10_000)
    fusion: Literal["rrf", "linear"] = "linear"
    rrf_k: int = Field(default=60, ge=1)
    normalizer: Literal["minmax", "zscore", "l2"] = "l2"
    # weights of each retriever in the fusion; unset, they follow it: 0.2 / 0.8 for linear (measured), equal for
    # RRF (what was measured for it: a weighted RRF is a choice to make explicitly)
    bm25_weight: float = Field(default=0.2, ge=0.0)
    knn_weight: float = Field(default=0.8, ge=0.0)
    # the learned-sparse leg (modes sparse, hybrid3, or legs such as bm25+sparse): its depth and weight. Beside
    # bm25 0.2 / knn 0.8, sparse weights 0.1-1.0 over nine judged corpora (SPLADE-tiny, first 60 queries each)
    # gave a mean nDCG@10 of 0.604 at 0.1 falling to 0.589 at 1.0 (0.598 at the earlier, unmeasured 0.5)
    sparse_depth: int = Field(default=200, ge=1, le=10_000)
    sparse_weight: float = Field(default=0.1, ge=0.0)
    rerank: bool = False
    rerank_depth: int = Field(default=50, ge=1, le=10_000)
    # final = a * minmax(cross-encoder) + (1 - a) * minmax(first stage) over the reranked head; 1 = reranker alone
    rerank_interpolation: float = Field(default=0.5, ge=0.0, le=1.0)
    server_fusion: bool = True  # let an engine fuse when it can; client-side otherwise
    passages: int = Field(default=1, ge=1, le=32)  # an index of passages: best passages per hit
    # rerank on passages: the cross-encoder reads this many of each hit's best passages (the hit takes the max)
    rerank_passages: int = Field(default=1, ge=1, le=8)

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        mode_legs(value)
        return value.strip().lower().replace(" ", "")

    @model_validator(mode="before")
    @classmethod
    def _weights_follow_fusion(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("fusion") == "rrf":
            data = dict(data)
            for name in ("bm25_weight", "knn_weight", "sparse_weight"):
                if data.get(name) is None:
                    data[name] = 0.5
        return data

    # CPU threads one search may use (query encoding, cross-encoder, faiss): 1 serves concurrent searches best
    # and keeps latency flat beside other busy processes (oversubscribed OpenMP threads spin against them);
    # 0 leaves torch's and faiss's own defaults (all cores)
    threads: int = Field(default=1, ge=0)


class LogSettings(_Section):
    """What the application records in ``<index>-queries`` and ``<index>-ingest`` for Kibana / Dashboards."""

    queries: bool = False  # record every search in <index>-queries
    query_text: bool = True  # False keeps query text out of the log (privacy); everything else is kept
    ingest: bool = True  # write one summary document per ingest run to <index>-ingest
    queue_size: int = Field(default=10_000, ge=1)  # entries waiting for the writer; more are dropped, counted
    queue_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)  # and their approximate size, bounded too
    batch_size: int = Field(default=500, ge=1)  # entries per bulk write
    flush_seconds: float = Field(default=1.0, gt=0)  # longest an entry waits before it is written
    close_seconds: float = Field(default=10.0, ge=0)  # how long close() waits for the writer to drain


class BackendSettings(_Section):
    """Which backend to use and how to reach it. Credentials are named, never stored."""

    kind: Literal["embedded", "elasticsearch", "opensearch"] = "embedded"
    urls: Annotated[tuple[str, ...], NoDecode] = ()  # comma-separated in the environment, not JSON
    username: str | None = None
    password: Secret = Secret(ENV_PREFIX + "PASSWORD")
    api_key: Secret = Secret(ENV_PREFIX + "API_KEY")
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0)  # transport-level retries on connection errors
    bulk_docs: int = Field(default=500, ge=1)  # documents per bulk request
    bulk_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)  # bytes per bulk request
    bulk_attempts: int = Field(default=8, ge=1)  # tries of 429/5xx/dropped items before the ingest stops
    # concurrent bulk requests per upsert, each with its own retries; the documents are split between them
    bulk_workers: int = Field(default=2, ge=1, le=64)
    backoff_max: float = Field(default=30.0, gt=0)  # seconds, cap of the jittered exponential backoff

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(u.strip() for u in value.split(",") if u.strip())
        if isinstance(value, (tuple, list)):
            return tuple(check_url(u, "cluster URL") if isinstance(u, str) else u for u in value)
        return value

    def credentials(self) -> tuple[str | None, tuple[str, str] | None]:
        """(API key, (username, password)), read from the environment now; an API key wins over a user."""
        api_key = self.api_key.resolve()
        if api_key or not self.username:
            return api_key, None
        password = self.password.resolve()
        if not password:
            # a conventional variable name is shown; anything else may be a password put in its place
            named = self.password.env_var if self.password.env_var.isupper() else "the variable it names"
            raise ConfigError(
                f"username {self.username!r} given but {named} is not set: export the password in that variable "
                "(backend.password names it)"
            )
        return None, (self.username, password)

    @field_validator("password", "api_key", mode="before")
    @classmethod
    def _secret_from_name(cls, value: Any) -> Any:
        # A settings file names the variable ("password = 'ES_PASSWORD'"); the value never appears in it.
        return Secret(value) if isinstance(value, str) else value


_config_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_path", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """Reads the TOML or YAML settings file chosen by :func:`load_settings`."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_path.get()
        return _read_settings_file(path) if path is not None else {}


class Settings(BaseSettings):
    """All settings of hybrid-search. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    data_dir: Path = DEFAULT_DATA_DIR
    models: ModelSettings = ModelSettings()
    index: IndexSettings = IndexSettings()
    ingest: IngestSettings = IngestSettings()
    search: SearchSettings = SearchSettings()
    backend: BackendSettings = BackendSettings()
    logs: LogSettings = LogSettings()
    # how a tuned profile was chosen (written by `hybrid-search tune`; informational, changes nothing)
    profile: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))


def redact_url(url: str) -> str:
    """``url`` with anything that may be a user or password replaced by ``***``, for messages and logs.

    Everything between ``scheme://`` and the *last* ``@`` is treated as credentials, whatever it holds: a
    password may contain ``/``, ``?``, ``#`` or ``:``, which a URL parser would read as path, query or port."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    if "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def check_url(url: str, what: str) -> str:
    """An http(s) URL without credentials in it; ``ConfigError`` (never showing the password) otherwise."""
    shown = redact_url(url)
    if "@" in url:
        raise ConfigError(
            f"{what} {shown!r} carries credentials: remove them from the URL and give the user with "
            f"--username (backend.username) and the password in {ENV_PREFIX}PASSWORD (or an API key in "
            f"{ENV_PREFIX}API_KEY), so they never appear in settings, logs or messages"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{what} {shown!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} {shown!r} must start with http:// or https:// (http(s)://HOST:PORT)")
    return url


def _read_settings_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"settings file {path} does not exist: fix --config or {CONFIG_ENV}")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"settings file {path}: use a .toml, .yaml or .yml file")
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if suffix == ".toml" else _load_yaml(text, path)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"settings file {path} is not valid: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"settings file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"settings file {path} must hold a mapping of sections (e.g. [search] / search:), "
            f"not a {type(data).__name__}"
        )
    bad = _non_string_keys(data)
    if bad:
        raise ConfigError(f"settings file {path}: every key must be a name, found {bad[0]!r} (a stray ':' or '?')")
    return data


_MAX_YAML_NODES = 100_000  # values in the file once every alias (*name) is expanded: settings need a few hundred


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` that first measures the document with its aliases expanded and refuses one past
    ``_MAX_YAML_NODES``, so a small file of nested aliases (a "billion laughs") cannot expand into gigabytes
    or hang every command that reads the settings."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        sizes: dict[int, int] = {}

        def expanded(node: Any) -> int:
            key = id(node)
            if key not in sizes:
                sizes[key] = 0  # a node that contains itself counts once
                if isinstance(node, yaml.SequenceNode):
                    total = 1 + sum(expanded(child) for child in node.value)
                elif isinstance(node, yaml.MappingNode):
                    total = 1 + sum(expanded(k) + expanded(v) for k, v in node.value)
                else:
                    total = 1
                sizes[key] = min(total, _MAX_YAML_NODES + 1)
            return sizes[key]

        if expanded(root) > _MAX_YAML_NODES:
            raise ConfigError(
                f"settings file {path} expands to more than {_MAX_YAML_NODES:,} values through its YAML aliases "
                "(*name): write the values out instead"
            )
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _non_string_keys(data: Any) -> list[Any]:
    """Keys anywhere in nested mappings that are not strings (YAML allows ``? x`` and ``1: y``)."""
    if not isinstance(data, dict):
        return []
    return [k for k in data if not isinstance(k, str)] + [b for v in data.values() for b in _non_string_keys(v)]


def _check_secret_variables() -> None:
    """``HYBRID_SEARCH_BACKEND__PASSWORD`` would set the *name* of the password's variable to the password: say
    what to export instead, without showing the value."""
    for field, default in (("PASSWORD", "PASSWORD"), ("API_KEY", "API_KEY")):
        name = f"{ENV_PREFIX}BACKEND__{field}"
        value = os.environ.get(name)
        if value and not (_ENV_VAR_NAME.match(value) and value.isupper()):
            raise ConfigError(
                f"{name} is set, but it names the variable that holds the credential: export the credential as "
                f"{ENV_PREFIX}{default} instead (and unset {name}); its value is not shown"
            )


def load_settings(config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from defaults < file < environment < ``overrides`` (nested dicts, e.g. CLI flags).

    ``None`` values in ``overrides`` mean "not given" and are ignored, so CLI flags can be passed as they are.
    """
    _check_secret_variables()
    path = config_file if config_file is not None else os.environ.get(CONFIG_ENV)
    token = _config_path.set(Path(path) if path else None)
    try:
        return Settings(**_drop_none(dict(overrides or {})))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        cause = first.get("ctx", {}).get("error")
        msg = str(cause) if isinstance(cause, ConfigError) else first["msg"]
        if isinstance(cause, ConfigError) and where.startswith("backend."):
            raise ConfigError(f"invalid setting {where}: {msg}") from None  # never chain: the input may be a secret
        raise ConfigError(
            f"invalid setting {where}: {msg} (check flags, {CONFIG_ENV} and {ENV_PREFIX}* variables)"
        ) from exc
    finally:
        _config_path.reset(token)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _drop_none(dict(value))
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out
