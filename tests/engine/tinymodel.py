"""A tiny llama model written at test time with the ``gguf`` package: random weights, real tokens.

Two layers of width 64 and a byte-level BPE vocabulary (the 256 bytes as GPT-2 spells them, two control tokens and
a few merges: llama.cpp refuses a BPE vocabulary with no merges). ~0.3 MB; llama.cpp loads it in milliseconds and
generates hundreds of tokens a second on one core. The output projection favours printable ASCII (the other rows
are zero), so the random text is readable and decodes as UTF-8; the end-of-sequence row is zero as well, so a
generation runs until ``num_predict`` or a stop sequence ends it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WIDTH, LAYERS, HEADS, FFN = 64, 2, 4, 128
BOS, EOS = 0, 1
MERGES = [("Ġ", "t"), ("t", "h"), ("Ġ", "a"), ("e", "r")]


def byte_symbols() -> list[str]:
    """GPT-2's byte → printable character table (byte-level BPE spells every byte as one of these)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = dict.fromkeys(printable, 0)
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
        else:
            chars[b] = b
    return [chr(chars[b]) for b in range(256)]


def vocabulary() -> tuple[list[str], list[int], list[bool]]:
    """(tokens, token types, readable?): the control tokens, the 256 bytes in byte order, then the merges."""
    import gguf  # the `engine` extra: imported when a model is made, so the suite collects without it

    symbols = byte_symbols()
    tokens = ["<s>", "</s>", *symbols, *(a + b for a, b in MERGES)]
    types = [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 2)
    readable = [False, False, *(32 <= b < 127 for b in range(256)), *([True] * len(MERGES))]
    return tokens, [int(t) for t in types], readable


def write_model(path: Path, seed: int = 0, context: int = 2048, pooling: bool = False) -> Path:
    """Write the model to ``path``; the same ``seed`` writes the same file (and so the same generations).
    ``pooling``: mean pooling, so that an engine started for embeddings answers one vector per input (without it,
    llama.cpp answers one per token)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens, types, readable = vocabulary()
    n_vocab = len(tokens)

    def weights(*shape: int, scale: float = 0.2) -> Any:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"corral-tiny-{seed}")
    writer.add_context_length(context)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if pooling:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)

    writer.add_tensor("token_embd.weight", weights(n_vocab, WIDTH, scale=1.0))
    writer.add_tensor("output_norm.weight", np.ones(WIDTH, dtype=np.float32))
    output = weights(n_vocab, WIDTH, scale=1.0) * np.array(readable, dtype=np.float32)[:, None]
    writer.add_tensor("output.weight", output)
    for i in range(LAYERS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(WIDTH, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(WIDTH, WIDTH))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(WIDTH, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(FFN, WIDTH))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(FFN, WIDTH))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(WIDTH, FFN))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
