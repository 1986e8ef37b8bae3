"""Tests for contract/preprocess.py: patches and tokenization shared by training and serving."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from contract.preprocess import PAD_ID, load_tokenizer, patchify, tokenize, unpatchify


def test_patchify_order_is_row_major_grid_of_row_major_patches():
    image = np.arange(16).reshape(1, 4, 4)
    patches = patchify(image, (2, 2))
    assert patches.shape == (1, 4, 4)
    np.testing.assert_array_equal(
        patches[0],
        [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]],
    )


def test_patchify_non_square_patches_and_dtype():
    images = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    patches = patchify(images, (2, 3))
    assert patches.shape == (2, 4, 6)  # (4/2)*(6/3) patches of 2*3 values
    assert patches.dtype == np.float32
    np.testing.assert_array_equal(patches[0, 1], [3, 4, 5, 9, 10, 11])  # top-right patch
    np.testing.assert_array_equal(patches[1, 2], 24 + np.array([12, 13, 14, 18, 19, 20]))


@pytest.mark.parametrize("image_shape,patch_shape", [((8, 8), (2, 2)), ((28, 28), (4, 4)), ((6, 4), (3, 1))])
def test_unpatchify_round_trip(image_shape, patch_shape):
    images = np.random.default_rng(0).integers(0, 256, size=(5, *image_shape))
    patches = patchify(images, patch_shape)
    ph, pw = patch_shape
    assert patches.shape == (5, (image_shape[0] // ph) * (image_shape[1] // pw), ph * pw)
    np.testing.assert_array_equal(unpatchify(patches, image_shape, patch_shape), images)


def test_patchify_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"8x8 is not divisible by patch shape 3x3"):
        patchify(np.zeros((1, 8, 8)), (3, 3))
    with pytest.raises(ValueError, match=r"\(N, H, W\).*\(8, 8\)"):
        patchify(np.zeros((8, 8)), (2, 2))
    with pytest.raises(ValueError, match="expected \\(N, 16, 4\\)"):
        unpatchify(np.zeros((1, 16, 5)), (8, 8), (2, 2))


def _word_level(max_length=None) -> Tokenizer:
    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3, "c": 4}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if max_length:
        tok.enable_truncation(max_length)
    return tok


def test_tokenize_saved_tokenizer_keeps_truncation_and_does_not_pad(tmp_path):
    path = tmp_path / "tokenizer.json"
    _word_level(max_length=3).save(str(path))
    tok = load_tokenizer(path)
    assert tokenize(tok, ["a b", "c a b c a", "zzz", ""]) == [[2, 3], [4, 2, 3], [1], []]
    assert tokenize(tok, []) == []


def test_tokenize_never_emits_padding_id():
    # "[PAD]" is a word of this vocabulary, but id 0 must only ever mean padding.
    assert PAD_ID == 0
    assert tokenize(_word_level(), ["a [PAD] b", "[PAD]"]) == [[2, 3], []]


def test_tokenize_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="single str"):
        tokenize(_word_level(), "a b")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        tokenize(_word_level(), ["a", 3])
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "missing.json")


def test_preprocess_does_not_import_torch():
    code = "import sys, contract.preprocess; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_one_text_is_encoded_as_it_is_inside_a_batch():
    """A single text takes the tokenizer's `encode` (cheaper than `encode_batch`): the same ids,
    offsets and truncation flag as the same text in a batch."""
    from contract.preprocess import encode

    tok = _word_level(max_length=3)
    texts = ["a b", "c a b c a", "a [PAD] b", "", "zzz c"]
    batched = encode(tok, texts)
    assert [encode(tok, [text])[0] for text in texts] == batched
    assert batched[1] == ([4, 2, 3], [(0, 1), (2, 3), (4, 5)], True) and batched[2][0] == [2, 3]
