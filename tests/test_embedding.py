import numpy as np
import pytest

from sdg_data.scoring.embedding import CachedEmbedder, LexicalEmbedder, TransformersEmbedder, load_embedder


def test_transformers_embedder_mean_pools_and_normalizes(tiny_qwen3_embedder_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    emb = TransformersEmbedder(str(tiny_qwen3_embedder_dir), max_length=256, batch_size=2)
    texts = ["six fingers on the left hand", "red scarf", "a much longer description " * 3]
    vecs = emb.encode(texts)
    assert vecs.shape == (3, 32) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    # the same text alone gives the same vector as inside a padded batch (mask-aware mean pooling)
    np.testing.assert_allclose(emb.encode([texts[1]])[0], vecs[1], atol=1e-5)
    # and equals the mean of the last hidden state computed by hand
    tok = AutoTokenizer.from_pretrained(tiny_qwen3_embedder_dir)
    model = AutoModel.from_pretrained(tiny_qwen3_embedder_dir)
    with torch.no_grad():
        h = model(**tok([texts[0]], return_tensors="pt")).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(vecs[0], (h / h.norm()).numpy(), atol=1e-5)


def test_max_length_truncates(tiny_qwen3_embedder_dir):
    emb = TransformersEmbedder(str(tiny_qwen3_embedder_dir), max_length=8)
    a, b = emb.encode(["abcdefgh", "abcdefgh plus a tail that is cut off"])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cache_dedups_and_batches(tiny_qwen3_embedder_dir):
    emb = load_embedder(str(tiny_qwen3_embedder_dir))
    assert isinstance(emb, CachedEmbedder)
    cos = emb.pair_cosines(["a", "b", "a"], ["a", "c", "b"])
    assert emb.calls == 1 and len(emb._cache) == 3
    assert cos[0] == pytest.approx(1.0, abs=1e-5)
    emb.pair_cosines(["a"], ["c"])
    assert emb.calls == 1  # nothing new to encode


def test_lexical_and_none():
    assert load_embedder("none") is None and load_embedder(None) is None
    emb = load_embedder("lexical")
    same, related, other = emb.pair_cosines(["six fingers"] * 3, ["six fingers", "six fingers on hand", "blue sky"])
    assert same == pytest.approx(1.0) and related > other
    assert LexicalEmbedder().encode([""]).shape == (1, 1024)


def test_cache_is_bounded_lru():
    emb = CachedEmbedder(LexicalEmbedder(), max_entries=3)
    emb.encode(["a", "b", "c"])
    emb.encode(["a"])  # a is now the most recent
    emb.encode(["d"])  # evicts b
    assert list(emb._cache) == ["c", "a", "d"]
    calls = emb.calls
    emb.encode(["b"])
    assert emb.calls == calls + 1


def test_fast_path_matches_the_reference_recipe(tiny_qwen3_embedder_dir):
    """Token ids from the Rust core and length-sorted right padding give the transformers recipe's vectors."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    emb = TransformersEmbedder(str(tiny_qwen3_embedder_dir), max_length=12, batch_size=3)
    assert emb._backend is not None
    texts = ["x", "red scarf on the dog", "a long description " * 6, "two", "hands with six fingers"]
    tok = AutoTokenizer.from_pretrained(tiny_qwen3_embedder_dir)
    model = AutoModel.from_pretrained(tiny_qwen3_embedder_dir)
    enc = tok(texts, padding=True, truncation=True, max_length=12, return_tensors="pt")
    assert emb._token_ids(texts) == [ids[m.bool()].tolist() for ids, m in zip(enc.input_ids, enc.attention_mask)]
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc.attention_mask.unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).numpy()
    np.testing.assert_allclose(emb.encode(texts), ref, atol=1e-5)


def test_causal_model_runs_without_padding_mask(tiny_qwen3_embedder_dir):
    """A causal decoder's real-token states do not depend on right padding, so batches skip the mask; the probe
    finds that on the model, and the vectors are those of the masked path."""
    emb = TransformersEmbedder(str(tiny_qwen3_embedder_dir), batch_size=2)
    assert emb.causal
    texts = ["x", "red scarf on the dog", "a long description " * 6, "two", "hands with six fingers"]
    fast = emb.encode(texts)
    emb.causal = False
    np.testing.assert_allclose(fast, emb.encode(texts), atol=1e-6)


def test_bidirectional_model_keeps_the_padding_mask(tmp_path):
    """A BERT-style encoder attends both ways: right padding would change its states, so the probe says no."""
    from transformers import BertConfig, BertModel

    from sdg_data.testkit.models import byte_level_qwen_tokenizer, lm_config

    tok = byte_level_qwen_tokenizer()
    cfg = BertConfig(**lm_config(len(tok), 32, 1, 2, intermediate=32, pad_token_id=tok.pad_token_id))
    BertModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    emb = TransformersEmbedder(str(tmp_path), batch_size=4)
    assert not emb.causal
    texts = ["a", "a much longer text than the first"]
    np.testing.assert_allclose(emb.encode(texts)[0], emb.encode(texts[:1])[0], atol=1e-5)


def test_lexical_pair_cosines_equal_the_dense_vectors():
    """The sparse pair path (``sdg eval`` and ``sdg reward`` with ``lexical``) gives the cosines of encode()'s vectors
    (up to their float32 rounding), for empty texts, unseen words, NUL characters and non-ASCII case folding."""
    texts = ["six fingers on the left hand", "", "!!", "x\0y blurred", "ΑΣ Straße ÄÖ", "the the the hand"]
    rng = np.random.default_rng(0)
    words = "hand finger melted text sign blurred extra limb face sky logo garbled".split()
    texts += [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(300)]
    a = texts
    b = [texts[i] for i in rng.permutation(len(texts))]
    dense = LexicalEmbedder()
    va, vb = dense.encode(a).astype(np.float64), dense.encode(b).astype(np.float64)
    want = np.einsum("ij,ij->i", va, vb)
    got = LexicalEmbedder().pair_cosines(a, b, block=7)  # a block size that leaves a remainder
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert LexicalEmbedder().pair_cosines(a, a).tolist() == pytest.approx([0.0 if i in (1, 2) else 1.0
                                                                            for i in range(len(a))])  # fmt: skip


def test_pair_cosines_are_remembered_within_a_run():
    emb = CachedEmbedder(LexicalEmbedder())
    first = emb.pair_cosines(["a b", "c d", "a b"], ["a b c", "d", "a b c"])
    assert len(emb._pairs) == 2  # the repeated pair is scored once
    emb.inner = None  # a second ask must not reach the embedder
    assert np.array_equal(emb.pair_cosines(["c d", "a b"], ["d", "a b c"]), first[[1, 0]])
    big = CachedEmbedder(LexicalEmbedder())
    big.max_pairs = 2  # past the bound the pairs are scored straight, not remembered
    big.pair_cosines(["a", "b", "c"], ["a", "b", "c"])
    assert big._pairs == {}


def test_lexical_words_are_the_regex_words_on_either_path():
    """ASCII batches are tokenized by a byte table, others by the regex: the same words and ids either way, over
    random ASCII (every control and punctuation character) and batches with non-ASCII words in them."""
    import random

    rng = random.Random(1)
    alphabet = [chr(c) for c in range(128)]
    for k in range(300):
        chars = alphabet + (list("éÄßΣ日本") if k % 2 else [])
        texts = ["".join(rng.choice(chars) for _ in range(rng.randint(0, 40))) for _ in range(rng.randint(1, 6))]
        emb = LexicalEmbedder()
        emb._word_ids(["warm up the byte table with Words, words_2 and MORE"])
        ids, counts = emb._word_ids(texts)
        want = [[emb._ids[w] for w in LexicalEmbedder._token.findall(t.lower())] for t in texts]
        got = np.split(ids, np.cumsum(counts)[:-1])
        assert [g.tolist() for g in got] == want, texts
