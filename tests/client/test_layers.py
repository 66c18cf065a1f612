"""Imports point one way: the client's commands never load the server (nor torch, to keep
every client command's start fast), and the server never imports the client."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ..serving import ROOT

LOADED = """
import sys
import client.cli
try:
    client.cli.main(sys.argv[1:])
except SystemExit:
    pass
print(sorted({m.split(".")[0] for m in sys.modules} & {"server", "torch"}))
"""


@pytest.mark.parametrize("argv", [[], ["--help"], ["add-task", "--help"], ["tasks", "--help"]])
def test_client_commands_load_neither_the_server_nor_torch(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOADED, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr


def test_serve_help_loads_the_servers_options() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOADED, "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--max-epochs" in done.stdout and done.stdout.splitlines()[-1] == "['server']"


@pytest.mark.parametrize("path", sorted((ROOT / "server").rglob("*.py")), ids=lambda p: p.name)
def test_the_server_never_imports_the_client(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.split(".")[0] == "client"]
