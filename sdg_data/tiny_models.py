"""Tiny random-weight models of the real classes, built offline from configs, for tests and benchmarks.

Same code paths as the real checkpoints (Qwen/Qwen3-Embedding-0.6B is a Qwen3Model), a ten-thousandth the size.
"""

from __future__ import annotations

from pathlib import Path


def lm_config(
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_positions: int = 512,
    **extra,
) -> dict:
    """The shape of a toy language model, in the keyword names transformers' decoder configs share (Qwen, Gemma,
    Mistral, BERT): one place that sizes every tiny text model of tests, benchmarks and the demo."""
    out = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate or 2 * hidden,
        "max_position_embeddings": max_positions,
        **extra,
    }
    if kv_heads is not None:
        out["num_key_value_heads"] = kv_heads
    return out


def vision_token_ids(tok) -> dict[str, int]:
    """The ids a Qwen-VL config needs for its image and video placeholders, read from ``tok``."""
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                       "<|vision_end|>")}  # fmt: skip
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def save_tiny_qwen3_text_model(out: str | Path, tokenizer, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide random Qwen3Model with ``tokenizer`` to ``out`` (loadable by AutoModel)."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    out = Path(out)
    torch.manual_seed(seed)
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None}
    cfg = Qwen3Config(**lm_config(len(tokenizer), 32, 2, 4, 2, 64, head_dim=8, **ids))
    Qwen3Model(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def byte_level_qwen_tokenizer():
    """A Qwen2Tokenizer over the 256 byte symbols (no merges): one token a byte, no files needed."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]})
    return tok


def word_level_tokenizer(words: list[str]):
    """A whitespace word-level tokenizer: about one token a word, like a real BPE vocabulary on plain English."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in ["<|endoftext|>", "<unk>", ".", *sorted(set(words)), *sorted({w.capitalize() for w in words})]:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|endoftext|>", unk_token="<unk>")
