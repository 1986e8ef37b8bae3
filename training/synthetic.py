"""The synthetic "periodic table" dataset generator.

Every token type has a hidden ground-truth role (electron, proton or neutron) and the label of a
sample depends only on how many components of each role it has. A model whose learned roles
explain its predictions should therefore recover the hidden roles; DESIGN section 3 uses this
("role recovery") to judge whether role assignments are meaningful.

Generation of one sample (all draws from one seeded ``numpy.random.Generator``):

1. length n ~ uniform integer in [min_len, max_len];
2. role proportions p ~ Dirichlet(1, 1, 1);
3. role counts (E, Z, N) ~ Multinomial(n, p), order (electron, proton, neutron);
   the whole sample is redrawn when Z == E, so every sample has a definite charge sign;
4. the tokens of each role are drawn uniformly from that role's token types and the sequence
   is shuffled, so position carries no information.

Label = 2 * int(Z > E) + int(3 * N > n): "cation" means more protons than electrons, "heavy"
means neutrons make up more than a third of the components. With Dirichlet(1,1,1) about 4/9 of
the samples are heavy and half are cations.

Token types are named neutrally ("t00".."t29") and assigned to roles by a seeded permutation, so
a token's name says nothing about its role.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROLE_NAMES = ("electron", "proton", "neutron")
ELECTRON, PROTON, NEUTRON = 0, 1, 2
# Index = 2 * cation + heavy, matching ``label_of``.
LABEL_NAMES = ["anion-light", "anion-heavy", "cation-light", "cation-heavy"]

N_TYPES = 30
N_SAMPLES = 6000
MIN_LEN, MAX_LEN = 8, 32
# The dataset content is fixed; ``split_seed`` in training.data only changes the split.
GENERATOR_SEED = 0


@dataclass
class SyntheticData:
    texts: list[str]  # N texts, tokens joined by single spaces
    labels: np.ndarray  # int64 (N,)
    counts: np.ndarray  # int64 (N, 3): (E, Z, N) per sample
    token_names: list[str]  # T names, "t00".."t29"
    token_roles: np.ndarray  # int64 (T,): role of token_names[i]


def token_names(n_types: int = N_TYPES) -> list[str]:
    return [f"t{i:02d}" for i in range(n_types)]


def label_of(electrons: int, protons: int, neutrons: int, n: int) -> int:
    """2 * int(Z > E) + int(3 * N > n); indexes ``LABEL_NAMES``."""
    return 2 * int(protons > electrons) + int(3 * neutrons > n)


def generate(
    n_samples: int = N_SAMPLES,
    *,
    seed: int = GENERATOR_SEED,
    n_types: int = N_TYPES,
    min_len: int = MIN_LEN,
    max_len: int = MAX_LEN,
) -> SyntheticData:
    """Generate the synthetic dataset (deterministic for a given seed)."""
    if n_types % 3:
        raise ValueError(f"n_types must be a multiple of 3, got {n_types}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = np.random.default_rng(seed)
    names = token_names(n_types)
    # A seeded permutation: types perm[0:10] are electrons, perm[10:20] protons, perm[20:30] neutrons.
    perm = rng.permutation(n_types)
    per_role = n_types // 3
    roles = np.empty(n_types, dtype=np.int64)
    roles[perm] = np.repeat(np.arange(3), per_role)
    by_role = np.stack([np.flatnonzero(roles == r) for r in range(3)])  # (3, per_role) type ids

    texts: list[str] = []
    labels = np.empty(n_samples, dtype=np.int64)
    counts = np.empty((n_samples, 3), dtype=np.int64)
    for i in range(n_samples):
        while True:
            n = int(rng.integers(min_len, max_len + 1))
            c = rng.multinomial(n, rng.dirichlet((1.0, 1.0, 1.0)))
            if c[PROTON] != c[ELECTRON]:
                break
        role_seq = np.repeat(np.arange(3), c)  # (n,) e.g. [0,0,1,2,2,2]
        tokens = by_role[role_seq, rng.integers(0, per_role, size=n)]  # uniform type within role
        rng.shuffle(tokens)
        texts.append(" ".join(names[t] for t in tokens))
        counts[i] = c
        labels[i] = label_of(c[ELECTRON], c[PROTON], c[NEUTRON], n)
    return SyntheticData(texts, labels, counts, names, roles)
