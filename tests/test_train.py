"""``train`` and ``reindex``: few-step training on the real offline model changes the weights, lowers the loss on
a fixed batch and saves a folder both loaders load; bad pairs files are one clear error; an interrupted run
leaves the previous model untouched; hard-negative mining never returns a positive; reindex keeps searches
answering during the swap and a model that does not match the index is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE

from hybrid_search import HybridSearch
from hybrid_search.app import train
from hybrid_search.config.errors import ConfigError

st = pytest.importorskip("sentence_transformers", reason="training needs the train extra (in dev)")

# real Quora-style pairs (paraphrases and not), small enough for a few CPU steps
PAIRS = [
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?", 1),
    ("How can I lose weight fast?", "What are quick ways to lose weight?", 1),
    ("What is the capital of France?", "Which city is the capital of France?", 1),
    ("How do batteries store energy?", "How does a battery hold electric charge?", 1),
    ("Why is the sky blue?", "What makes the sky look blue?", 1),
    ("How do I make pancakes?", "What is a good recipe for pancakes?", 1),
    ("What is machine learning?", "Can you explain machine learning simply?", 1),
    ("How do vaccines work?", "What does a vaccine do in the body?", 1),
    ("How do I learn Python quickly?", "Why is the sky blue?", 0),
    ("How can I lose weight fast?", "What is the capital of France?", 0),
    ("How do batteries store energy?", "How do I make pancakes?", 0),
    ("What is machine learning?", "How do vaccines work?", 0),
]


def _write_csv(path: Path, rows, header=("question1", "question2", "is_duplicate")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory) -> Path:
    return _write_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv", PAIRS)


@pytest.fixture(scope="module")
def base_folder(encoder) -> Path:
    return encoder.folder


@pytest.fixture(scope="module")
def trained(pairs_csv, tmp_path_factory) -> tuple[Path, train.TrainSummary]:
    out = tmp_path_factory.mktemp("models") / "mnrl"
    options = train.TrainOptions(batch_size=8, lr=1e-4, max_steps=6, seed=0, device="cpu")
    summary = train.train_bi_encoder(
        train.read_pairs(pairs_csv), out, base="sentence-transformers/all-MiniLM-L6-v2", options=options
    )
    return out, summary


# --- reading pairs --------------------------------------------------------------------------------------------


def test_pairs_in_every_accepted_shape(pairs_csv, tmp_path):
    labelled = train.read_pairs(pairs_csv)
    assert len(labelled) == len(PAIRS) and labelled.labels == [y for *_, y in PAIRS]
    anchors, positives, negatives = labelled.positives()
    assert len(anchors) == 8 and negatives is None and positives[0].startswith("What is the fastest")

    jsonl = tmp_path / "triplets.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"anchor": a, "positive": b, "negative": "unrelated text"}) + "\n" for a, b, _ in PAIRS)
    )
    triplets = train.read_pairs(jsonl)
    assert triplets.labels is None and triplets.negatives == ["unrelated text"] * len(PAIRS)

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table({"sentence1": ["a b c", "d e f"], "sentence2": ["a b d", "x y z"], "label": [1, 0]}), parquet
    )
    assert train.read_pairs(parquet).labels == [1, 0]

    beir = train.read_pairs(SAMPLE)  # each judged query with each relevant document
    assert len(beir) > 0 and beir.labels is None and all(a and b for a, b in zip(beir.first, beir.second))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "hold no pairs: expected question1,question2"),
        ("question1,question2,is_duplicate\n", "no pairs in the file"),
        ("question1,question2,is_duplicate\nhello there,,1\nfine,ok,0\n", "row 2: empty question2"),
        ("question1,question2,is_duplicate\nhello,there,maybe\n", "'maybe' is not 0 or 1"),
    ],
)
def test_bad_pairs_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        train.read_pairs(path)


def test_one_class_only_and_no_labels_are_refused_where_labels_are_needed(tmp_path):
    ones = train.read_pairs(_write_csv(tmp_path / "ones.csv", [(a, b, 1) for a, b, y in PAIRS if y]))
    with pytest.raises(ConfigError, match="every pair is labelled 1: a pair classifier needs both"):
        ones.labelled()
    zeros = train.read_pairs(_write_csv(tmp_path / "zeros.csv", [(a, b, 0) for a, b, _ in PAIRS]))
    with pytest.raises(ConfigError, match="no positive pair"):
        zeros.positives()
    with pytest.raises(ConfigError, match="online-contrastive|label"):
        train.train_bi_encoder(
            train.read_pairs(SAMPLE),
            tmp_path / "x",
            base="sentence-transformers/all-MiniLM-L6-v2",
            loss="online-contrastive",
        )
    assert not (tmp_path / "x").exists()


# --- training -------------------------------------------------------------------------------------------------


def _mnrl_loss(model, anchors, positives) -> float:
    """In-batch softmax loss (scale 20, cosine) on a fixed batch, dropout off."""
    a = model.encode(anchors, convert_to_numpy=True, normalize_embeddings=True)
    p = model.encode(positives, convert_to_numpy=True, normalize_embeddings=True)
    logits = 20.0 * a @ p.T
    logits -= logits.max(axis=1, keepdims=True)
    return float(-np.mean(np.diag(logits) - np.log(np.exp(logits).sum(axis=1))))


def test_few_steps_change_the_weights_lower_the_loss_and_save_a_folder_both_loaders_load(trained, base_folder):
    from safetensors.numpy import load_file

    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.encoding.encoder import Encoder

    out, summary = trained
    assert summary.steps == 6 and summary.loss_curve and summary.kind == "bi-encoder"
    # mnrl trains on the 8 positive pairs of the 12 rows, and says so; --max-steps decided the length
    assert summary.pairs == 8 and summary.epochs == 6.0 and "on 8 examples" in summary.text()
    assert "--max-steps 6 set the length: 6 passes over the 8 examples" in summary.text()
    before, after = load_file(str(base_folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = [k for k in before if k in after and not np.array_equal(before[k], after[k])]
    assert len(changed) > 10  # the transformer itself moved, not just a head

    anchors, positives = [a for a, _, y in PAIRS if y], [b for _, b, y in PAIRS if y]
    base_model = st.SentenceTransformer(str(base_folder), device="cpu")
    new_model = st.SentenceTransformer(str(out), device="cpu")
    assert _mnrl_loss(new_model, anchors, positives) < _mnrl_loss(base_model, anchors, positives)

    # fp32 as sentence-transformers loads it (documents encode in bf16 by default on a CPU with AMX)
    exact = ModelSettings(device="cpu", dtype="float32")
    ours = Encoder(str(out), settings=exact).encode_documents(positives).vectors
    reference = new_model.encode(positives, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    assert json.loads((out / "hybrid-search-train.json").read_text())["loss"] == "mnrl"


def test_cross_encoder_from_the_bi_encoders_weights_loads_in_our_reranker(pairs_csv, tmp_path):
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

    out = tmp_path / "ce"
    summary = train.train_cross_encoder(
        train.read_pairs(pairs_csv),
        out,
        base="sentence-transformers/all-MiniLM-L6-v2",
        options=train.TrainOptions(batch_size=8, lr=1e-4, max_steps=4, device="cpu"),
    )
    assert summary.steps == 4 and summary.pairs == len(PAIRS)
    ours = CrossEncoderReranker(str(out), settings=ModelSettings(device="cpu", rerank_runtime="torch"))
    passages = [b for _, b, _ in PAIRS[:4]]
    scores = ours.score(PAIRS[0][0], passages)
    reference = st.CrossEncoder(str(out), device="cpu").predict([(PAIRS[0][0], p) for p in passages])
    # ours are logits; sentence-transformers applies the model's sigmoid
    np.testing.assert_allclose(1 / (1 + np.exp(-scores)), np.asarray(reference).ravel(), atol=1e-4)


def test_an_existing_model_is_never_replaced_by_an_interrupted_or_unasked_run(pairs_csv, tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights").write_text("previous model")
    pairs = train.read_pairs(pairs_csv)
    base = "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ConfigError, match="already exists: choose a new folder, or pass --overwrite"):
        train.train_bi_encoder(pairs, out, base=base)

    real_train = st.SentenceTransformerTrainer.train

    def interrupted(self, *args, **kwargs):  # a Ctrl-C one step in
        self.args.max_steps = 1
        real_train(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(st.SentenceTransformerTrainer, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.train_bi_encoder(
            pairs, out, base=base, overwrite=True, options=train.TrainOptions(batch_size=4, device="cpu")
        )
    assert (out / "weights").read_text() == "previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no partial folder left behind


def test_adapt_with_simcse_and_tsdae_on_stored_documents(tmp_path):
    with HybridSearch(index="adapt", data_dir=tmp_path / "data") as hs:
        hs.ingest("sample")
        texts = [f"{d.title} {d.text}" for batch in hs.backend.iter_documents("adapt") for d in batch]
    assert len(texts) == 40
    for method in ("simcse", "tsdae"):
        summary = train.adapt(
            texts,
            tmp_path / method,
            base="sentence-transformers/all-MiniLM-L6-v2",
            method=method,
            options=train.TrainOptions(batch_size=4, max_steps=2, device="cpu"),
        )
        assert summary.steps == 2 and summary.loss_curve
        model = st.SentenceTransformer(str(tmp_path / method), device="cpu")
        assert model.encode(["a test sentence"]).shape == (1, 384)
    with pytest.raises(ConfigError, match="unknown --method"):
        train.adapt(texts, tmp_path / "x", base="m", method="gpl")


# --- hard negatives and reindex -------------------------------------------------------------------------------


def _check_mining(hs):
    from hybrid_search.ingest.sources import open_query_set

    qs = open_query_set(SAMPLE)
    pairs = train.read_pairs(SAMPLE)
    anchors, positives, _ = pairs.positives()
    triplets, report = train.mine_hard_negatives(hs, anchors, positives, depth=10, margin=0.05)
    assert report.anchors == len(anchors) and report.mined == len(triplets) > 0
    assert report.mined + report.none_found == report.anchors
    every_positive = {}
    for a, p in zip(anchors, positives, strict=True):
        every_positive.setdefault(a, set()).add(p)
    stored = set(hs.backend.get_texts(hs.index, [d for rels in qs.qrels.values() for d in rels]).values())
    for anchor, positive, negative in triplets:
        assert negative not in every_positive[anchor] and negative != anchor and negative != positive
    assert stored  # the judged documents are in the index, so positives were candidates to skip
    assert report.skipped_positive > 0


def test_hard_negative_mining_never_returns_a_positive(tmp_path):
    with HybridSearch(index="mine", data_dir=tmp_path) as hs:
        hs.ingest("sample")
        _check_mining(hs)


def _reindex_while_searching(hs, new_model: Path) -> None:
    hs.ingest("sample")
    old_spec = hs.backend.index_spec(hs.index)
    before = hs.backend.count(hs.index)
    expected = hs.search("how do batteries work", mode="bm25", top_k=3).doc_ids
    answers, errors, stop = [], [], threading.Event()

    def searching():
        while not stop.is_set():
            try:
                answers.append(hs.search("how do batteries work", mode="bm25", top_k=3).doc_ids)
            except Exception as exc:
                errors.append(exc)

    thread = threading.Thread(target=searching)
    thread.start()
    try:
        summary = hs.reindex(str(new_model))
    finally:
        stop.set()
        thread.join()
    # BM25 does not depend on the model: every answer before, during and after the swap is the same
    assert expected and not errors and answers and all(a == expected for a in answers)
    from hybrid_search.encoding.models import model_identity

    spec = hs.backend.index_spec(hs.index)
    assert spec.model == model_identity(str(new_model)) != old_spec.model
    assert summary.stored == before == hs.backend.count(hs.index)
    assert hs.search("how do batteries work", mode="knn", top_k=3).hits  # the client now encodes with it


def test_reindex_keeps_answering_and_a_model_mismatch_is_refused(trained, tmp_path):
    new_model, _ = trained
    with HybridSearch(index="swap", data_dir=tmp_path) as hs:
        _reindex_while_searching(hs, new_model)
    # a new client without a model set uses the index's own
    with HybridSearch(index="swap", data_dir=tmp_path) as hs:
        assert hs.query_encoder.model_name == str(new_model.resolve())
        assert hs.search("battery", mode="knn", top_k=1).hits
    # one that names another model is refused, before any query is encoded
    other = {"models": {"bi_encoder": "sentence-transformers/all-MiniLM-L6-v2"}}
    with HybridSearch(index="swap", data_dir=tmp_path, overrides=other) as hs:
        with pytest.raises(ConfigError, match="holds vectors from .*reindex --index swap"):
            hs.search("battery", mode="knn")
        hs.rollback()  # the previous build holds the other model: now they match again
        assert hs.search("battery", mode="knn", top_k=1).hits


def test_reindex_and_train_from_the_command_line(trained, pairs_csv, tmp_path):
    new_model, _ = trained
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "hybrid_search.app.cli", *args, "--data-dir", str(tmp_path / "data"), "--quiet"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=600,
        )

    assert cli("ingest", "sample", "--index", "cli").returncode == 0
    out = cli("reindex", "--index", "cli")
    assert out.returncode == 2 and "reindex needs --model" in out.stderr
    out = cli("reindex", "--index", "cli", "--model", str(new_model))
    assert out.returncode == 0, out.stderr
    assert "previous build is kept as cli-previous" in out.stdout
    out = cli("search", "battery", "--index", "cli", "--mode", "knn")
    assert out.returncode == 0, out.stderr
    out = cli("search", "battery", "--index", "cli", "--model", "sentence-transformers/all-MiniLM-L6-v2")
    assert out.returncode == 2 and "holds vectors from" in out.stderr and "Traceback" not in out.stderr

    bad = _write_csv(tmp_path / "bad.csv", [("a", "b")], header=("q", "r"))
    out = cli("train", "bi-encoder", str(bad), "--out", str(tmp_path / "m"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "hold no pairs" in out.stderr
    out = cli(
        "train",
        "bi-encoder",
        str(pairs_csv),
        "--out",
        str(tmp_path / "m"),
        "--hard-negatives",
        "cli",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--json",
        str(tmp_path / "m.json"),
    )
    assert out.returncode == 0, out.stderr
    assert "{'loss'" not in out.stdout + out.stderr  # no raw log dicts per step
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["steps"] == 2 and report["mining"]["anchors"] == 8 and (tmp_path / "m" / "modules.json").exists()


@pytest.mark.integration
def test_mining_and_reindex_through_elasticsearch(noida_url, trained, tmp_path):
    new_model, _ = trained
    with HybridSearch(index="train-es", backend="elasticsearch", url=noida_url, data_dir=tmp_path) as hs:
        hs.ingest("sample")
        _check_mining(hs)
        _reindex_while_searching(hs, new_model)
        hs.delete()


def test_an_interrupted_reindex_leaves_the_index_serving_and_resumes(trained, tmp_path, monkeypatch):
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.encoding.models import model_identity

    new_model, _ = trained
    with HybridSearch(index="cut", data_dir=tmp_path, overrides={"ingest": {"batch_size": 8}}) as hs:
        hs.ingest("sample")
        old = hs.backend.index_spec("cut").model
        expected = hs.search("how do batteries work", mode="knn", top_k=3).doc_ids
        real = Encoder.encode_documents
        calls = []

        def power_cut(self, passages):  # the third batch of the reindex never finishes
            calls.append(len(passages))
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(self, passages)

        monkeypatch.setattr(Encoder, "encode_documents", power_cut)
        with pytest.raises(KeyboardInterrupt):
            hs.reindex(str(new_model))
        monkeypatch.setattr(Encoder, "encode_documents", real)
        assert hs.backend.index_spec("cut").model == old  # still the old build, answering as before
        assert hs.search("how do batteries work", mode="knn", top_k=3).doc_ids == expected
        summary = hs.reindex(str(new_model), resume=True)
        assert summary.resumed and summary.stored == hs.backend.count("cut") == 40
        assert hs.backend.index_spec("cut").model == model_identity(str(new_model))
