"""Settings: defaults < file < environment < overrides; credentials are never values."""

from __future__ import annotations

import pytest

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import SearchSettings, Secret, load_settings


def test_precedence_file_env_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "hs.toml"
    cfg.write_text('data_dir = "/from/file"\n[search]\nrrf_k = 20\ntop_k = 5\nbm25_depth = 30\n')
    monkeypatch.setenv("HYBRID_SEARCH_SEARCH__TOP_K", "7")
    monkeypatch.setenv("HYBRID_SEARCH_SEARCH__BM25_DEPTH", "40")
    s = load_settings(cfg, {"search": {"bm25_depth": 50, "rrf_k": None}})
    assert s.search.rrf_k == 20  # file (None override means "not given")
    assert s.search.top_k == 7  # env beats file
    assert s.search.bm25_depth == 50  # override beats env
    assert str(s.data_dir) == "/from/file"
    assert s.search.knn_depth == 200  # default


def test_yaml_file_and_config_env(tmp_path, monkeypatch):
    cfg = tmp_path / "hs.yaml"
    cfg.write_text("index:\n  analyzer: english\nbackend:\n  urls: http://a:9200, http://b:9200\n")
    monkeypatch.setenv("HYBRID_SEARCH_CONFIG", str(cfg))
    s = load_settings()
    assert s.index.analyzer == "english"
    assert s.backend.urls == ("http://a:9200", "http://b:9200")


def test_credentials_are_named_not_stored(tmp_path, monkeypatch):
    cfg = tmp_path / "hs.toml"
    cfg.write_text('[backend]\npassword = "MY_ES_PASSWORD"\nusername = "elastic"\n')
    monkeypatch.setenv("MY_ES_PASSWORD", "hunter2-secret")
    s = load_settings(cfg)
    assert s.backend.password == Secret("MY_ES_PASSWORD")
    assert s.backend.password.resolve() == "hunter2-secret"
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()
    monkeypatch.delenv("MY_ES_PASSWORD")
    assert s.backend.password.resolve() is None


def test_bad_values_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="search.rrf_k"):
        load_settings(overrides={"search": {"rrf_k": 0}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.ini"
    bad.write_text("x")
    with pytest.raises(ConfigError, match=".toml"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="rrf_kk: Extra inputs"):
        load_settings(overrides={"search": {"rrf_kk": 3}})


def test_settings_are_frozen():
    s = load_settings()
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        s.search.top_k = 3  # type: ignore[misc]


def test_cluster_urls_and_logs_from_the_environment(monkeypatch):
    monkeypatch.setenv("HYBRID_SEARCH_BACKEND__URLS", "http://a:9200, http://b:9200")
    monkeypatch.setenv("HYBRID_SEARCH_LOGS__QUERIES", "true")
    monkeypatch.setenv("HYBRID_SEARCH_LOGS__QUERY_TEXT", "false")
    s = load_settings()
    assert s.backend.urls == ("http://a:9200", "http://b:9200")
    assert s.logs.queries and not s.logs.query_text and s.logs.ingest


def test_credentials_resolve_when_a_connection_is_made(monkeypatch):
    from hybrid_search.config.settings import BackendSettings

    monkeypatch.delenv("HYBRID_SEARCH_API_KEY", raising=False)
    monkeypatch.delenv("HYBRID_SEARCH_PASSWORD", raising=False)
    assert BackendSettings().credentials() == (None, None)
    with pytest.raises(ConfigError, match="HYBRID_SEARCH_PASSWORD is not set"):
        BackendSettings(username="elastic").credentials()
    monkeypatch.setenv("HYBRID_SEARCH_PASSWORD", "pw")
    assert BackendSettings(username="elastic").credentials() == (None, ("elastic", "pw"))
    monkeypatch.setenv("HYBRID_SEARCH_API_KEY", "key")
    assert BackendSettings(username="elastic").credentials() == ("key", None)


def test_measured_defaults_and_weights_that_follow_the_fusion(monkeypatch):
    """The shipped first stage is l2 linear 0.2 / 0.8 over 200 each (README "Tune"); choosing RRF without
    weights gives plain equal-weight RRF, not a silently weighted one."""
    s = SearchSettings()
    assert (s.fusion, s.normalizer, s.bm25_weight, s.knn_weight, s.bm25_depth) == ("linear", "l2", 0.2, 0.8, 200)
    assert s.rerank_interpolation == 0.5
    assert (SearchSettings(fusion="rrf").bm25_weight, SearchSettings(fusion="rrf").knn_weight) == (0.5, 0.5)
    assert SearchSettings(fusion="rrf", knn_weight=0.9).knn_weight == 0.9
    monkeypatch.setenv("HYBRID_SEARCH_SEARCH__FUSION", "rrf")
    assert load_settings().search.bm25_weight == 0.5
