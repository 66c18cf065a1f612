"""Regenerate the Python stubs of protos/ into sparsecl/v1 (``python -m sparsecl.protogen``).

The committed stubs must equal what this produces; ``stale_files`` is the check the
test suite runs, so that editing a .proto without regenerating fails CI.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("sparsecl") / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The .proto files of the API, relative to ``proto_root``."""
    return sorted(p.relative_to(proto_root) for p in (proto_root / PACKAGE).glob("*.proto"))


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc (from grpcio-tools) on every .proto; returns the generated files."""
    from grpc_tools import protoc  # a test/dev dependency only

    files = proto_files(proto_root)
    if not files:
        raise FileNotFoundError(f"no .proto files under {proto_root / PACKAGE}")
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(f) for f in files),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {[str(f) for f in files]}")
    return sorted(
        p.relative_to(out_dir) for p in (out_dir / PACKAGE).iterdir() if p.name.endswith(SUFFIXES)
    )


def stale_files(generated_root: Path, committed_root: Path = ROOT) -> list[str]:
    """Generated files that are missing, extra or different in ``committed_root``."""
    fresh = {p.name for p in (generated_root / PACKAGE).iterdir() if p.name.endswith(SUFFIXES)}
    have = {p.name for p in (committed_root / PACKAGE).iterdir() if p.name.endswith(SUFFIXES)}
    stale = sorted(fresh ^ have)
    for name in sorted(fresh & have):
        a, b = generated_root / PACKAGE / name, committed_root / PACKAGE / name
        if not filecmp.cmp(a, b, shallow=False):
            stale.append(name)
    return stale


def main() -> int:
    """Regenerate into the source tree, or with ``--check`` only report stale stubs."""
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = stale_files(Path(tmp))
        for name in stale:
            print(f"stale: {PACKAGE / name}", file=sys.stderr)
        return 1 if stale else 0
    for path in generate(ROOT):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
