"""The generated benchmark model (tools.testmodel): Code Llama's vocabulary layout and FIM tokens, SmolLM2-135M's
shape, Q4_0, written once and cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from codecomplete.tools.testmodel import (
    FIM_EOT,
    FIM_MID,
    FIM_PRE,
    FIM_SUF,
    SMOLLM2_135M,
    VOCAB_SIZE,
    codellama_vocab,
    corpus_words,
    ensure_test_model,
    generated_model_path,
    piece_id,
    resolve_model_option,
)


def test_vocabulary_is_laid_out_like_code_llamas() -> None:
    words = corpus_words()
    texts, scores, types = codellama_vocab(words)
    assert len(texts) == len(scores) == len(types) == VOCAB_SIZE == 32016
    assert [piece_id(p, words) for p in (FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT)] == [32007, 32008, 32009, 32010]
    assert texts[:3] == ("<unk>", "<s>", "</s>") and texts[3] == "<0x00>" and texts[29871] == "\u2581"
    assert len(set(texts)) == VOCAB_SIZE
    # every word piece's prefixes are pieces too (SentencePiece merges only into pieces that exist)
    known = set(texts)
    for word in ("\u2581return", "\u2581self", "textwrap"[:4]):
        assert all(word[:end] in known for end in range(2, len(word) + 1))
    # the extra words do not move the fixtures' pieces or the special ids
    assert codellama_vocab()[0][:259] == texts[:259] and codellama_vocab()[0][32000:] == texts[32000:]


def test_corpus_words_are_deterministic_and_frequent_first() -> None:
    words = corpus_words()
    assert words == corpus_words() and len(words) > 1000
    assert "self" in words[:10] and "return" in words[:20]


def test_other_model_names_are_left_to_the_server() -> None:
    assert resolve_model_option("codellama-7b-q4_k_m") == "codellama-7b-q4_k_m"
    assert resolve_model_option(None) is None


@pytest.mark.slow
def test_sized_model_is_written_quantized_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf
    import llama_cpp

    monkeypatch.setenv("CODECOMPLETE_TEST_MODEL_DIR", str(tmp_path))
    messages: list[str] = []
    path = ensure_test_model(progress=messages.append)
    assert path == generated_model_path("codellama-sized-random") and path.parent == tmp_path and messages
    assert ensure_test_model(progress=lambda m: pytest.fail("written twice")) == path
    assert 60 << 20 < path.stat().st_size < 100 << 20

    reader = gguf.GGUFReader(path)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q4_0" and kinds["blk.29.ffn_down.weight"] == "Q4_0"
    assert "output.weight" not in kinds  # tied embeddings, as SmolLM2

    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    try:
        s = SMOLLM2_135M
        assert llama_cpp.llama_model_n_embd(model) == s.n_embd and llama_cpp.llama_model_n_layer(model) == s.n_layer
        assert llama_cpp.llama_model_n_head(model) == s.n_head and llama_cpp.llama_model_n_head_kv(model) == s.n_head_kv
        assert llama_cpp.llama_model_n_ctx_train(model) == s.n_ctx_train
        vocab = llama_cpp.llama_model_get_vocab(model)
        assert llama_cpp.llama_vocab_n_tokens(vocab) == VOCAB_SIZE
        assert [llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab),
                llama_cpp.llama_vocab_fim_mid(vocab), llama_cpp.llama_vocab_eot(vocab)] == [32007, 32008, 32009, 32010]
        # code tokenizes at about a real vocabulary's density (~3 characters per token), not character by character
        text = b"    def wrap(self, text):\n        return self._wrap_chunks(self._split_chunks(text))\n"
        buf = (llama_cpp.llama_token * 256)()
        n = llama_cpp.llama_tokenize(vocab, text, len(text), buf, 256, False, False)
        assert 0 < n < len(text) / 2.5
    finally:
        llama_cpp.llama_model_free(model)
