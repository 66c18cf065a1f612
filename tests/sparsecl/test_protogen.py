"""The committed gRPC stubs are exactly what protos/ generates; a stale stub fails here."""

from __future__ import annotations

import shutil
from pathlib import Path

from sparsecl.protogen import PROTO_ROOT, generate, stale_files


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
    assert "sparsecl_pb2.py" in stale_files(out)
