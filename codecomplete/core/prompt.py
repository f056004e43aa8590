"""Turn a prefix and a suffix into the exact token ids a model was trained on.

Prompts are built as token ids, never as text with FIM markers inside: tokenizing `"<PRE> ..."` matches some
special tokens and not others (see shared/ANCHORS.md), and user code may itself contain marker text.

Code Llama (facebookresearch/codellama, ``infilling_prompt_tokens``):
  PSM: [BOS, <PRE>] + encode(prefix) + [<SUF>] + encode_infilling(suffix) + [<MID>]
  SPM: [BOS, <PRE>, <SUF>] + encode_infilling(suffix) + [<MID>] + encode(prefix)
where ``encode`` is SentencePiece with its dummy leading space and ``encode_infilling`` is the same without it.
Other families use their own marker tokens in PSM order; models without FIM tokens get the prefix only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from codecomplete.core.snippets import Segment
from codecomplete.errors import UserError
from codecomplete.types import Tokenizer

FORMATS = ("psm", "spm", "prefix")

# The text of a family's prefix marker identifies the family; llama.cpp finds the ids from metadata or text.
_FAMILY_BY_PRE_TEXT = {
    "▁<PRE>": "codellama",
    "<PRE>": "codellama",
    "<fim_prefix>": "starcoder",
    "<｜fim▁begin｜>": "deepseek",
    "<|fim_prefix|>": "qwen",
    "[PREFIX]": "codestral",
}
# Families trained with suffix-first ordering (Code Llama: half PSM, half SPM; StarCoder: some SPM;
# Codestral: SPM only).
_SPM_FAMILIES = ("codellama", "codestral", "starcoder")

# A character SentencePiece vocabularies hold as one piece; the Code Llama reference encodes "☺" + text and
# drops the leading pieces to tokenize text without the dummy space.
_SENTINEL = "☺"


@dataclass(frozen=True)
class Prompt:
    token_ids: list[int]
    text: str  # what the model sees, special tokens written as in the vocabulary
    format: str  # psm, spm or prefix
    family: str  # codellama, starcoder, deepseek, qwen, codestral or none
    trailing_prefix_tokens: int = 0  # the prompt ends with this many prefix tokens (prefix-only and SPM)
    heal: bytes = b""  # bytes taken off the end for token healing; generation must re-type them first


def detect_family(tok: Tokenizer) -> str:
    """The FIM family from the prefix marker's vocabulary text; "none" for models without FIM tokens."""
    info = tok.info
    if info.fim_pre is None or info.fim_suf is None:
        return "none"
    family = _FAMILY_BY_PRE_TEXT.get(tok.token_text(info.fim_pre))
    if family is None:
        return "generic" if info.fim_mid is not None else "none"
    return family


def choose_format(family: str, requested: str) -> str:
    """Resolve ``auto``; reject a layout the model was not trained for, with a line that says what to use.

    Code Llama gets SPM always: the prompt ends with the prefix, so typing only appends to it and the KV cache
    keeps everything before the cursor. SPM is weaker when the prefix ends inside a word (Code Llama paper,
    App. E); token healing (``with_token_healing``) lets the model re-type that word's last token, so the layout
    never flips between PSM and SPM from one keystroke to the next (a flip re-evaluated the whole prompt)."""
    if requested == "auto":
        if family == "none":
            return "prefix"
        return "spm" if family in ("codellama", "codestral") else "psm"
    if requested not in FORMATS:
        raise UserError(f"unknown format {requested!r}: use auto, psm, spm or prefix")
    if requested != "prefix" and family == "none":
        raise UserError("this model has no fill-in-the-middle tokens: use --format prefix (or auto)")
    if requested == "spm" and family not in _SPM_FAMILIES:
        raise UserError(f"{family} models were not trained for SPM: use --format psm (or auto)")
    if requested == "psm" and family == "codestral":
        raise UserError("codestral models are suffix-first: use --format spm (or auto)")
    return requested


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Plain tokenization (SentencePiece adds its dummy leading space)."""
    return tok.tokenize(text) if text else []


def encode_infilling(tok: Tokenizer, text: str) -> list[int]:
    """Tokenize without the dummy leading space, as the reference's ``encode_infilling`` does."""
    if not text:
        return []
    if tok.info.vocab_type != "spm":
        return tok.tokenize(text)
    marker = tok.tokenize(_SENTINEL)
    ids = tok.tokenize(_SENTINEL + text)
    rest = ids[len(marker) :]
    if ids[: len(marker)] == marker and tok.detokenize(rest) == text:
        return rest
    # The sentinel merged with the text (a vocabulary unlike Llama's): drop a bare leading "▁" instead.
    ids = tok.tokenize(text)
    if ids and tok.token_text(ids[0]) == "▁":
        return ids[1:]
    return ids


def build_prompt(
    tok: Tokenizer, prefix: str, suffix: str, fmt: str, repo: Sequence[Segment] = ()
) -> Prompt:
    """The token ids (and a readable rendering) for one request in a resolved format.

    ``repo`` segments without a marker (path-comment headers and code) go in front of the prefix; segments
    with a marker (``repo_name``/``file_sep``, for families trained with repo-level tokens) come right after
    BOS, each after its token id, before the FIM part.
    """
    info = tok.info
    family = detect_family(tok)
    bos = [info.bos] if info.bos is not None and (info.add_bos or family == "codellama") else []
    parts: list[tuple[list[int], str]] = [(bos, _texts(tok, bos))]
    markers = {"repo_name": info.fim_rep, "file_sep": info.fim_sep}
    for seg in repo:
        if seg.marker is not None:
            ids = [markers[seg.marker]] if markers.get(seg.marker) is not None else []
            parts.append((ids, _texts(tok, ids)))
            parts.append((encode(tok, seg.text), seg.text))
    prefix = "".join(seg.text for seg in repo if seg.marker is None) + prefix
    if fmt == "prefix":
        parts.append((encode(tok, prefix), prefix))
    else:
        pre, suf, mid = info.fim_pre, info.fim_suf, info.fim_mid
        spm_vocab = info.vocab_type == "spm"
        p_ids, p_text = encode(tok, prefix), (" " + prefix if spm_vocab and prefix else prefix)
        s_ids = encode_infilling(tok, suffix) if family == "codellama" else encode(tok, suffix)
        if fmt == "psm":
            layout = [[pre], (p_ids, p_text), [suf], (s_ids, suffix), [mid]]
        elif family == "codestral":  # [SUFFIX]suffix[PREFIX]prefix
            layout = [[suf], (s_ids, suffix), [pre], (p_ids, p_text)]
        else:  # Code Llama reference SPM, also StarCoder's: [<PRE>, <SUF>] suffix [<MID>] prefix
            layout = [[pre, suf], (s_ids, suffix), [mid], (p_ids, p_text)]
        for item in layout:
            if isinstance(item, tuple):
                parts.append(item)
            else:
                ids = [t for t in item if t is not None]
                parts.append((ids, _texts(tok, ids)))
    token_ids = [t for ids, _ in parts for t in ids]
    trailing = len(parts[-1][0]) if fmt in ("prefix", "spm") else 0
    return Prompt(token_ids=token_ids, text="".join(text for _, text in parts), format=fmt, family=family,
                  trailing_prefix_tokens=trailing)


def with_token_healing(tok: Tokenizer, prompt: Prompt) -> Prompt:
    """Take the prompt's last prefix token off and let generation re-type it.

    A prefix that ends inside what the model would write as one token (indentation before a keyword, half a
    word) otherwise forces an unnatural token split, and the model answers badly (Code Llama paper, App. E).
    The first prefix token keeps its place: with SentencePiece it carries the artificial leading space.
    """
    if prompt.trailing_prefix_tokens < 2:
        return prompt
    last = prompt.token_ids[-1]
    heal = tok.piece(last)
    if not heal:
        return prompt
    shown = heal.decode("utf-8", "replace")
    text = prompt.text[: -len(shown)] if prompt.text.endswith(shown) else prompt.text
    return replace(prompt, token_ids=prompt.token_ids[:-1], text=text, heal=heal,
                   trailing_prefix_tokens=prompt.trailing_prefix_tokens - 1)


def _texts(tok: Tokenizer, ids: list[int]) -> str:
    return "".join(tok.token_text(t) for t in ids)
