"""Regenerate the Python stubs of protos/ (``python -m sparsecl.protogen``).

The committed stubs must equal what this produces; ``stale_files`` is the check the
test suite runs, so that editing a .proto without regenerating fails CI.

The generator is one pinned grpcio-tools release, run in an environment of its own
(``.generator/``, made with pip on first use): its protoc writes gencode 5.29.0 and its
plugin stubs that need grpcio 1.71.2, which load on every protobuf runtime from 5.29 to 7.x
(a runtime may be newer than the gencode, never older). It cannot live in the project's
environment: that release's own metadata asks for protobuf < 6, while the test tools
(tritonclient 2.73) ask for protobuf 6; and every later release writes gencode that
refuses runtime 5.x.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGES = (Path("sparsecl") / "v1", Path("sparsecl") / "kserve")
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
GENERATOR = "grpcio-tools==1.71.2"  # protoc 29.x; pinned so that the staleness test is exact
GENERATOR_DIR = ROOT / ".generator" / GENERATOR.replace("==", "-")
# run in the generator's environment: protoc with its bundled well-known types on the path
PROTOC = (
    "import sys; from importlib.resources import files; from grpc_tools import protoc; "
    "sys.exit(protoc.main(['protoc', f\"-I{files('grpc_tools') / '_proto'}\", *sys.argv[1:]]))"
)


def generator() -> Path:
    """The Python of the generator's own environment, created with pip on first use."""
    python = GENERATOR_DIR / "bin" / "python"
    ready = GENERATOR_DIR / ".ready"
    if not ready.exists():
        shutil.rmtree(GENERATOR_DIR, ignore_errors=True)  # a half-made one from an interrupt
        subprocess.run([sys.executable, "-m", "venv", str(GENERATOR_DIR)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, GENERATOR], check=True)
        ready.touch()
    return python


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The .proto files of the API, relative to ``proto_root``."""
    found = (p for package in PACKAGES for p in (proto_root / package).glob("*.proto"))
    return sorted(p.relative_to(proto_root) for p in found)


def generated(root: Path) -> set[Path]:
    """The generated files under ``root``, relative to it."""
    return {
        p.relative_to(root)
        for package in PACKAGES
        if (root / package).is_dir()
        for p in (root / package).iterdir()
        if p.name.endswith(SUFFIXES)
    }


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run the pinned protoc on every .proto; returns the generated files."""
    files = proto_files(proto_root)
    if not files:
        raise FileNotFoundError(f"no .proto files under {proto_root}")
    args = [
        f"-I{proto_root}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(f) for f in files),
    ]
    done = subprocess.run([str(generator()), "-c", PROTOC, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed on {[str(f) for f in files]}: {done.stderr.strip()}")
    return sorted(generated(out_dir))


def stale_files(generated_root: Path, committed_root: Path = ROOT) -> list[str]:
    """Generated files that are missing, extra or different in ``committed_root``."""
    fresh, have = generated(generated_root), generated(committed_root)
    stale = sorted(str(p) for p in fresh ^ have)
    for path in sorted(fresh & have):
        if not filecmp.cmp(generated_root / path, committed_root / path, shallow=False):
            stale.append(str(path))
    return stale


def main() -> int:
    """Regenerate into the source tree; ``--check`` only reports stale stubs; ``--setup``
    only makes the generator's environment (``make install`` does, so tests need no network)."""
    if "--setup" in sys.argv[1:]:
        print(f"generator {GENERATOR}: {generator()}")
        return 0
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = stale_files(Path(tmp))
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if stale else 0
    for path in generate(ROOT):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
