"""Atom Modeling in pure PyTorch: no file or network I/O here."""

from .atom import AtomModel, AtomOutput, atom_loss, role_usage
from .config import COMPOSITION_FIELDS, ROLE_NAMES, AtomConfig

__all__ = ["AtomConfig", "AtomModel", "AtomOutput", "atom_loss", "role_usage", "ROLE_NAMES", "COMPOSITION_FIELDS"]
