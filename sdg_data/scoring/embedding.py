"""Description embeddings behind one small interface, for DescCos (SDG-Eval) and R_desc (the GRPO reward).

The paper embeds with Qwen/Qwen3-Embedding-0.6B: last hidden state mean-pooled over the attention mask,
L2-normalized, at most 256 tokens. :class:`TransformersEmbedder` does exactly that for any model id or local
folder. :class:`CachedEmbedder` wraps any embedder so a run encodes each distinct text once, in batches.
``lexical`` is a dependency-free hashed n-gram embedder for offline demos and smoke runs; its cosines are not
comparable with the paper's and reports say so.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


DEFAULT_EMBEDDER = "Qwen/Qwen3-Embedding-0.6B"
LEXICAL = "lexical"


@runtime_checkable
class Embedder(Protocol):
    """Anything that maps texts to L2-normalized float32 vectors, shape (len(texts), dim)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class TransformersEmbedder:
    """Mean-pooled, L2-normalized hidden states of a transformers model (the authors' DescCos recipe)."""

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        max_length: int = 256,
        batch_size: int = 64,
        device: str | None = None,
        dtype: str | None = None,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = model
        self.max_length = max_length
        self.batch_size = batch_size
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        self._backend = self._rust_backend()
        self._pad_id = self.tokenizer.pad_token_id or 0
        params = inspect.signature(self.model.forward).parameters
        self._extra = {"use_cache": False} if "use_cache" in params else {}  # an embedder never decodes
        self.causal = self._probe_causal()

    def _probe_causal(self) -> bool:
        """Whether padding on the right leaves the real tokens' states alone, so batches can run without a
        padding mask: true of causal decoders such as Qwen3-Embedding, whose tokens never attend forward; false of
        bidirectional encoders. Without a mask, attention takes its causal fast path (no per-batch mask tensors;
        flash kernels on GPU). Measured on the loaded model rather than assumed from its name."""
        torch = self._torch
        vocab = int(getattr(self.model.config, "vocab_size", 0) or 0)
        if vocab < 8:
            return False
        ids = [1, 2, 3, 4, 5]
        with torch.inference_mode():
            alone = self.model(input_ids=torch.tensor([ids], device=self.device), **self._extra)
            padded = self.model(
                input_ids=torch.tensor([ids + [self._pad_id] * 3, [6] * 8], device=self.device), **self._extra
            )
            a = alone.last_hidden_state[0].float()
            b = padded.last_hidden_state[0, : len(ids)].float()
        scale = float(a.abs().max()) or 1.0
        return bool(torch.allclose(a, b, rtol=0.0, atol=1e-3 * scale))

    def _rust_backend(self):
        """The fast tokenizer's Rust core with our truncation and no padding (we pad per length-sorted batch):
        the same ids as ``tokenizer(...)`` without its per-token Python conversion."""
        core = getattr(self.tokenizer, "_tokenizer", None)
        if core is None or not getattr(self.tokenizer, "is_fast", False):
            return None
        from tokenizers import Tokenizer

        core = Tokenizer.from_str(core.to_str())
        core.no_padding()
        core.enable_truncation(self.max_length)
        return core

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch_fast(texts)]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return enc["input_ids"]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode in batches of similar length, so little compute goes to padding."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        torch = self._torch
        texts = list(texts)
        ids = self._token_ids(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable").tolist()
        out: np.ndarray | None = None
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(int(lengths[idx[-1]]), 1)
                batch = np.full((len(idx), width), self._pad_id, dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for r, i in enumerate(idx):
                    batch[r, : lengths[i]] = ids[i]
                    mask[r, : lengths[i]] = 1
                input_ids = torch.from_numpy(batch).to(self.device)
                attn = torch.from_numpy(mask).to(self.device)
                if self.causal:  # right padding: the real tokens' states do not depend on it
                    hidden = self.model(input_ids=input_ids, **self._extra)
                else:
                    hidden = self.model(input_ids=input_ids, attention_mask=attn, **self._extra)
                hidden = hidden.last_hidden_state.float()
                m = attn.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                vecs = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
                out[idx] = vecs
        return out


# ASCII bytes as the lexical embedder reads them: letters lower-cased, [a-z0-9_] kept (regex \w on ASCII), NUL kept
# (a text's end), everything else a space
_ASCII_WORDS = bytes(
    c + 32 if 65 <= c <= 90 else c if (48 <= c <= 57 or 97 <= c <= 122 or c in (0, 95)) else 32 for c in range(256)
)


class LexicalEmbedder:
    """Hashed word and character-trigram counts: offline, deterministic, no model. Not the paper's metric.

    Every distinct word seen gets an id and its features (the word, weight 1, and its padded character trigrams,
    0.5 each) as buckets in one flat table, and every distinct text its word ids: descriptions reuse a small
    vocabulary and a run asks for the same texts more than once (SDG-Eval, then joint AP), so a word is hashed
    once and a text tokenized once. :meth:`pair_cosines` works on the sparse counts, never on dense vectors."""

    name = LEXICAL
    _token = re.compile(r"\w+", re.UNICODE)
    _scan = re.compile(r"\w+|\0", re.UNICODE)  # words, and the NUL that ends each text in a joined scan

    def __init__(self, dim: int = 1024):
        self.dim = dim
        self._ids: dict[str, int] = {}
        self._flat_buckets: list[int] = []
        self._flat_weights: list[float] = []
        self._starts: list[int] = []
        self._lens: list[int] = []
        self._ids["\0"] = -1  # a text's end in :meth:`_word_ids`, never a word
        self._byte_ids: dict[bytes, int] = {b"\0": -1}  # the same ids by the words' ASCII bytes

    def _bucket(self, feature: str) -> int:
        return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=4).digest(), "little") % self.dim

    def _add(self, word: str) -> int:
        padded = f"#{word}#"
        feats = ["w:" + word, *("c:" + padded[k : k + 3] for k in range(len(padded) - 2))]
        self._starts.append(len(self._flat_buckets))
        self._lens.append(len(feats))
        self._flat_buckets.extend(self._bucket(f) for f in feats)
        self._flat_weights.extend([1.0] + [0.5] * (len(feats) - 1))
        self._ids[word] = len(self._starts) - 1
        return self._ids[word]

    def _word_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The word ids of every text, concatenated, and each text's word count. The texts are read as one string
        with NUL as the end of each text (ASCII: one byte-table pass and a split; else one lower-casing and one
        regex scan) and the words mapped in one C-level dictionary pass; words never seen before are hashed and the
        pass repeated."""
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        joined = " \0 ".join(t.replace("\0", " ") for t in texts) + " \0"
        if joined.isascii():  # nearly always: one byte table lowers, blanks every non-word byte and keeps the NULs
            tokens: list = joined.encode("ascii").translate(_ASCII_WORDS).split()
            table = self._byte_ids
        else:  # \w beyond ASCII: the regex on the lower-cased text
            tokens, table = self._scan.findall(joined.lower()), self._ids
        ids = list(map(table.get, tokens))
        if None in ids:
            for w in dict.fromkeys(w for w, i in zip(tokens, ids, strict=True) if i is None):
                word = w.decode("ascii") if isinstance(w, bytes) else w
                i = self._ids[word] if word in self._ids else self._add(word)
                self._byte_ids.setdefault(word.encode("utf-8"), i)
            ids = list(map(table.__getitem__, tokens))
        arr = np.fromiter(ids, dtype=np.int64, count=len(ids))
        ends = np.flatnonzero(arr < 0)  # the NUL after each text
        counts = np.diff(ends, prepend=-1) - 1
        return arr[arr >= 0], counts

    def _features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, bucket, weight) of every feature of every text; a row's repeated buckets are not yet summed."""
        word, counts = self._word_ids(texts)
        row = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        lens = np.asarray(self._lens, dtype=np.int64)[word]
        starts = np.asarray(self._starts, dtype=np.int64)[word]
        ends = np.cumsum(lens)
        pos = np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        return (
            np.repeat(row, lens),
            np.asarray(self._flat_buckets, dtype=np.int64)[pos],
            np.asarray(self._flat_weights, dtype=np.float64)[pos],
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Count vectors of every text, summed in one ``np.bincount`` over all their features, then unit length."""
        n = len(texts)
        row, bucket, weight = self._features(texts)
        if not len(row):
            return np.zeros((n, self.dim), dtype=np.float32)
        flat = np.bincount(row * self.dim + bucket, weights=weight, minlength=n * self.dim)
        return _normalize(flat.reshape(n, self.dim).astype(np.float32))

    def pair_cosines(self, a: Sequence[str], b: Sequence[str], block: int = 256) -> np.ndarray:
        """Cosine of ``a[i]``'s and ``b[i]``'s count vectors, in float64 straight from the counts: ``block`` pairs
        at a time go through a small dense buffer that stays in the CPU's cache (no float32 vectors, no
        normalised copies). Equal to the cosine of :meth:`encode`'s vectors up to their float32 rounding (1e-7)."""
        n, dim = len(a), self.dim
        out = np.zeros(n, dtype=np.float64)
        ra, ba, wa = self._features(a)
        rb, bb, wb = self._features(b)
        cut_a = np.searchsorted(ra, np.arange(0, n + block, block))  # rows are in order: slice each block
        cut_b = np.searchsorted(rb, np.arange(0, n + block, block))
        for k, lo in enumerate(range(0, n, block)):
            m = min(block, n - lo)
            sa, sb = slice(cut_a[k], cut_a[k + 1]), slice(cut_b[k], cut_b[k + 1])
            va = np.bincount((ra[sa] - lo) * dim + ba[sa], weights=wa[sa], minlength=m * dim).reshape(m, dim)
            vb = np.bincount((rb[sb] - lo) * dim + bb[sb], weights=wb[sb], minlength=m * dim).reshape(m, dim)
            na = np.sqrt(np.einsum("ij,ij->i", va, va))
            nb = np.sqrt(np.einsum("ij,ij->i", vb, vb))
            out[lo : lo + m] = np.einsum("ij,ij->i", va, vb) / (np.maximum(na, 1e-12) * np.maximum(nb, 1e-12))
        return out


class CachedEmbedder:
    """Deduplicates and caches: each distinct text is encoded once, in one batched call per ``encode``.

    Kept across calls (a trainer's reward sees the same ground-truth descriptions every epoch and 8 times per
    prompt group) and bounded: past ``max_entries`` the least recently used vectors are dropped.
    """

    max_pairs = 400_000  # pair cosines remembered (about 60 MB) before the memo starts over

    def __init__(self, inner: Embedder, max_entries: int = 200_000, max_bytes: int = 128 << 20):
        self.inner = inner
        self.name = inner.name
        self.max_entries = max_entries
        self.max_bytes = max_bytes  # the cache's vectors, at most (1024-dim float32: 32K texts in 128 MB)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pairs: dict[tuple[str, str], float] = {}  # (a, b) -> cosine; about 150 bytes a pair
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        cache = self._cache
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            self.calls += 1
            vecs = self.inner.encode(missing)
            for t, v in zip(missing, vecs):
                cache[t] = v
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        out = np.stack([cache[t] for t in texts])
        for t in texts:
            cache.move_to_end(t)
        limit = min(self.max_entries, max(1, self.max_bytes // max(1, out[0].nbytes)))
        while len(cache) > limit:
            cache.popitem(last=False)
        return out

    def pair_cosines(self, a: Sequence[str], b: Sequence[str], chunk: int = 4096) -> np.ndarray:
        """Cosine of ``a[i]`` with ``b[i]`` for every i: one encode call for both sides of each ``chunk`` pairs,
        so memory stays bounded (100K images' pairs are never all held as vectors at once). Pairs already scored
        in this run come from a memo (``sdg eval`` asks for most of its pairs twice: DescCos, then joint AP)."""
        n = len(a)
        if len(b) != n:
            raise ValueError(f"pair_cosines needs aligned lists, got {n} and {len(b)} texts")
        if n > self.max_pairs:  # too many to remember: score them straight
            return self._pair_cosines(list(a), list(b), chunk)
        memo = self._pairs
        if len(memo) + n > self.max_pairs:
            memo.clear()
        todo = list(dict.fromkeys(p for p in zip(a, b, strict=True) if p not in memo))
        if todo:
            ta, tb = [p[0] for p in todo], [p[1] for p in todo]
            memo.update(zip(todo, self._pair_cosines(ta, tb, chunk).tolist(), strict=True))
        return np.fromiter(map(memo.__getitem__, zip(a, b, strict=True)), dtype=np.float64, count=n)

    def _pair_cosines(self, a: list[str], b: list[str], chunk: int) -> np.ndarray:
        n = len(a)
        out = np.empty(n, dtype=np.float64)
        sparse = getattr(self.inner, "pair_cosines", None)  # an embedder with a cheaper way than dense vectors
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            if sparse is not None:
                out[lo:hi] = sparse(a[lo:hi], b[lo:hi])
                continue
            vecs = self.encode(a[lo:hi] + b[lo:hi])
            k = hi - lo
            out[lo:hi] = np.einsum("ij,ij->i", vecs[:k].astype(np.float64), vecs[k:].astype(np.float64))
        return out


def load_embedder(spec: str | None, **kwargs) -> CachedEmbedder | None:
    """``none`` -> no embeddings (DescCos is left empty); ``lexical`` -> offline hashed n-grams; else a model id
    or local folder loaded with transformers (``max_length``, ``batch_size``, ``device``, ``dtype`` pass through)."""
    if spec is None or spec.lower() == "none":
        return None
    if spec == LEXICAL:
        return CachedEmbedder(LexicalEmbedder())  # model options do not apply
    from sdg_data.io.hub import require_model

    offline = "or use --embedder lexical (offline, not comparable with the paper) or --embedder none"
    require_model(spec, "--embedder", "embedder", also=offline)  # in seconds; 'lexical' and 'none' need no model
    try:
        return CachedEmbedder(TransformersEmbedder(spec, **kwargs))
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OSError(
            f"cannot load embedder {spec!r} ({first}); give a local folder or a cached model id, or use "
            "--embedder lexical (offline, not comparable with the paper) or --embedder none"
        ) from None
