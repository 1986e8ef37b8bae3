"""Invariants of the atom model: padding, roles, composition, permutation, the baseline loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import AtomConfig, AtomModel, AtomOutput, atom_loss

torch.manual_seed(0)


def tiny(modality: str, **overrides) -> AtomModel:
    config = AtomConfig(
        modality=modality, vocab_size=40, component_dim=3, max_components=20, num_classes=3,
        d_model=16, n_layers=2, n_heads=2, embedding_dim=8, dropout=0.0, **overrides,
    )
    return AtomModel(config).eval()


def batch(modality: str, lengths=(5, 9, 3, 7)):
    n = max(lengths)
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, n)
    if modality == "text":
        inputs = torch.randint(2, 40, (len(lengths), n)) * mask
    else:
        inputs = torch.randn(len(lengths), n, 3) * mask[..., None]
    return inputs, mask


@pytest.mark.parametrize("modality", ["text", "numeric"])
def test_appending_padding_changes_no_output_and_padding_has_zero_role_mass(modality):
    model = tiny(modality)
    inputs, mask = batch(modality)
    pad = 6
    if modality == "text":
        padded = F.pad(inputs, (0, pad))
    else:
        padded = F.pad(inputs, (0, 0, 0, pad), value=7.0)  # junk values under the mask must not leak
    padded_mask = F.pad(mask, (0, pad))
    with torch.no_grad():
        a, b = model(inputs, mask), model(padded, padded_mask)
    assert torch.allclose(a.embedding, b.embedding, atol=1e-5)
    assert torch.allclose(a.composition, b.composition, atol=1e-5)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.roles, b.roles[:, : inputs.shape[1]], atol=1e-6)
    assert float(b.roles[~padded_mask].abs().sum()) == 0.0


@pytest.mark.parametrize("modality", ["text", "numeric"])
def test_roles_sum_to_one_and_soft_counts_sum_to_component_count(modality):
    model = tiny(modality)
    inputs, mask = batch(modality)
    with torch.no_grad():
        out = model(inputs, mask)
    sums = out.roles.sum(-1)
    assert torch.allclose(sums[mask], torch.ones(int(mask.sum())), atol=1e-6)
    electrons, protons, neutrons, mass, charge, radius = out.composition.unbind(-1)
    n_real = mask.sum(1).float()
    assert torch.allclose(electrons + protons + neutrons, n_real, atol=1e-5)
    assert torch.allclose(mass, protons + neutrons)
    assert torch.allclose(charge, (protons - electrons) / n_real, atol=1e-6)
    config = model.config
    assert ((radius >= config.r_min) & (radius <= config.r_max)).all()
    assert torch.allclose(out.embedding.norm(dim=1), torch.full((4,), config.sphere_radius), atol=1e-5)


@pytest.mark.parametrize("modality", ["text", "numeric"])
def test_permuting_the_batch_permutes_the_outputs(modality):
    model = tiny(modality)
    inputs, mask = batch(modality)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a, b = model(inputs, mask), model(inputs[perm], mask[perm])
    for name in ("embedding", "roles", "composition", "logits"):
        assert torch.allclose(getattr(a, name)[perm], getattr(b, name), atol=1e-5), name


def test_lambda_zero_loss_is_plain_cross_entropy():
    inputs, mask = batch("text")
    labels = torch.tensor([0, 1, 2, 1])
    baseline = tiny("text", potential_weight=0.0)
    out = baseline(inputs, mask)
    losses = atom_loss(out, labels, mask, baseline.config)
    assert float(losses["loss"].detach()) == pytest.approx(float(F.cross_entropy(out.logits, labels).detach()), abs=1e-7)


def test_plain_head_is_mean_pooling_with_no_roles():
    model = tiny("numeric", head="plain")
    inputs, mask = batch("numeric")
    with torch.no_grad():
        out = model(inputs, mask)
        h, _ = model.encoder(inputs, mask)
    expected = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(out.embedding, expected, atol=1e-6)
    assert float(out.roles.abs().sum()) == 0.0


def test_gumbel_roles_are_one_hot_in_training_and_soft_in_eval():
    model = tiny("text", gumbel=True)
    inputs, mask = batch("text")
    model.train()
    roles = model(inputs, mask).roles[mask]
    assert set(roles.unique().tolist()) <= {0.0, 1.0} and torch.allclose(roles.sum(-1), torch.ones(len(roles)))
    model.eval()
    with torch.no_grad():
        soft = model(inputs, mask).roles[mask]
    assert ((soft > 0) & (soft < 1)).any()


def test_the_model_and_the_bundle_schema_name_roles_and_composition_alike():
    from model.config import COMPOSITION_FIELDS, ROLE_NAMES
    from contract import bundle

    assert ROLE_NAMES == bundle.ROLE_NAMES and COMPOSITION_FIELDS == bundle.COMPOSITION_FIELDS
    model = tiny("text")
    inputs, mask = batch("text")
    with torch.no_grad():
        out = model(inputs, mask)
    assert torch.equal(out.charge, out.composition[:, COMPOSITION_FIELDS.index("charge")])
    assert torch.equal(out.radius, out.composition[:, COMPOSITION_FIELDS.index("radius")])


def test_valence_keeps_each_atoms_nearest_bonding_partners_only():
    from model.atom import limit_valence

    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.5, 0.0], [0.2, 0.0]])
    labels = torch.tensor([0, 0, 0, 0, 1])  # atom 4 sits next to atom 0 but has another label
    bond = (labels[:, None] == labels[None, :]).float()
    kept = limit_valence(bond, z, valence=1)
    expected = torch.zeros(5, 5)
    for a, b in [(0, 1), (2, 3)]:  # nearest same-label partner of each; 1's nearest is 0
        expected[a, b] = expected[b, a] = 1.0
    assert torch.equal(kept, expected)
    assert torch.equal(limit_valence(bond, z, valence=10), bond * (1 - torch.eye(5)))  # all partners


def test_the_loss_of_three_atoms_equals_the_energy_computed_by_hand():
    """Three atoms on the unit circle, labels (0, 1, 0): every number below comes from the
    formulas of DESIGN section 2 written out in plain Python, not from the model's functions."""
    config = tiny("text", potential_weight=0.5).config
    D, alpha, widths, scale = config.well_depth, config.morse_alpha, config.cutoff_widths, config.nonbonded_scale
    z = [(1.0, 0.0), (0.0, 1.0), (0.6, 0.8)]
    radius = 0.4  # every atom: contact distance r_e = 0.8
    labels = [0, 1, 0]  # only atoms 0 and 2 bond (each is the other's one same-label partner)

    def energy(a: int, b: int) -> float:
        r = math.dist(z[a], z[b])
        r_e = 2 * radius
        bond = 1.0 if labels[a] == labels[b] else 0.0
        exclusion_distance = r_e * (1 + (scale - 1) * (1 - bond))
        exclusion = D * max(0.0, 1 - r / exclusion_distance) ** 2
        t = min(1.0, max(0.0, (r - r_e) / (widths / alpha)))
        morse = D * ((1 - math.exp(-alpha * (r - r_e))) ** 2 - 1) * 0.5 * (1 + math.cos(math.pi * t))
        return exclusion + bond * morse

    # (0, 1): r = 1.414 inside the nonbonded exclusion (2.0); (1, 2): r = 0.632, deeper inside it;
    # (0, 2): r = 0.894, just past contact, in the Morse well.
    potential = (energy(0, 1) + energy(0, 2) + energy(1, 2)) / 3
    assert potential == pytest.approx(0.0858 / 3 + 0.4676 / 3 - 0.7435 / 3, abs=2e-4)  # the numbers worked on paper

    logits = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    element_logits = [[0.5, 0.0], [0.0, 0.0], [0.0, 2.0]]
    roles = [[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]]

    def cross_entropy(rows: list[list[float]]) -> float:
        return sum(math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(rows, labels)) / len(labels)

    usage = [sum(atom[i][role] for atom in roles for i in range(2)) / 6 for role in range(3)]
    role_balance = sum(u * math.log(3 * u) for u in usage)
    task = cross_entropy(logits)
    expected = task + 0.5 * (potential + config.role_usage_weight * role_balance
                             + config.element_weight * cross_entropy(element_logits))

    pi = torch.tensor(roles)
    sums = pi.sum(1)  # (3, 3) electrons, protons, neutrons
    composition = torch.cat([sums, sums[:, 1:].sum(1, keepdim=True), torch.zeros(3, 1), torch.full((3, 1), radius)], 1)
    output = AtomOutput(torch.tensor(z), pi, composition, torch.tensor(logits), torch.tensor(element_logits))
    losses = atom_loss(output, torch.tensor(labels), torch.ones(3, 2, dtype=torch.bool), config)
    assert float(losses["potential"]) == pytest.approx(potential, abs=1e-6)
    assert float(losses["task"]) == pytest.approx(task, abs=1e-6)
    assert float(losses["loss"].detach()) == pytest.approx(expected, abs=1e-6)


def test_span_radius_is_how_far_the_electrons_lie_from_the_nucleus():
    """radius_mode="span": R = r_min + (r_max - r_min) * RMS_e ||p_i - z|| / (2 * sphere radius),
    p_i each component's own position on the sphere. Computed here by hand from the head's parts."""
    model = tiny("text", radius_mode="span")
    head, config = model.atom, model.config
    h = torch.randn(2, 5, config.d_model)
    mask = torch.ones(2, 5)
    z, _, composition = head(h, h, mask.bool())
    pi = head.roles(h, mask)
    p = F.normalize(head.nucleus(h), dim=-1) * config.sphere_radius
    share = pi[..., 0] / (pi[..., 0].sum(1, keepdim=True) + config.nucleon_floor)
    span = torch.sqrt((share * ((p - z[:, None]) ** 2).sum(-1)).sum(1)) / (2 * config.sphere_radius)
    expected = config.r_min + (config.r_max - config.r_min) * span
    torch.testing.assert_close(composition[:, 5], expected, atol=1e-5, rtol=1e-5)
    # every component in the same state: the electrons sit on the nucleus, the radius is r_min
    same = h[:, :1].expand(-1, 5, -1)
    _, _, composition = head(same, same, mask.bool())
    torch.testing.assert_close(composition[:, 5], torch.full((2,), config.r_min), atol=1e-4, rtol=0)


def test_shell_radius_mode_is_kept_and_bounded():
    model = tiny("text", radius_mode="shell")
    inputs, mask = batch("text")
    with torch.no_grad():
        radius = model(inputs, mask).radius
    assert ((radius >= model.config.r_min) & (radius <= model.config.r_max)).all()
    assert hasattr(model.atom, "shell") and not hasattr(tiny("text", radius_mode="span").atom, "shell")


def test_token_sum_is_the_weighted_sum_over_components():
    from model.atom import token_sum

    generator = torch.Generator().manual_seed(0)
    values = torch.randn(3, 5, 4, generator=generator)
    weight = torch.rand(3, 5, generator=generator)
    torch.testing.assert_close(token_sum(values, weight), (weight[..., None] * values).sum(1))
    torch.testing.assert_close(token_sum(values), values.sum(1))
    torch.testing.assert_close(token_sum(weight), weight.sum(1))
    torch.testing.assert_close(token_sum(values[..., 0], weight), (weight * values[..., 0]).sum(1))
    assert token_sum(values, weight).shape == (3, 4) and token_sum(weight).shape == (3,)


def test_tabulated_roles_equal_the_role_mlp_on_every_token_and_only_within_the_context():
    model = tiny("text")
    inputs, mask = batch("text")
    with torch.no_grad():
        direct = model(inputs, mask)
        with model.tabulated_roles() as tabulated:
            assert tabulated and model.atom.role_table.shape == (40, 3)
            table = model(inputs, mask)
        assert model.atom.role_table is None
    torch.testing.assert_close(table.roles, direct.roles, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(table.embedding, direct.embedding, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(table.composition, direct.composition, atol=1e-6, rtol=1e-5)
    # numeric components and contextual roles have no table
    for other in (tiny("numeric"), tiny("text", role_source="context")):
        with other.tabulated_roles() as tabulated:
            assert not tabulated and other.atom.role_table is None
