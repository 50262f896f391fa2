"""``ClusterConnection``: one cluster's client, first connection and error translation, shared by the
store, its bulk writer, its locks and its log sink. An engine subclass supplies the client, the library's
error types and helpers, and how it reads a server's version; construction only validates the settings.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self

from hybrid_search.backends.cluster.bodies import (
    ServerInfo,
)
from hybrid_search.config.errors import (
    BackendUnavailable,
    ConfigError,
    IndexNotFound,
)
from hybrid_search.config.settings import BackendSettings, IndexSettings

if TYPE_CHECKING:
    from hybrid_search.config.settings import Settings

__all__ = ["ClientLibrary", "ClusterConnection"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientLibrary:
    """What an engine's Python client gives every call: the errors of a dropped connection, the error of an
    answered request, and the ``helpers`` module (``streaming_bulk``, ``scan``)."""

    connection_errors: tuple[type[BaseException], ...]
    api_error: type[BaseException]
    helpers: Any


class ClusterConnection(ABC):
    """A cluster's client, connected on first use; every call goes through ``call``."""

    name = "cluster"
    distribution = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.backend, settings.index)

    def __init__(
        self,
        settings: BackendSettings,
        index_settings: IndexSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.urls:
            raise ConfigError(f"--backend {self.name} needs --url (or HYBRID_SEARCH_BACKEND__URLS)")
        for url in settings.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"cluster URL {url!r} must start with http:// or https://")
        self.settings = settings
        self.index_settings = index_settings or IndexSettings()
        self._sleep = sleep

    # --- connection -------------------------------------------------------------------------------
    def _auth(self) -> dict[str, Any]:
        api_key, basic = self.settings.credentials()
        return {"api_key": api_key} if api_key else {"basic_auth": basic} if basic else {}

    @abstractmethod
    def _make_client(self) -> Any:
        """The engine's client object (no I/O)."""

    @abstractmethod
    def _probe(self) -> ServerInfo:
        """Ask the server who it is."""

    @cached_property
    def client(self) -> Any:
        return self._make_client()

    @cached_property
    def server(self) -> ServerInfo:
        """Connect, read the version and plugins, and check this is the engine we expect."""
        info = self.call("connect", self._probe)
        if info.distribution != self.distribution:
            raise BackendUnavailable(
                f"{self.urls_text} is {info.distribution} {info.version_text}, not "
                f"{self.distribution}: use --backend {info.distribution}"
            )
        log.info("connected to %s %s at %s", info.distribution, info.version_text, self.urls_text)
        return info

    def connect(self) -> ServerInfo:
        """Connect now (once: it checks the engine and reads its version, which request bodies depend on)."""
        return self.server

    @property
    def urls_text(self) -> str:
        return ", ".join(self.settings.urls)

    @abstractmethod
    def _library(self) -> ClientLibrary:
        """The engine's client library, imported on first use."""

    @cached_property
    def library(self) -> ClientLibrary:
        return self._library()

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        return self.library.connection_errors

    @property
    def api_error(self) -> type[BaseException]:
        return self.library.api_error

    @property
    def helpers(self) -> Any:
        """The client library's ``helpers`` module: both ship ``streaming_bulk`` and ``scan`` alike."""
        return self.library.helpers

    @abstractmethod
    def status_of(self, exc: BaseException) -> int | None:
        """The HTTP status of an engine error, if it has one."""

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call, turning engine errors into the project's errors."""
        try:
            return fn(*args, **kwargs)
        except self.connection_errors as exc:
            raise BackendUnavailable(
                f"{self.name} at {self.urls_text} did not answer ({what}: {type(exc).__name__}); check the URL, "
                "that the cluster is up, and TLS settings (--url https://..., HYBRID_SEARCH_BACKEND__CA_CERTS)"
            ) from exc
        except self.api_error as exc:
            status = self.status_of(exc)
            if status in (401, 403) and "license" not in str(exc).lower():
                raise BackendUnavailable(
                    f"{self.name} at {self.urls_text} refused the credentials ({what}, HTTP {status}); set "
                    f"{self.settings.api_key.env_var}, or username and {self.settings.password.env_var}"
                ) from exc
            if status == 404 and "index_not_found" in str(exc):
                raise IndexNotFound(
                    f"index {kwargs.get('index', '?')!r} does not exist on {self.urls_text}: run "
                    "`hybrid-search ingest` first"
                ) from exc
            raise

    def streaming_bulk(self, actions: Iterable[dict[str, Any]]) -> Iterable[tuple[bool, dict[str, Any]]]:
        """``(ok, item)`` per action; failures come back as items (our retry loop decides), never raised."""
        return self.helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=self.settings.bulk_docs,
            max_chunk_bytes=self.settings.bulk_bytes,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=0,
        )

    def close(self) -> None:
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()
