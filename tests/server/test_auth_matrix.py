"""Every ContinualLearner RPC × every kind of token, against a real server with a token file.

The RPCs come from the proto descriptor, not from a list kept here, so a new RPC is in
the matrix the day it is added; and ``SCOPE`` below must name it, so its scope is a
decision (checked against server/auth.py) rather than a default. Each call sends the
method's empty request: what matters is whether the interceptor lets it through
(anything but UNAUTHENTICATED / PERMISSION_DENIED) or not.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from server import auth
from sparsecl.v1 import sparsecl_pb2 as pb

from ..serving import ServerProcess

SERVICE = pb.DESCRIPTOR.services_by_name["ContinualLearner"]
METHODS: dict[str, MethodDescriptor] = {m.name: m for m in SERVICE.methods}

# The scope each RPC needs: write for what trains or writes runs, read for the rest.
SCOPE = {
    "AddTask": "write",
    "Analyze": "write",
    "DeleteTask": "write",
    "Predict": "read",
    "ListTasks": "read",
    "GetTask": "read",
    "GetBackbone": "read",
    "Evaluate": "read",
}
KINDS = ("none", "unknown", "read", "write", "read+write")
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def path(method: MethodDescriptor) -> str:
    return f"/{SERVICE.full_name}/{method.name}"


def test_every_rpc_of_the_service_has_a_decided_scope() -> None:
    assert sorted(METHODS) == sorted(SCOPE), "add the new RPC to SCOPE (and to server/auth.py)"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_interceptor_asks_each_rpc_for_its_scope(name: str) -> None:
    assert auth.required_scope(path(METHODS[name])) == SCOPE[name]


def test_the_servers_scope_table_lists_exactly_the_rpcs_of_the_service() -> None:
    assert sorted(auth.METHOD_SCOPES) == sorted(METHODS)
    assert auth.WRITE_METHODS.issubset(path(m) for m in METHODS.values())


def test_an_unlisted_method_fails_closed() -> None:
    assert auth.required_scope(f"/{SERVICE.full_name}/DeleteEverything") == auth.UNLISTED


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    return {kind: secrets.token_urlsafe(24) for kind in KINDS if kind != "none"}


@pytest.fixture(scope="module")
def channel(
    tmp_path_factory: pytest.TempPathFactory, tokens: dict[str, str]
) -> Iterator[grpc.Channel]:
    folder = tmp_path_factory.mktemp("auth-matrix")
    file = folder / "tokens"
    file.write_text(
        f"read {tokens['read']}\nwrite {tokens['write']}\nread,write {tokens['read+write']}\n"
    )
    file.chmod(0o600)  # a token file others may read is refused
    server = ServerProcess(Path(folder / "store"), args=["--tokens", str(file)]).start()
    with grpc.insecure_channel(server.address) as channel:
        yield channel
    server.terminate()


def call(channel: grpc.Channel, method: MethodDescriptor, token: str | None) -> grpc.StatusCode:
    """The status of ``method`` called with its empty request (or an empty stream)."""
    request = message_factory.GetMessageClass(method.input_type)()
    reply = message_factory.GetMessageClass(method.output_type)
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    kind = (
        ("stream" if method.client_streaming else "unary")
        + "_"
        + ("stream" if method.server_streaming else "unary")
    )
    stub = getattr(channel, kind)(
        path(method),
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply.FromString,
    )
    argument = iter([]) if method.client_streaming else request
    try:
        answer = stub(argument, timeout=60, metadata=metadata)
        if method.server_streaming:
            list(answer)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def expected(kind: str, scope: str) -> grpc.StatusCode | None:
    """The code a token of ``kind`` must get; None: let through (not refused)."""
    if kind in ("none", "unknown"):
        return grpc.StatusCode.UNAUTHENTICATED
    return None if scope in kind.split("+") else grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_rpc_lets_through_exactly_the_tokens_with_its_scope(
    channel: grpc.Channel, tokens: dict[str, str], name: str, kind: str
) -> None:
    want = expected(kind, SCOPE.get(name, "missing from SCOPE"))
    got = call(channel, METHODS[name], tokens.get(kind))
    if want is None:
        assert got not in REFUSED, f"{name} with a {kind} token: {got}"
    else:
        assert got == want, f"{name} with a {kind} token"
