"""Atom Modeling: each data point is an atom built from its components (DESIGN section 2).

Reading order: roles -> composition -> nucleus (the embedding) -> electron shell (the radius)
-> AtomModel (encoder + atom head + classifier) -> the loss.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import AtomConfig
from .backbone import BackboneEncoder
from .encoders import ComponentEncoder
from .potentials import batch_potential_energy, pair_distances


class AtomOutput(NamedTuple):  # a tuple, so DistributedDataParallel can find its tensors
    embedding: torch.Tensor  # (B, k) nucleus position, on the sphere of radius config.sphere_radius
    roles: torch.Tensor  # (B, n, 3) electron/proton/neutron probabilities, 0 at padding
    composition: torch.Tensor  # (B, 6) electrons, protons, neutrons, mass, charge, radius
    logits: torch.Tensor  # (B, C)
    element_logits: torch.Tensor | None = None  # (B, C) the class read from the composition alone
    projected: torch.Tensor | None = None  # (B, P) where the potential acts, if potential_projection > 0

    @property
    def charge(self) -> torch.Tensor:
        return self.composition[:, 4]

    @property
    def radius(self) -> torch.Tensor:
        return self.composition[:, 5]


def token_sum(values: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n[, d]) summed over the n components, each weighted by `weight` (B, n) if given.

    Written as a batched matrix product rather than a sum over axis 1: ONNX Runtime's ReduceSum
    over the middle axis rounds differently with the batch size B, a batched MatMul reduces each
    input on its own. One input's embedding then does not depend on which inputs share its batch,
    bit for bit, and int8 cannot turn a last-bit difference into a rounding step (issue 22).
    """
    vector = values.dim() == 2
    columns = values.unsqueeze(-1) if vector else values  # (B, n, d)
    rows = (torch.ones_like(columns[..., 0]) if weight is None else weight.to(columns.dtype)).unsqueeze(1)  # (B, 1, n)
    total = torch.matmul(rows, columns).squeeze(1)  # (B, d)
    return total.squeeze(-1) if vector else total


class AtomHead(nn.Module):
    """Maps contextual component states h (B, n, d) to an atom: roles, composition, z, R."""

    def __init__(self, config: AtomConfig):
        super().__init__()
        self.config = config
        # W_r, as a small MLP. With role_source="component" it reads each component's own
        # embedding, not its context: a contextual role head can encode the whole input's class
        # in the role counts instead of the component's nature (seen on `synthetic`: role
        # recovery 0.44 with contextual roles).
        self.role = nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.GELU(), nn.Linear(config.d_model, 3))
        self.nucleus = nn.Linear(config.d_model, config.embedding_dim)  # W_z
        if config.radius_mode == "shell":
            self.shell = nn.Linear(config.d_model, config.embedding_dim)  # W_u, electron offsets
        # Set for an export only (`tabulated_roles`): a component role read from its own token
        # embedding depends on the token id alone, so the graph looks its logits up (V, 3)
        # instead of running the role MLP on every token. Not a parameter: never saved or trained.
        self.role_table: torch.Tensor | None = None

    def roles(self, source: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.role_table is not None and ids is not None:
            logits = F.embedding(ids, self.role_table)  # (B, n, 3), the MLP's output per token id
        else:
            logits = self.role(source) / self.config.role_temperature  # (B, n, 3)
        if self.training and self.config.gumbel:
            # hard one-hot forward, soft gradient backward (straight-through)
            pi = F.gumbel_softmax(logits, tau=1.0, hard=True)
        else:
            pi = torch.softmax(logits, dim=-1)
        return pi * mask[..., None]

    def forward(
        self, h: torch.Tensor, e: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h: contextual states, e: the components' own embeddings, both (B, n, d); ids: the
        token ids (text), which `role_table` reads."""
        config = self.config
        mask = mask.to(h.dtype)
        component = config.role_source == "component"
        pi = self.roles(e if component else h, mask, ids if component else None)  # (B, n, 3)
        electrons, protons, neutrons = token_sum(pi).unbind(-1)  # soft counts, (B,) each
        n_real = token_sum(mask).clamp(min=1.0)
        mass = protons + neutrons
        charge = (protons - electrons) / n_real  # normalised: long inputs do not dominate

        # Nucleus: nucleon-weighted mean of the components, projected and put on a fixed sphere
        # (a free scale would let the potential be satisfied by rescaling the whole space).
        weight = mask * (pi[..., 1] + pi[..., 2] + config.nucleon_floor)  # (B, n)
        pooled = token_sum(h, weight) / token_sum(weight)[:, None]  # (B, d)
        z = self.nucleus(pooled)
        z = config.sphere_radius * z / torch.sqrt((z * z).sum(-1, keepdim=True) + 1e-12)  # (B, k)

        radius = self.radius(h, z, pi, electrons)  # (B,)

        composition = torch.stack([electrons, protons, neutrons, mass, charge, radius], dim=-1)  # (B, 6)
        return z, pi, composition

    def radius(self, h: torch.Tensor, z: torch.Tensor, pi: torch.Tensor, electrons: torch.Tensor) -> torch.Tensor:
        """The electron shell sets the radius, bounded in [r_min, r_max] so atoms cannot grow
        without limit to satisfy the exclusion term."""
        config = self.config
        weight = pi[..., 0] / (electrons + config.nucleon_floor)[:, None]  # (B, n) electron shares
        if config.radius_mode == "span":
            # each component's own position on the sphere, by the map that places the nucleus
            p = self.nucleus(h)
            p = config.sphere_radius * p / torch.sqrt((p * p).sum(-1, keepdim=True) + 1e-12)  # (B, n, k)
            spread_sq = ((p - z[:, None, :]) ** 2).sum(-1)  # (B, n), at most (2 * sphere_radius)^2
            span = torch.sqrt(token_sum(spread_sq, weight) + 1e-12) / (2.0 * config.sphere_radius)  # (B,) in [0, 1]
            return config.r_min + (config.r_max - config.r_min) * span.clamp(max=1.0)
        # "shell": RMS length of free electron offsets W_u h_i
        offsets_sq = (self.shell(h) ** 2).sum(-1)  # (B, n)
        shell_rms = torch.sqrt(token_sum(offsets_sq, weight) / config.embedding_dim + 1e-12)  # per-dimension RMS
        return config.r_min + (config.r_max - config.r_min) * torch.tanh(shell_rms)


class AtomModel(nn.Module):
    """Encoder + atom head + a linear classifier on the atom.

    The classifier reads the nucleus position and the atom's composition fractions: an
    element is identified by what it is made of, which also gives the role head a task signal.
    head="plain" swaps the atom head for mean pooling (the outside baseline, no roles).
    """

    def __init__(self, config: AtomConfig):
        super().__init__()
        self.config = config
        self.encoder = BackboneEncoder(config) if config.backbone_config else ComponentEncoder(config)
        if config.head == "atom":
            self.atom = AtomHead(config)
            self.classifier = nn.Linear(config.embedding_dim + 3, config.num_classes)
            # An element is identified by what it is made of: this head reads only the role
            # fractions, and its loss (part of the atom term) is what makes roles mean something.
            self.element = nn.Linear(3, config.num_classes)
            # fractions differ by a few hundredths between classes: a learnable gain lets a
            # linear head separate them without waiting for huge weights to grow
            self.element_scale = nn.Parameter(torch.tensor(math.log(20.0)))
            # z is on a fixed sphere, so the classifier needs a learnable temperature
            self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            if config.potential_projection > 0:
                # the potential's own space (a projection head): only the loss reads it, so the
                # exported embedding and the classifier stay on z
                self.projection = nn.Linear(config.embedding_dim, config.potential_projection)
        elif config.head == "plain":
            self.classifier = nn.Linear(config.d_model, config.num_classes)
        else:
            raise ValueError(f"unknown head {config.head!r}")

    def component_mask(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, n) bool: the real components, i.e. the mask without the tokenizer's special tokens."""
        for special in self.config.special_token_ids:
            mask = mask & (inputs != special)
        return mask

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor, states: torch.Tensor | None = None) -> AtomOutput:
        """`states`: a frozen backbone's own states for these inputs, computed once and reused."""
        h, e = self.encoder(inputs, mask) if states is None else self.encoder(inputs, mask, states)  # (B, n, d) each
        if self.config.head == "plain":
            # mean over every attended token, [CLS]/[SEP] included: the sentence-transformers way
            m = mask.to(h.dtype)
            pooled = token_sum(h, m) / token_sum(m).clamp(min=1.0)[:, None]  # (B, d)
            batch, n = mask.shape
            roles = torch.zeros(batch, n, 3, dtype=h.dtype, device=h.device)
            composition = torch.zeros(batch, 6, dtype=h.dtype, device=h.device)
            return AtomOutput(pooled, roles, composition, self.classifier(pooled))
        mask = self.component_mask(inputs, mask)
        z, pi, composition = self.atom(h, e, mask, inputs if self.config.modality == "text" else None)
        logits, fractions = self.classify(z, composition)
        element_logits = self.element(self.element_scale.exp() * (fractions - 1.0 / 3.0))
        projected = self.project(z) if self.config.potential_projection > 0 else None
        return AtomOutput(z, pi, composition, logits, element_logits, projected)

    @contextlib.contextmanager
    def tabulated_roles(self) -> Iterator[bool]:
        """Within: the atom head reads each text component's role logits from a table over the
        vocabulary (the role MLP run once on every token embedding), as an exported graph should;
        yields whether it applies (text, roles read from the component itself)."""
        head = getattr(self, "atom", None)
        table = self.encoder.token_embeddings() if head is not None else None
        if table is None or self.config.role_source != "component":
            yield False
            return
        with torch.no_grad():
            head.role_table = head.role(table) / self.config.role_temperature  # (V, 3)
        try:
            yield True
        finally:
            head.role_table = None

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """(B, k) -> (B, P) on the sphere of the same radius as z, so the atoms' radii (distances
        on the embedding sphere) keep their scale there."""
        p = self.projection(z / self.config.sphere_radius)
        return self.config.sphere_radius * p / torch.sqrt((p * p).sum(-1, keepdim=True) + 1e-12)

    def classify(self, z: torch.Tensor, composition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, C) from the atom alone (what an exported model outputs), and the
        electron/proton/neutron fractions (B, 3)."""
        n_real = composition[:, :3].sum(1, keepdim=True).clamp(min=1.0)  # role mass = real components
        fractions = composition[:, :3] / n_real
        features = torch.cat([z / self.config.sphere_radius, fractions], dim=-1)
        return self.logit_scale.exp() * self.classifier(features), fractions


def role_usage(roles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of all real components assigned to each role: (3,), sums to 1."""
    # each real component's probabilities sum to 1 and padding / special tokens are 0, so the
    # total role mass counts the components whatever mask the caller holds
    del mask
    totals = roles.sum(dim=(0, 1))
    return totals / totals.sum().clamp(min=1e-12)


def bond_weights(labels: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """(B, B) how strongly each pair should bond: same label when labels are known, else the
    agreement p_a . p_b of the predicted class distributions (unsupervised)."""
    if labels is not None:
        return (labels[:, None] == labels[None, :]).to(logits.dtype)
    probs = torch.softmax(logits, dim=-1)
    return probs @ probs.T


def limit_valence(bond: torch.Tensor, embedding: torch.Tensor, valence: int) -> torch.Tensor:
    """Keep each atom's bonds to its `valence` nearest bonding partners (a bond either atom
    chooses counts): with every same-label pair bonded, the attraction grows with class size
    and packs few-class datasets into a small cap of the sphere."""
    batch = bond.shape[0]
    with torch.no_grad():
        r = pair_distances(embedding)
        r = r.masked_fill((bond <= 0) | torch.eye(batch, dtype=torch.bool, device=bond.device), float("inf"))
        nearest = r.topk(min(valence, batch - 1), dim=1, largest=False).indices  # (B, valence)
        chosen = torch.zeros_like(r, dtype=torch.bool).scatter_(1, nearest, True) & torch.isfinite(r)
        chosen = chosen | chosen.T
    return bond * chosen


def potential_space(output: AtomOutput) -> torch.Tensor:
    """Where the potential acts: the learned projection when the model has one, else the embedding."""
    return output.embedding if output.projected is None else output.projected


def batch_bonds(
    output: AtomOutput, labels: torch.Tensor, config: AtomConfig, supervised_bonds: bool | None = None
) -> torch.Tensor:
    """(B, B) bond weights of a batch: by config.bond_source unless `supervised_bonds` says,
    valence-limited to the nearest partners in the space where the potential acts."""
    supervised = config.bond_source == "label" if supervised_bonds is None else supervised_bonds
    bond = bond_weights(labels if supervised else None, output.logits.detach())
    if config.valence > 0:
        bond = limit_valence(bond, potential_space(output).detach(), config.valence)
    return bond


def atom_loss(
    output: AtomOutput,
    labels: torch.Tensor,
    mask: torch.Tensor,
    config: AtomConfig,
    supervised_bonds: bool | None = None,
    potential_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """L = CE + lambda * (U + w_usage * KL(role usage || uniform) + w_element * CE(element head));
    lambda = potential_weight * potential_scale (the scale is the warm-up, 0 -> 1).
    potential_weight = 0 is exactly CE."""
    task = F.cross_entropy(output.logits, labels)
    zero = task.new_zeros(())
    if config.head == "plain" or config.potential_weight == 0.0:
        # plain and baseline: nothing of the atom term is computed, so their step time is a
        # fair reference for the potential's cost. (A warm-up scale of 0 still computes it: the
        # graph, and DDP's view of the used parameters, stays the same every step.)
        return {"loss": task, "task": task, "potential": zero, "role_balance": zero, "element": zero, "lambda": zero}
    weight = config.potential_weight * potential_scale
    bond = batch_bonds(output, labels, config, supervised_bonds)
    potential = batch_potential_energy(potential_space(output), output.radius, output.charge, bond, config)
    usage = role_usage(output.roles, mask)
    role_balance = (usage * torch.log(usage.clamp(min=1e-8) * 3.0)).sum()  # KL to uniform, >= 0
    element = F.cross_entropy(output.element_logits, labels)
    regulariser = potential + config.role_usage_weight * role_balance + config.element_weight * element
    total = task + weight * regulariser
    return {
        "loss": total,
        "task": task,
        "potential": potential.detach(),
        "role_balance": role_balance.detach(),
        "element": element.detach(),
        "lambda": task.new_tensor(weight),
    }
