"""Evaluation of a trained run: accuracy, the embedding's geometry, and role recovery.

Geometry is measured on L2-normalised embeddings for every method, so the plain model's
unnormalised pooled states and the atom model's sphere are compared on the same footing.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier

from contract.index import AtomIndex, IndexSpec
from model import role_usage

from .checkpoint import load_model, load_run_dataset, save_json
from .data import Dataset
from .train import predict, split_states

log = logging.getLogger(__name__)

KNN_NEIGHBORS = 5
GEOMETRY_SAMPLE = 2000  # silhouette and uniformity are O(N^2): a seeded sample keeps them quick


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def uniformity(embedding: np.ndarray) -> float:
    """log E exp(-2 ||x - y||^2) over distinct pairs of unit vectors (lower = more uniform)."""
    x = normalise(embedding.astype(np.float64))
    sq = np.maximum(2.0 - 2.0 * (x @ x.T), 0.0)
    upper = np.triu_indices(len(x), k=1)
    return float(np.log(np.mean(np.exp(-2.0 * sq[upper]))))


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    knn = KNeighborsClassifier(n_neighbors=KNN_NEIGHBORS).fit(normalise(train_x), train_y)
    return float((knn.predict(normalise(test_x)) == test_y).mean())


def nearest_neighbour_stats(
    train_x: np.ndarray, train_radius: np.ndarray, test_x: np.ndarray, test_radius: np.ndarray
) -> dict[str, float]:
    """Distance from each test atom to its nearest training atom, in units of their contact distance."""
    rows, distance = AtomIndex(train_x, spec=IndexSpec("flat")).nearest(test_x, 1)  # exact, as served
    nearest, distance = rows[:, 0], distance[:, 0].astype(np.float64)
    ratio = distance / (test_radius + train_radius[nearest])
    return {
        "nn_distance_median": float(np.median(distance)),
        "nn_contact_ratio_median": float(np.median(ratio)),
        "nn_contact_ratio_p10": float(np.percentile(ratio, 10)),
        "nn_overlap_fraction": float((ratio < 1.0).mean()),
    }


def radius_stats(radius: np.ndarray, lengths: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """What the bank radii say: their spread (coefficient of variation, ddof 1), their rank
    correlation with the number of components, and the share of their variance that the class
    explains (eta squared), with each class's mean."""
    from scipy.stats import spearmanr

    radius = radius.astype(np.float64)
    total = float(((radius - radius.mean()) ** 2).sum())
    means = [float(radius[labels == c].mean()) if (labels == c).any() else None for c in range(n_classes)]
    between = sum(float((labels == c).sum()) * (m - radius.mean()) ** 2 for c, m in enumerate(means) if m is not None)
    varies = radius.std() > 0 and lengths.std() > 0
    return {
        "radius_mean": float(radius.mean()),
        "radius_cv": float(radius.std(ddof=1) / radius.mean()) if len(radius) > 1 else None,
        "radius_length_spearman": float(spearmanr(radius, lengths).statistic) if varies else None,
        "radius_class_eta2": between / total if total > 0 else None,
        "radius_by_class": means,
    }


def role_recovery(roles: np.ndarray, mask: np.ndarray, token_ids: np.ndarray, true_roles: np.ndarray) -> float:
    """Agreement of argmax roles with the ground truth, best over the 6 role permutations."""
    predicted = roles.argmax(-1)[mask]  # (components,)
    truth = true_roles[token_ids[mask]]
    keep = truth >= 0
    predicted, truth = predicted[keep], truth[keep]
    return max(float((np.array(perm)[predicted] == truth).mean()) for perm in itertools.permutations(range(3)))


def evaluate_run(run_dir: Path, data: Dataset | None = None, device: str = "cpu", states: dict | None = None) -> dict:
    """Compute every metric for a run on its test split; writes run_dir/evaluation.json.
    `states`: a frozen backbone's states of the splits, as `train` takes them."""
    run_dir = Path(run_dir)
    data = data or load_run_dataset(run_dir)
    model = load_model(run_dir)
    config = model.config
    torch_device = torch.device(device)
    model.to(torch_device)
    states = split_states(model, data, ("train", "test"), torch_device, states, progress=False)
    train = predict(model, data.train, config.modality, torch_device, states=states.get("train"))
    test = predict(model, data.test, config.modality, torch_device, states=states.get("test"))

    rng = np.random.default_rng(0)
    sample = rng.choice(len(data.test.labels), size=min(GEOMETRY_SAMPLE, len(data.test.labels)), replace=False)
    test_labels = data.test.labels
    results: dict = {
        "dataset": data.name,
        "head": config.head,
        "potential_weight": config.potential_weight,
        "test_accuracy": float((test["logits"].argmax(1) == test_labels).mean()),
        "knn_accuracy": knn_accuracy(train["embedding"], data.train.labels, test["embedding"], test_labels),
        "silhouette": float(silhouette_score(normalise(test["embedding"][sample]), test_labels[sample]))
        if len(np.unique(test_labels[sample])) > 1
        else None,
        "uniformity": uniformity(test["embedding"][sample]),
        "role_recovery": None,
        "role_usage": None,
    }
    if config.head == "atom":
        train_radius, test_radius = train["composition"][:, 5], test["composition"][:, 5]
        results.update(nearest_neighbour_stats(train["embedding"], train_radius, test["embedding"], test_radius))
        components = train["roles"].sum(axis=(1, 2))  # real components per item (special tokens carry no role)
        results.update(radius_stats(train_radius, components, data.train.labels, len(data.label_names)))
        results["role_usage"] = role_usage(torch.as_tensor(test["roles"]), torch.as_tensor(data.test.mask)).tolist()
        if data.true_roles is not None:
            results["role_recovery"] = role_recovery(test["roles"], data.test.mask, data.test.inputs, data.true_roles)
    save_json(run_dir / "evaluation.json", results)
    return results
