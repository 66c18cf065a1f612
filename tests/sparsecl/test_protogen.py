"""The committed gRPC stubs are exactly what protos/ generates; a stale stub fails here. And
they load on the oldest protobuf and grpcio that pyproject.toml admits."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

from sparsecl.protogen import PROTO_ROOT, ROOT, generate, generated, stale_files


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    generate(tmp_path)
    assert stale_files(tmp_path) == [], "run `make protos` and commit the regenerated stubs"


def test_a_proto_edit_makes_the_committed_stubs_stale(tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, protos)
    proto = protos / "sparsecl" / "v1" / "sparsecl.proto"
    proto.write_text(
        proto.read_text().replace(
            "message ListTasksRequest {}", "message ListTasksRequest { bool all = 1; }"
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    generate(out, proto_root=protos)
    assert "sparsecl/v1/sparsecl_pb2.py" in stale_files(out)


def floor(requirement: str) -> tuple[int, ...]:
    """The lower bound of a ``name>=X.Y`` requirement in pyproject.toml's dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        found = re.fullmatch(rf"{requirement}>=([\d.]+)(,<\d+)?", dependency)
        if found:
            parts = [int(part) for part in found.group(1).split(".")]
            return tuple(parts + [0] * (3 - len(parts)))  # 5.29 is 5.29.0
    raise AssertionError(f"no {requirement}>= in pyproject.toml")


def test_the_stubs_load_on_the_oldest_runtimes_the_project_admits() -> None:
    """A runtime older than the stubs' gencode (protobuf) or generator (grpcio) refuses them:
    the dependencies' lower bounds must not be below them."""
    stubs = sorted(generated(ROOT))
    assert stubs
    for stub in stubs:
        text = (ROOT / stub).read_text()
        gencode = re.search(
            r"ValidateProtobufRuntimeVersion\([^,]+,\s*(\d+),\s*(\d+),\s*(\d+)", text
        )
        if gencode:
            assert tuple(map(int, gencode.groups())) <= floor("protobuf"), stub
        grpc = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", text)
        if grpc:
            assert tuple(map(int, grpc.group(1).split("."))) <= floor("grpcio"), stub
