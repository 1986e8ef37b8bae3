"""The tiny runs and bundles are session fixtures of tests/conftest.py; `tiny_options` builds more."""

from __future__ import annotations

from ..conftest import TINY_MODEL, tiny_options  # noqa: F401  (re-exported for the tests here)
