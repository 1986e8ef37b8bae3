"""Roles measured against a lexicon nobody here wrote: AFINN (issue 17, item 5).

AFINN (Finn Aarup Nielsen; PyPI `afinn`, its word lists ship inside the package, so nothing is
downloaded at run time) gives English words a human valence score from -5 to +5. For every
lexicon word that the bundle's tokenizer keeps as exactly one component (one word piece between
[CLS] and [SEP]), the bundle's fp32 `encoder.onnx` is run on the word alone, and this module
reports the ROC AUC with which each role's probability (electron, proton, neutron) and the atom's
charge separate positive (score > 0) from negative (score < 0) words. Words scored 0 take no side
and are left out.

Single-piece words only: a word split into several pieces has several components, each with its
own role, and any way of pooling them would be a choice of ours rather than the model's. One
piece means the word's role is one output of the model, read as it is.

Torch-free (ONNX Runtime, NumPy, tokenizers, scikit-learn), like the service's path to a bundle.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import preprocess
from contract.bundle import ROLE_NAMES, Bundle, load_bundle

log = logging.getLogger(__name__)

__all__ = [
    "AFINN_FILES", "LexiconWord", "WordAtoms", "load_afinn", "single_piece_words", "word_atoms",
    "separation_aucs", "evaluate_bundle",
]

# The files inside the afinn package's data folder; "en" (AFINN-165) is the newest English list.
AFINN_FILES = {"en": "AFINN-en-165.txt", "en-111": "AFINN-111.txt", "en-96": "AFINN-96.txt", "da": "AFINN-da-32.txt"}


@dataclass(frozen=True)
class LexiconWord:
    word: str
    score: int
    token_id: int  # the word's one component


@dataclass(frozen=True)
class WordAtoms:
    """What the encoder gives each word (rows in the order of the words passed)."""

    roles: np.ndarray  # (N, 3) electron, proton, neutron probabilities of the word's component
    charge: np.ndarray  # (N,) the atom's charge


def load_afinn(language: str = "en") -> dict[str, int]:
    """The AFINN word list shipped inside the installed `afinn` package: word -> score (-5..5).

    Read from the package's own data file (tab-separated "word<TAB>score" lines) rather than
    through `afinn.Afinn`, which keeps the list in a private attribute and compiles a regular
    expression over all of it that is not needed here.
    """
    if language not in AFINN_FILES:
        raise ValueError(f"unknown AFINN list {language!r}; one of {sorted(AFINN_FILES)}")
    try:
        data = importlib.resources.files("afinn") / "data" / AFINN_FILES[language]
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the AFINN lexicon needs the `afinn` package (pip install -e '.[train]')") from None
    words: dict[str, int] = {}
    for number, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        word, _, score = line.rstrip("\n").rpartition("\t")
        if not word:
            raise ValueError(f"{AFINN_FILES[language]}: line {number} is not 'word<TAB>score': {line!r}")
        words[word] = int(score)
    return words


def single_piece_words(tokenizer, lexicon: Mapping[str, int], special_token_ids: Sequence[int] = ()) -> list[LexiconWord]:
    """The lexicon's words that the tokenizer encodes as exactly one component, in lexicon order.

    The ids in `special_token_ids` ([CLS], [SEP]: what the tokenizer adds around every text) are
    no components and do not count. A word that becomes the unknown token is dropped too: its one
    component stands for every unknown word, not for this one. So is a word whose piece an earlier
    word already has (the tokenizer's normalization can merge two spellings): the model sees one
    input, which must not count twice.
    """
    words = list(lexicon)
    specials = {int(i) for i in special_token_ids}
    unknown = getattr(tokenizer.model, "unk_token", None)
    unknown_id = tokenizer.token_to_id(unknown) if unknown else None
    kept: list[LexiconWord] = []
    seen: set[int] = set()
    for word, ids in zip(words, preprocess.tokenize(tokenizer, words)):
        pieces = [i for i in ids if i not in specials]
        if len(pieces) == 1 and pieces[0] != unknown_id and pieces[0] not in seen:
            kept.append(LexiconWord(word, int(lexicon[word]), int(pieces[0])))
            seen.add(pieces[0])
    log.info("%d of %d lexicon words are one component of this tokenizer", len(kept), len(words))
    return kept


def word_atoms(bundle: Bundle | Path | str, words: Sequence[str], *, batch_size: int = 256,
               threads: int | None = None) -> WordAtoms:
    """Run the bundle's fp32 `encoder.onnx` on each word alone ([CLS] word [SEP] for a backbone
    bundle) and read the role probabilities of its one component and the atom's charge.

    Each word must be one component of the bundle's tokenizer (`single_piece_words`). The words
    are batched; every row has the same length, so no row is padded and a batch gives each word
    what it gets alone.
    """
    import onnxruntime as ort

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    manifest = bundle.manifest
    if manifest.input.modality != "text" or bundle.tokenizer_path is None:
        raise ValueError(f"{bundle.path}: a text bundle is needed, this one takes {manifest.input.modality} inputs")
    tokenizer = preprocess.load_tokenizer(bundle.tokenizer_path)
    specials = set(manifest.input.special_token_ids)
    ids = preprocess.tokenize(tokenizer, list(words))
    rows, positions = [], []
    for word, row in zip(words, ids):
        where = [p for p, i in enumerate(row) if i not in specials]
        if len(where) != 1:
            raise ValueError(f"{word!r} is {len(where)} components of this bundle's tokenizer, not one")
        rows.append(row)
        positions.append(where[0])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(bundle.onnx_path), options, providers=["CPUExecutionProvider"])
    names = [spec.name for spec in manifest.onnx_inputs]
    charge_field = manifest.composition_fields.index("charge")
    roles = np.zeros((len(rows), len(manifest.role_names)), np.float32)
    charge = np.zeros(len(rows), np.float32)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r) for r in batch)
        input_ids = np.zeros((len(batch), width), np.int64)  # PAD_ID = 0
        mask = np.zeros((len(batch), width), np.int64)
        for r, row in enumerate(batch):
            input_ids[r, : len(row)], mask[r, : len(row)] = row, 1
        out_roles, out_composition = session.run(["roles", "composition"], dict(zip(names, (input_ids, mask))))
        at = np.asarray(positions[start : start + batch_size])
        roles[start : start + len(batch)] = out_roles[np.arange(len(batch)), at]
        charge[start : start + len(batch)] = out_composition[:, charge_field]
    return WordAtoms(roles, charge)


def separation_aucs(roles: np.ndarray, charge: np.ndarray, scores: Sequence[float],
                    role_names: Sequence[str] = ROLE_NAMES) -> dict:
    """ROC AUC of each role's probability and of the charge for positive (score > 0) against
    negative (score < 0) words; score-0 words are left out. Ties count one half (Mann-Whitney).

    AUC 1 means the value is higher on every positive word than on every negative one, 0 the
    reverse, 0.5 no separation. `best_role` is the role with the largest max(AUC, 1 - AUC), with
    the direction that reaches it ("positive" if the role is the likelier on positive words).
    """
    from sklearn.metrics import roc_auc_score

    roles, charge = np.asarray(roles, np.float64), np.asarray(charge, np.float64)
    scores = np.asarray(scores, np.float64)
    if roles.shape != (len(scores), len(role_names)) or charge.shape != (len(scores),):
        raise ValueError(f"roles {roles.shape} and charge {charge.shape} do not match {len(scores)} scores "
                         f"and {len(role_names)} roles")
    keep = scores != 0
    positive = scores[keep] > 0
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive == 0 or n_negative == 0:
        raise ValueError(f"an AUC needs positive and negative words; there are {n_positive} and {n_negative}")
    values = {name: roles[keep, r] for r, name in enumerate(role_names)}
    values["charge"] = charge[keep]
    auc = {name: float(roc_auc_score(positive, value)) for name, value in values.items()}
    best = max(role_names, key=lambda name: max(auc[name], 1.0 - auc[name]))
    return {
        "words": n_positive + n_negative,
        "positives": n_positive,
        "negatives": n_negative,
        "auc": auc,
        "separation": {name: abs(value - 0.5) for name, value in auc.items()},  # |AUC - 0.5|
        "mean_on_positive": {name: float(value[positive].mean()) for name, value in values.items()},
        "mean_on_negative": {name: float(value[~positive].mean()) for name, value in values.items()},
        "best_role": {
            "role": best,
            "auc": max(auc[best], 1.0 - auc[best]),
            "direction": "positive" if auc[best] >= 0.5 else "negative",
        },
    }


def evaluate_bundle(bundle_dir: Path | str, *, language: str = "en", batch_size: int = 256,
                    threads: int | None = None) -> dict:
    """`separation_aucs` for a bundle on the AFINN words that are one component of its tokenizer,
    with the bundle's name and version and how many lexicon words there were."""
    bundle = load_bundle(bundle_dir)
    if bundle.tokenizer_path is None:
        raise ValueError(f"{bundle.path}: a text bundle is needed, this one has no tokenizer.json")
    lexicon = load_afinn(language)
    tokenizer = preprocess.load_tokenizer(bundle.tokenizer_path)
    single = single_piece_words(tokenizer, lexicon, bundle.manifest.input.special_token_ids)
    words = [w for w in single if w.score]  # a score of 0 takes no side
    atoms = word_atoms(bundle, [w.word for w in words], batch_size=batch_size, threads=threads)
    result = separation_aucs(atoms.roles, atoms.charge, [w.score for w in words], bundle.manifest.role_names)
    return {
        "bundle": {"path": str(bundle.path), "name": bundle.manifest.name, "version": bundle.manifest.version,
                   "weight": bundle.manifest.potential.weight, "backbone": bundle.manifest.training.backbone},
        "lexicon": {"name": AFINN_FILES[language], "package": f"afinn {importlib.metadata.version('afinn')}",
                    "words": len(lexicon),
                    "single_piece": len(single)},
        **result,
    }
