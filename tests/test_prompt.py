"""FIM prompts: exact Code Llama token ids (reference construction), family detection, format choice."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest
from gguf_factory import FIM_MID, FIM_PRE, FIM_SUF, SPACE, piece_id

from codecomplete.core.prompt import build_prompt, choose_format, detect_family, encode_infilling
from codecomplete.engines.llama import LlamaEngine
from codecomplete.errors import UserError

BOS = 1
PRE, SUF, MID = 32007, 32008, 32009


@pytest.fixture(scope="module", params=["2023", "tidy"])
def engine(request, codellama_2023_gguf: Path, codellama_tidy_gguf: Path) -> LlamaEngine:
    path = codellama_2023_gguf if request.param == "2023" else codellama_tidy_gguf
    eng = LlamaEngine(path, n_ctx=512)
    yield eng
    eng.close()


def _sp_encode(llm_path: str, text: str) -> list[int]:
    """SentencePiece `encode` as the reference uses it: with the dummy leading space, no BOS."""
    return _REF_TOKENIZERS[llm_path].tokenize(text.encode(), add_bos=False, special=False) if text else []


_REF_TOKENIZERS: dict[str, llama_cpp.Llama] = {}


def reference_tokens(engine: LlamaEngine, prefix: str, suffix: str, suffix_first: bool) -> list[int]:
    """`infilling_prompt_tokens` of facebookresearch/codellama, built from a separate tokenizer instance."""
    path = engine.info.path
    if path not in _REF_TOKENIZERS:
        _REF_TOKENIZERS[path] = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)

    def encode_infilling(s: str) -> list[int]:
        ids = _sp_encode(path, "☺" + s)
        assert ids[:2] == [piece_id(SPACE), piece_id("☺")]
        return ids[2:]

    pre = _sp_encode(path, prefix)
    suf = encode_infilling(suffix)
    if suffix_first:
        return [BOS, PRE, SUF] + suf + [MID] + pre
    return [BOS, PRE] + pre + [SUF] + suf + [MID]


CASES = [
    ("def f(x):\n    ", "\n    return x\n"),
    ("", "print(x)\n"),  # empty prefix
    ("x = 1\n", ""),  # empty suffix
    ("if x:\n", "    pass\n"),  # suffix starting with spaces
    ("a = 'é日本'\n", "\nb = '😀 naïve'\n"),  # non-ASCII on both sides
    ("foo(", ") + bar\n"),
]


@pytest.mark.slow
def test_fim_ids_are_found_in_both_layouts(engine: LlamaEngine) -> None:
    info = engine.info
    assert (info.fim_pre, info.fim_suf, info.fim_mid, info.eot) == (PRE, SUF, MID, 32010)
    assert engine.token_text(PRE) == FIM_PRE and engine.token_text(MID) == FIM_MID
    assert 32010 in info.stop_ids
    assert detect_family(engine) == "codellama"


@pytest.mark.slow
@pytest.mark.parametrize("prefix,suffix", CASES)
@pytest.mark.parametrize("fmt", ["psm", "spm"])
def test_codellama_prompt_matches_reference(engine: LlamaEngine, prefix: str, suffix: str, fmt: str) -> None:
    prompt = build_prompt(engine, prefix, suffix, fmt)
    assert prompt.token_ids == reference_tokens(engine, prefix, suffix, suffix_first=fmt == "spm")
    assert prompt.family == "codellama" and prompt.format == fmt


@pytest.mark.slow
def test_psm_layout_spelled_out(engine: LlamaEngine) -> None:
    """The exact ids for one case, so a shared mistake in both constructions would still show."""
    prompt = build_prompt(engine, "def f(x):", "\n    return x", "psm")
    sp = piece_id
    expected_prefix = [sp(f"{SPACE}def"), sp(f"{SPACE}f"), sp("("), sp("x"), sp("):")]
    newline = 3 + 0x0A  # byte token <0x0A>
    assert prompt.token_ids[:2] == [BOS, PRE]
    assert prompt.token_ids[2:7] == expected_prefix
    assert prompt.token_ids[7] == SUF
    # encode_infilling: the suffix starts with the newline byte, not a dummy `▁` (29871)
    assert prompt.token_ids[8] == newline
    assert prompt.token_ids[-1] == MID
    assert prompt.text == f"<s>{FIM_PRE} def f(x):{FIM_SUF}\n    return x{FIM_MID}"


@pytest.mark.slow
def test_encode_infilling_keeps_leading_space_and_round_trips(engine: LlamaEngine) -> None:
    for text in ["\n    return x", " foo", "  bar(x)", "é", "x", "\t1"]:
        ids = encode_infilling(engine, text)
        assert engine.detokenize(ids) == text
        assert ids[0] != piece_id(SPACE) or text.startswith(" ")
    # llama.cpp's plain tokenize does put a dummy `▁` in front: the reason encode_infilling exists
    assert engine.tokenize("\n    return")[0] == piece_id(SPACE)


@pytest.mark.slow
def test_spm_puts_prefix_last(engine: LlamaEngine) -> None:
    prompt = build_prompt(engine, "x = ", "\n", "spm")
    assert prompt.token_ids[:3] == [BOS, PRE, SUF]
    assert prompt.token_ids.index(MID) < len(prompt.token_ids) - 1


def test_choose_format() -> None:
    # one layout per model, whatever the cursor: the prompt's start stays while typing (healing covers mid-word)
    assert choose_format("codellama", "auto") == "spm"
    assert choose_format("starcoder", "auto") == "psm"
    assert choose_format("none", "auto") == "prefix"
    assert choose_format("codestral", "auto") == "spm"
    with pytest.raises(UserError, match="no fill-in-the-middle"):
        choose_format("none", "psm")
    with pytest.raises(UserError, match="not trained for SPM"):
        choose_format("qwen", "spm")


@pytest.mark.slow
def test_prefix_only_for_models_without_fim(embedded_model: Path) -> None:
    eng = LlamaEngine(embedded_model, n_ctx=256)
    try:
        assert detect_family(eng) == "none"
        prompt = build_prompt(eng, "def add(a, b):\n", "    pass\n", "prefix")
        assert prompt.token_ids == eng.tokenize("def add(a, b):\n")
        assert prompt.text == "def add(a, b):\n"
    finally:
        eng.close()


class _BpeStub:
    """A byte-level BPE tokenizer stand-in (one id per character) with a family's FIM tokens: no StarCoder,
    DeepSeek or Qwen GGUF ships here, and the layout is a pure function of the ids llama.cpp reports."""

    def __init__(self, texts: dict[int, str], **fim: int) -> None:
        from codecomplete.types import ModelInfo

        self.texts = texts
        self.info = ModelInfo(
            path="stub", name="stub", architecture="stub", description="", vocab_type="bpe", n_vocab=1000,
            n_ctx_train=4096, n_ctx=4096, bos=None, eos=0, add_bos=False, eot=None, fim_pad=None, fim_rep=None,
            stop_ids=frozenset({0}), n_gpu_layers=0, backend="CPU",
            **{k: fim.get(k) for k in ("fim_pre", "fim_suf", "fim_mid", "fim_sep")},
        )

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return [100 + ord(c) % 800 for c in text]

    def token_text(self, token: int) -> str:
        return self.texts.get(token, "?")

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t - 100) for t in tokens)

    def piece(self, token: int) -> bytes:
        return self.token_text(token).encode()


@pytest.mark.parametrize(
    "family,pre,suf,mid",
    [
        ("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
        ("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
        ("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ],
)
def test_other_families_psm_layout(family: str, pre: str, suf: str, mid: str) -> None:
    tok = _BpeStub({1: pre, 2: suf, 3: mid}, fim_pre=1, fim_suf=2, fim_mid=3)
    assert detect_family(tok) == family
    prompt = build_prompt(tok, "a = ", "\nb", "psm")
    assert prompt.token_ids == [1, *tok.tokenize("a = "), 2, *tok.tokenize("\nb"), 3]
    assert prompt.text == f"{pre}a = {suf}\nb{mid}"


def test_qwen_repo_level_tokens_come_before_the_fim_part() -> None:
    tok = _BpeStub({1: "<|fim_prefix|>", 2: "<|fim_suffix|>", 3: "<|fim_middle|>", 4: "<|file_sep|>"},
                   fim_pre=1, fim_suf=2, fim_mid=3, fim_sep=4)

    class Seg:
        def __init__(self, text: str, marker: str | None) -> None:
            self.text, self.marker = text, marker

    segments = [Seg("util.py\ndef f(): pass\n", "file_sep"), Seg("main.py\n", "file_sep")]
    prompt = build_prompt(tok, "x", "", "psm", segments)
    ids = prompt.token_ids
    assert ids[0] == 4 and ids.index(1) > ids.index(4, 1)  # <|file_sep|> util.py ... <|file_sep|> main.py, then FIM
    assert prompt.text.startswith("<|file_sep|>util.py\ndef f(): pass\n<|file_sep|>main.py\n<|fim_prefix|>x")
