"""The OpenAPI document tells the truth: schemathesis, every check, against the real server.

A bounded run (a few examples per operation, deterministic) of every phase that applies, for a
text bundle, a numeric bundle, with an API key (so the security scheme is checked too), and for
the two served side by side (each request body one of the models' own).
Any failure of any kind fails the test and prints schemathesis' report with a curl line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .processes import start, stop, wait_ready

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = 20


def schemathesis_run(url: str, workdir: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
               "--checks", "all", "--max-examples", str(EXAMPLES), "--generation-deterministic", "--no-color",
               "--request-timeout", "20", "--workers", "1", *options]
    # in a scratch folder: schemathesis keeps a cache of what it found in .schemathesis/ there
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)


@pytest.mark.parametrize("kind, flags, options", [
    ("text", (), ()),
    ("numeric", (), ()),
    ("text", ("--api-key", "k3y"), ("--header", "Authorization: Bearer k3y")),
    ("text", ("--bundle", "{numeric}"), ()),
], ids=["text", "numeric", "api-key", "two-models"])
def test_schemathesis_finds_no_failure(request, tmp_path, kind, flags, options):
    case = request.getfixturevalue(f"{kind}_case")
    if "--bundle" in flags:  # a second model beside it, served under its manifest's name
        flags = tuple(flag.format(numeric=request.getfixturevalue("numeric_case").path) for flag in flags)
    process, url = start(case.path, "--device", "cpu", "--log-level", "warning", *flags)
    try:
        wait_ready(process, url)
        result = schemathesis_run(url, tmp_path, *options)
    finally:
        stop(process)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or " passed" in result.stdout, result.stdout[-3000:]
