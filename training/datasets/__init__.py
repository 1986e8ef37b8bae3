"""Dataset loaders behind ``training.data`` (import the public API from there)."""
