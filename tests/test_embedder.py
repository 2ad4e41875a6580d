"""NumPy MiniLM embedder: parity with sentence-transformers and batching behaviour."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assist.embedder import BACKENDS, MODEL_NAME, MiniLMEmbedder
from evals.llama_adapter import as_llama_index_embedding

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.json"
ROOT = Path(__file__).resolve().parents[1]

MIXED = [
    "How do I reset my password?",
    "?",
    " ".join(["Refunds are processed within ten business days of approval."] * 40),
    "Café crème à Zürich",
    "Escalate to tier two when the customer reports a duplicate charge on the same invoice.",
    "",
    "cancel",
    "Shipping delays caused by the carrier are not eligible for compensation vouchers.",
]


@pytest.fixture(scope="module", params=BACKENDS)
def embedder(request: pytest.FixtureRequest) -> MiniLMEmbedder:
    return MiniLMEmbedder(backend=request.param).load()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text("utf-8"))
    return data


@pytest.mark.slow
def test_matches_sentence_transformers(embedder: MiniLMEmbedder, reference: dict[str, Any]) -> None:
    assert reference["model"] == embedder.model_name == MODEL_NAME
    sentences: list[str] = reference["sentences"]
    expected = np.asarray(reference["vectors"], dtype=np.float64)
    assert expected.shape == (len(sentences), 384)
    # The fixture covers truncation (> 256 tokens), unicode and near-empty input.
    assert max(len(s) for s in sentences) > 1500
    got = embedder.embed(sentences).astype(np.float64)
    cos = (got * expected).sum(axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    )
    diff = np.abs(got - expected).max(axis=1)
    for i, sentence in enumerate(sentences):
        assert cos[i] >= 0.99999, (sentence, cos[i])
        assert diff[i] <= 1e-4, (sentence, diff[i])


@pytest.mark.slow
def test_shape_dtype_and_normalisation(embedder: MiniLMEmbedder) -> None:
    vecs = embedder.embed(MIXED)
    assert vecs.shape == (len(MIXED), embedder.dim) == (len(MIXED), 384)
    assert vecs.dtype == np.float32
    assert vecs.flags.c_contiguous
    assert np.all(np.isfinite(vecs))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    query = embedder.embed_query("reset password")
    assert query.shape == (384,)
    assert query.dtype == np.float32


@pytest.mark.slow
def test_order_preserved_across_mixed_length_batches(embedder: MiniLMEmbedder) -> None:
    singles = np.stack([embedder.embed_query(t) for t in MIXED])
    for batch_size in (1, 3, 32):
        batched = embedder.embed(MIXED, batch_size=batch_size)
        np.testing.assert_allclose(batched, singles, atol=1e-5)
    # Distinct texts really land in distinct rows (not merely similar vectors).
    sims = singles @ singles.T
    assert np.array_equal(sims.argmax(axis=1), np.arange(len(MIXED)))
    reversed_vecs = embedder.embed(MIXED[::-1], batch_size=2)
    np.testing.assert_allclose(reversed_vecs[::-1], singles, atol=1e-5)


@pytest.mark.slow
def test_batch_matches_single_query(embedder: MiniLMEmbedder) -> None:
    texts = [
        f"Ticket {i}: customer asks about invoice {i * 7} and " + "late fees " * i
        for i in range(20)
    ]
    batched = embedder.embed(texts, batch_size=8)
    for text, row in zip(texts, batched, strict=True):
        single = embedder.embed_query(text)
        assert float(single @ row) >= 0.99999
        np.testing.assert_allclose(single, row, atol=1e-5)


@pytest.mark.slow
def test_whitespace_is_stripped_like_sentence_transformers(embedder: MiniLMEmbedder) -> None:
    np.testing.assert_allclose(
        embedder.embed_query("  refund policy \n"),
        embedder.embed_query("refund policy"),
        atol=1e-6,
    )


@pytest.mark.slow
def test_truncates_to_max_seq_length(embedder: MiniLMEmbedder) -> None:
    assert embedder.max_seq_length == 256
    base = "word " * 300
    np.testing.assert_allclose(
        embedder.embed_query(base + "totally different ending"),
        embedder.embed_query(base),
        atol=1e-6,
    )


@pytest.mark.slow
def test_empty_input(embedder: MiniLMEmbedder) -> None:
    vecs = embedder.embed([])
    assert vecs.shape == (0, 384)
    assert vecs.dtype == np.float32


@pytest.mark.slow
def test_rejects_bare_string_and_bad_batch_size(embedder: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError):
        embedder.embed("not a list")
    with pytest.raises(ValueError):
        embedder.embed(["x"], batch_size=0)


def test_rejects_unknown_backend_and_bad_threads() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend 'torch'; use one of onnx"):
        MiniLMEmbedder(backend="torch")
    with pytest.raises(ValueError, match="threads must be >= 0"):
        MiniLMEmbedder(threads=-1)


@pytest.mark.slow
def test_backends_agree_on_mixed_batches() -> None:
    """ONNX Runtime and NumPy compute the same vectors (padding and truncation included)."""
    onnx = MiniLMEmbedder(backend="onnx", threads=1).embed(MIXED, batch_size=3)
    ref = MiniLMEmbedder(backend="numpy").embed(MIXED, batch_size=3)
    assert np.abs(onnx - ref).max() < 1e-5


def test_loads_lazily(tmp_path: Path) -> None:
    missing = MiniLMEmbedder(model_dir=tmp_path / "missing")  # constructing reads nothing
    assert missing.dim == 384
    assert missing.embed([]).shape == (0, 384)
    with pytest.raises(FileNotFoundError):
        missing.embed(["hello"])


def test_default_model_dir_is_the_bundled_package() -> None:
    model_dir = MiniLMEmbedder().model_dir
    assert model_dir.name == "model"
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "tokenizer.json").is_file()


@pytest.mark.slow
def test_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from assist.embedder import MiniLMEmbedder\n"
        "MiniLMEmbedder(backend='onnx').embed(['hello world'])\n"
        "MiniLMEmbedder(backend='numpy').embed(['hello world'])\n"
        "bad = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.mark.slow
def test_llama_index_adapter(embedder: MiniLMEmbedder) -> None:
    wrapped = as_llama_index_embedding(embedder)
    assert wrapped.model_name == MODEL_NAME
    expected = embedder.embed(["refund window", "late delivery"])
    query = wrapped.get_query_embedding("refund window")
    np.testing.assert_allclose(query, expected[0], atol=1e-6)
    texts = wrapped.get_text_embedding_batch(["refund window", "late delivery"])
    np.testing.assert_allclose(np.asarray(texts), expected, atol=1e-6)
    async_query = asyncio.run(wrapped.aget_query_embedding("late delivery"))
    np.testing.assert_allclose(async_query, expected[1], atol=1e-6)


def test_rejects_unknown_query_precision() -> None:
    with pytest.raises(ValueError, match="unknown query precision 'int4'; use one of fp32, int8"):
        MiniLMEmbedder(query_precision="int4")


@pytest.mark.slow
def test_int8_queries_search_the_float_index() -> None:
    """Quantized question vectors stay close to the float ones (cosine >= 0.99 for real
    questions, >= 0.95 for a lone "?"), rank a small corpus the same way, and documents are
    still embedded in float32."""
    fp32 = MiniLMEmbedder(threads=1, query_precision="fp32")
    int8 = MiniLMEmbedder(threads=1, query_precision="int8")
    texts = [t for t in MIXED if t.strip()]
    a, b = fp32.embed_queries(texts), int8.embed_queries(texts)
    cos = (a * b).sum(axis=1)
    assert cos.min() >= 0.95 and float(np.median(cos)) >= 0.99, cos
    assert np.abs(a - b).max() > 1e-4  # really a different graph, not the float one again
    np.testing.assert_allclose(int8.embed(texts), fp32.embed(texts), atol=1e-6)
    questions = ["How do I reset my password?", "Is the carrier's delay compensated?",
                 "When should I escalate a duplicate charge?"]
    docs = fp32.embed(texts)
    ranks_fp32 = (fp32.embed_queries(questions) @ docs.T).argmax(axis=1)
    ranks_int8 = (int8.embed_queries(questions) @ docs.T).argmax(axis=1)
    assert ranks_fp32.tolist() == ranks_int8.tolist()


def test_numpy_backend_has_no_int8_path() -> None:
    """query_precision is an ONNX option; the NumPy reference embeds questions in float32."""
    a = MiniLMEmbedder(backend="numpy", query_precision="int8").embed_queries(["refund"])
    b = MiniLMEmbedder(backend="numpy").embed(["refund"])
    np.testing.assert_allclose(a, b, atol=1e-7)


@pytest.mark.slow
def test_a_question_gets_the_same_vector_alone_and_in_a_batch() -> None:
    """Concurrent questions are embedded together; each must still get its own vector,
    whatever else is asked with it (int8 activations are scaled per input)."""
    texts = [t for t in MIXED if t.strip()]
    for precision in ("int8", "fp32"):
        e = MiniLMEmbedder(threads=1, query_precision=precision)
        together = e.embed_queries(texts)
        for i, text in enumerate(texts):
            np.testing.assert_allclose(together[i], e.embed_queries([text])[0], atol=1e-5,
                                       err_msg=f"{precision}: {text[:40]}")


def test_building_the_int8_graph_leaves_logging_alone() -> None:
    """ONNX Runtime's quantizer logs through logging.warning(), which would give the root
    logger a plain stderr handler and break the server's JSON log lines (a fresh process:
    pytest's own handlers on the root logger would hide it)."""
    code = ("import logging\n"
            "from assist.embedder import MiniLMEmbedder\n"
            "MiniLMEmbedder(query_precision='int8').load()\n"
            "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pre-processing" not in done.stderr
