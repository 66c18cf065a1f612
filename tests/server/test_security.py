"""TLS, mutual TLS and bearer tokens against real servers with throwaway certificates.

One TLS server with a token file for the module (task A learned once with an admin
token), and one mutual-TLS server; every call goes over real TLS with real tokens.
"""

from __future__ import annotations

import os
import re
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Client, ClientError
from client.cli import main as cli
from server.auth import Tokens, digest
from server.config import ServerConfig
from sparse_engine.mnist import Mnist

from ..certs import Pki, make_pki
from ..serving import FAST, ServerProcess, digits

PROBE = np.zeros((2, 784), np.float32)


@dataclass(frozen=True)
class Secured:
    server: ServerProcess
    pki: Pki
    read: str
    write: str
    admin: str

    def client(self, token: str | None = None, **tls: Path) -> Client:
        return Client(self.server.address, timeout=60, token=token, tls_ca=self.pki.ca, **tls)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, pki: Pki, mnist: Mnist) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    read, write, admin = (secrets.token_urlsafe(24) for _ in range(3))
    tokens = folder / "tokens"
    tokens.write_text(f"# scopes token\nread {read}\nwrite {write}\nread,write {admin}\n")
    tokens.chmod(0o600)  # a token file others may read is refused
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    args = [*tls, "--tokens", str(tokens), "--http-port", "0"]
    server = ServerProcess(folder / "store", args=args).start()
    s = Secured(server, pki, read, write, admin)
    with s.client(admin) as client:
        client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
    yield s
    server.terminate()


def code_of(call: object) -> grpc.StatusCode:
    """The status code a call that must fail fails with."""
    with pytest.raises(ClientError) as info:
        call()  # type: ignore[operator]
    return info.value.code


# ---- TLS -------------------------------------------------------------------------------------
def test_client_trusting_the_ca_is_served_over_tls(secured: Secured) -> None:
    with secured.client(secured.read) as client:
        assert [t.name for t in client.tasks()] == ["A"]


def test_plaintext_client_is_not_served_by_a_tls_server(secured: Secured) -> None:
    with Client(secured.server.address, timeout=10, token=secured.read) as client:
        assert code_of(client.tasks) == grpc.StatusCode.UNAVAILABLE


def test_the_http_port_has_the_same_tls_and_tokens(secured: Secured) -> None:
    """The Open Inference Protocol over HTTP (--http-port): TLS with the server's files,
    the health probes open, everything else needing a read token."""
    found = (re.search(r"sparsecl http on (https://\S+)", line) for line in secured.server.output)
    [url] = [m.group(1) for m in found if m]
    context = ssl.create_default_context(cafile=secured.pki.ca)

    def get(path: str, token: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        call = urllib.request.Request(url + path, headers=headers)
        try:
            with urllib.request.urlopen(call, context=context, timeout=30) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code

    assert get("/v2/health/ready") == 200
    assert get("/v2/models/A") == 401
    assert get("/v2/models/A", secured.write) == 403
    assert get("/v2/models/A", secured.read) == 200
    with pytest.raises(OSError):  # plaintext to the TLS port
        urllib.request.urlopen(url.replace("https:", "http:") + "/v2/health/live", timeout=10)


def test_client_not_trusting_the_servers_ca_is_refused(secured: Secured, tmp_path: Path) -> None:
    other = make_pki(tmp_path)
    with Client(secured.server.address, timeout=10, token=secured.read, tls_ca=other.ca) as c:
        assert code_of(c.tasks) == grpc.StatusCode.UNAVAILABLE


# ---- tokens ----------------------------------------------------------------------------------
def test_call_without_token_is_unauthenticated(secured: Secured) -> None:
    with secured.client() as client:
        assert code_of(client.tasks) == grpc.StatusCode.UNAUTHENTICATED


def test_unknown_token_is_unauthenticated(secured: Secured) -> None:
    with secured.client(secrets.token_urlsafe(24)) as client:
        assert code_of(lambda: client.predict("A", PROBE)) == (grpc.StatusCode.UNAUTHENTICATED)


def test_read_token_cannot_add_a_task(secured: Secured, mnist: Mnist) -> None:
    with secured.client(secured.read) as client:
        add = lambda: client.learn("R", digits(mnist, [2, 3], n=100), **FAST)  # noqa: E731
        assert code_of(add) == grpc.StatusCode.PERMISSION_DENIED
    with secured.client(secured.admin) as client:
        assert [t.name for t in client.tasks()] == ["A"]


def test_write_token_cannot_predict(secured: Secured) -> None:
    with secured.client(secured.write) as client:
        assert code_of(lambda: client.predict("A", PROBE)) == (grpc.StatusCode.PERMISSION_DENIED)


def test_read_token_predicts_and_evaluates(secured: Secured, mnist: Mnist) -> None:
    x, y = digits(mnist, [0, 1], n=100, offset=500)
    with secured.client(secured.read) as client:
        assert (client.predict("A", x).labels == y).mean() > 0.8
        assert client.evaluate(x, y)[0].examples == 100


def test_write_token_adds_a_task(secured: Secured, mnist: Mnist) -> None:
    with secured.client(secured.write) as client:
        info = client.learn("W", digits(mnist, [4, 5], n=200), **FAST)
    assert info.state == "committed"


def test_health_is_open_without_a_token(secured: Secured) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    credentials = grpc.ssl_channel_credentials(secured.pki.ca.read_bytes())
    with grpc.secure_channel(secured.server.address, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_is_open_without_a_token(secured: Secured) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    credentials = grpc.ssl_channel_credentials(secured.pki.ca.read_bytes())
    with grpc.secure_channel(secured.server.address, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in replies[0].list_services_response.service}
    assert "sparsecl.v1.ContinualLearner" in names


def test_tokens_never_appear_in_the_server_log(secured: Secured) -> None:
    wrong = secrets.token_urlsafe(24)
    for token in (wrong, secured.write, secured.read):
        with secured.client(token) as client, pytest.raises(ClientError):
            client.predict("nope", PROBE)
    log = "".join(secured.server.output)
    assert "refused" in log
    assert not any(t in log for t in (wrong, secured.read, secured.write, secured.admin))


def test_cli_reads_the_token_from_the_environment(
    secured: Secured, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPARSECL_TOKEN", secured.read)
    address = ["--address", secured.server.address, "--tls-ca", str(secured.pki.ca)]
    assert cli(["tasks", "--json", *address]) == 0
    assert '"name": "A"' in capsys.readouterr().out


# ---- mutual TLS ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServerProcess]:
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    args = [*tls, "--tls-client-ca", str(pki.ca)]
    server = ServerProcess(tmp_path_factory.mktemp("mutual"), args=args).start()
    yield server
    server.terminate()


def test_mutual_tls_serves_a_client_with_a_certificate(mutual: ServerProcess, pki: Pki) -> None:
    with Client(
        mutual.address,
        timeout=30,
        tls_ca=pki.ca,
        tls_cert=pki.client_cert,
        tls_key=pki.client_key,
    ) as client:
        assert client.backbone().spec == "mlp:784-64-64"


def test_mutual_tls_refuses_a_client_without_a_certificate(mutual: ServerProcess, pki: Pki) -> None:
    with Client(mutual.address, timeout=10, tls_ca=pki.ca) as client:
        assert code_of(client.backbone) == grpc.StatusCode.UNAVAILABLE


# ---- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_plaintext_on_loopback_is_the_default(host: str) -> None:
    assert not ServerConfig(host=host).tls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "example.org"])
def test_plaintext_on_any_other_address_needs_insecure(host: str) -> None:
    with pytest.raises(ValueError, match="--insecure"):
        ServerConfig(host=host)


def test_insecure_flag_allows_plaintext_on_a_non_loopback_address() -> None:
    assert not ServerConfig(host="0.0.0.0", insecure=True).tls


def test_serve_refuses_plaintext_on_a_non_loopback_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_token_file_keeps_only_digests() -> None:
    token = secrets.token_urlsafe(24)
    tokens = Tokens.parse(f"read {token}\n")
    assert tokens.grants == ((digest(token), frozenset({"read"})),)
    assert token not in repr(tokens)


def test_token_file_with_an_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match=r"tokens:2: scopes 'admin'"):
        Tokens.parse(f"read {'r' * 20}\nadmin {'a' * 20}\n")


def test_token_file_with_a_short_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Tokens.parse("read short\n")


@pytest.mark.parametrize(
    ("owner", "mode", "accepted"),
    [(0, 0o640, True), (0, 0o660, False), (0, 0o644, False), (1000, 0o640, False)],
)
def test_a_tokens_file_may_be_group_readable_only_when_root_owns_it(
    tmp_path: Path, owner: int, mode: int, accepted: bool
) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read {secrets.token_urlsafe(24)}\n")
    os.chown(tokens, owner, 0)
    tokens.chmod(mode)
    if accepted:
        assert len(Tokens.load(tokens).grants) == 1
    else:
        with pytest.raises(ValueError, match="accessible by other users"):
            Tokens.load(tokens)
