"""Errors a user can fix, importable without torch or ONNX Runtime (the CLI catches them)."""


class ExportError(Exception):
    """An export that failed a check (parity, an unexportable run); one line, naming the file."""
