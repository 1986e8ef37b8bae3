"""Deterministic WordPiece tokenizer training.

Why not simply ``tokenizers.trainers.WordPieceTrainer``: it is not deterministic. Its BPE core
creates the "##"-continuation symbols while iterating over a hash map, so their ids (which break
ties between equally frequent merges) differ from run to run, and the same training texts give a
different vocabulary in each process (huggingface/tokenizers issue #1794; seen here too: three
runs on the tweets train split gave three vocabularies). Runs that must be comparable (atom model
vs baseline, several seeds) need the same tokenizer, so we train the same algorithm in a
deterministic way:

1. normalize the texts with the final tokenizer's own normalizer, split them into words
   exactly as its BertPreTokenizer does, and count the words;
2. write every character twice into a private-use code point: once as a word-initial symbol and
   once as a continuation symbol, so "##x" is an ordinary alphabet character;
3. train the plain BPE trainer on these words: its alphabet is sorted, so no symbol is created
   in hash-map order, and the merges are reproducible (checked across processes);
4. map the learned vocabulary back (continuation symbols -> "##" + text) and load it into a
   WordPiece model, exactly what WordPieceTrainer does with its BPE result.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

logger = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"
SPECIAL_TOKENS = [PAD, UNK]  # ids 0 and 1
_INITIAL_BASE = 0xF0000  # Supplementary Private Use Area-A: word-initial symbols
_CONTINUATION_BASE = 0x100000  # Supplementary Private Use Area-B: "##" continuation symbols
_MAX_ALPHABET = 0xFFFE  # code points available in each area


def text_normalizer() -> normalizers.Normalizer:
    # NFD before StripAccents: accents are only separable once decomposed.
    return normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])


def _is_whitespace(ch: str) -> bool:
    # Rust's char::is_whitespace (used by BertPreTokenizer) = Python's isspace minus \x1c-\x1f.
    return ch.isspace() and not "\x1c" <= ch <= "\x1f"


def _is_punctuation(ch: str) -> bool:
    # BertPreTokenizer: ASCII punctuation (which includes $ + < = > ^ ` | ~) or Unicode P*.
    o = ord(ch)
    return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 or (
        unicodedata.category(ch).startswith("P")
    )


def _word_counts(texts: list[str], normalizer: normalizers.Normalizer) -> Counter[str]:
    """Counts of the words BertPreTokenizer makes of the normalized texts.

    Same result as calling ``pre_tokenize_str`` per text (tested), but one regex over the whole
    corpus is 3x faster than building ~700k (word, offsets) tuples in Python: whitespace
    separates words, and every punctuation character is a word of its own.
    """
    corpus = normalizer.normalize_str("\n".join(texts))  # "\n" is whitespace: texts never merge
    chars = set(corpus)
    punct = "".join(re.escape(c) for c in sorted(c for c in chars if _is_punctuation(c)))
    space = "".join(re.escape(c) for c in sorted(c for c in chars if _is_whitespace(c)))
    parts = [f"[^{punct}{space}]+" if punct or space else ".+"]
    if punct:
        parts.append(f"[{punct}]")
    return Counter(re.findall("|".join(parts), corpus, flags=re.DOTALL))


def train_wordpiece(texts: list[str], *, vocab_size: int = 8000, max_length: int = 64) -> Tokenizer:
    """Train a WordPiece tokenizer on ``texts``; [PAD] = 0, [UNK] = 1, no special tokens added
    around sequences, truncation at ``max_length`` saved in the tokenizer itself."""
    normalizer = text_normalizer()
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    word_counts = _word_counts(texts, normalizer)

    alphabet = sorted({c for w in word_counts for c in w})
    if len(alphabet) > _MAX_ALPHABET:
        raise ValueError(f"alphabet of {len(alphabet)} characters is too large to train on")
    initial = {c: chr(_INITIAL_BASE + i) for i, c in enumerate(alphabet)}
    continuation = {c: chr(_CONTINUATION_BASE + i) for i, c in enumerate(alphabet)}
    decode_symbol = {v: k for k, v in initial.items()} | {v: k for k, v in continuation.items()}

    def encode_word(word: str) -> str:
        return initial[word[0]] + "".join(continuation[c] for c in word[1:])

    def training_lines():
        # One line per distinct word, repeated by count; sorted so the input order is fixed too.
        for word, count in sorted(word_counts.items()):
            yield " ".join([encode_word(word)] * count)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # Both forms of every character, so any word made of seen characters is encodable.
        initial_alphabet=list(initial.values()) + list(continuation.values()),
        limit_alphabet=2 * len(alphabet),
        show_progress=False,
    )
    bpe.train_from_iterator(training_lines(), trainer=trainer, length=len(word_counts))

    vocab: dict[str, int] = {}
    for token, idx in bpe.get_vocab().items():
        if token in SPECIAL_TOKENS:
            vocab[token] = idx
        else:
            text = "".join(decode_symbol[c] for c in token)
            # Merges only join neighbours within a word, so a token is initial iff its first symbol is.
            vocab[text if ord(token[0]) < _CONTINUATION_BASE else "##" + text] = idx
    assert vocab[PAD] == 0 and vocab[UNK] == 1 and len(vocab) == bpe.get_vocab_size()

    # Built from a plain vocabulary, "[PAD]"/"[UNK]" are not added tokens, so the literal text
    # "[PAD]" in an input is split into "[", "pad", "]" and never becomes id 0.
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.enable_truncation(max_length)
    logger.debug(
        "trained WordPiece: %d words, %d characters, vocab %d", len(word_counts), len(alphabet), len(vocab)
    )
    return tokenizer
