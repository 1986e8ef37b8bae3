"""What decides the long-document figures (benchmarks/documents.py): the documents and the kNN vote."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import documents  # noqa: E402


def test_documents_are_8_to_40_tweets_of_one_label_and_seeded():
    labels = np.asarray([i % 3 for i in range(300)])
    texts = [f"c{label}x{i}" for i, label in enumerate(labels)]
    made, made_labels = documents.make_documents(texts, labels, 50, seed=1)
    assert len(made) == 50
    for text, label in zip(made, made_labels):
        words = text.split()
        assert 8 <= len(words) <= 40
        assert {w.split("x")[0] for w in words} == {f"c{label}"}  # one label throughout
        assert len(set(words)) == len(words)  # no tweet twice in a document
    again, _ = documents.make_documents(texts, labels, 50, seed=1)
    other, _ = documents.make_documents(texts, labels, 50, seed=2)
    assert again == made and other != made


def test_the_vote_is_the_majority_of_the_nearest():
    bank = np.asarray([[0.0, 0], [0.1, 0], [0.2, 0], [5, 5], [5.1, 5]], np.float32)
    labels = np.asarray([0, 0, 1, 1, 1])
    queries = np.asarray([[0.05, 0], [5, 5.1]], np.float32)
    assert documents.knn_predict(bank, labels, queries, k=3).tolist() == [0, 1]
    assert documents.knn_predict(bank, labels, queries[:1], k=2).tolist() == [0]
    # a tie (one vote each) goes to the lower label
    assert documents.knn_predict(bank[1:3], labels[1:3], queries[:1], k=2).tolist() == [0]
