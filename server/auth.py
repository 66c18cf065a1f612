"""Bearer-token auth: a token file, and a grpc.aio interceptor that checks scopes per method.

Token file: one token per line, ``SCOPES TOKEN``, where SCOPES is ``read``, ``write`` or
``read,write``; blank lines and lines starting with ``#`` are ignored. Only SHA-256
digests of the tokens are kept in memory, compared with ``hmac.compare_digest``; a token
is never logged. Health checks and reflection stay open; every ContinualLearner method
needs a token: AddTask, DeleteTask and Analyze the ``write`` scope, every other method ``read``; so
does every method of the Open Inference Protocol's service (``read``) but its probes
ServerLive and ServerReady.
Analyze needs ``write`` because it writes MLflow runs and trains a dense comparison
network (compute like a training job), which a read-only dashboard token must not start.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from .errors import PermissionDeniedError, UnauthenticatedError, message_of, status_of

log = logging.getLogger("sparsecl.server")

SCOPES = ("read", "write")
PROTECTED = "/sparsecl.v1.ContinualLearner/"
# The scope each ContinualLearner method needs. A method missing here (a new RPC nobody
# classified) needs UNLISTED, which no token grants: it fails closed, and
# tests/server/test_auth_matrix.py fails until it is listed.
METHOD_SCOPES: dict[str, str] = {
    "Predict": "read",
    "ListTasks": "read",
    "GetTask": "read",
    "GetBackbone": "read",
    "Evaluate": "read",
    "AddTask": "write",
    "Analyze": "write",
    "DeleteTask": "write",
}
# The Open Inference Protocol's service: every method reads (inference, metadata), and
# ServerLive and ServerReady stay open for probes, as health checking does.
INFERENCE = "/inference.GRPCInferenceService/"
INFERENCE_SCOPES: dict[str, str | None] = {
    "ServerLive": None,
    "ServerReady": None,
    "ModelReady": "read",
    "ServerMetadata": "read",
    "ModelMetadata": "read",
    "ModelInfer": "read",
    "RepositoryIndex": "read",
}
UNLISTED = "unlisted"
WRITE_METHODS = frozenset(PROTECTED + m for m, s in METHOD_SCOPES.items() if s == "write")
MIN_TOKEN_CHARS = 16


def digest(token: str) -> bytes:
    """The SHA-256 digest of a token (what the server keeps instead of the token)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """Token digests and the scopes each grants."""

    grants: tuple[tuple[bytes, frozenset[str]], ...]

    @classmethod
    def parse(cls, text: str, source: str = "tokens") -> Tokens:
        """Read ``SCOPES TOKEN`` lines; ValueError names the line of any malformed entry."""
        grants: list[tuple[bytes, frozenset[str]]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{source}:{number}: expected 'SCOPES TOKEN', e.g. 'read TOKEN'")
            scopes = frozenset(parts[0].split(","))
            if not scopes or not scopes <= set(SCOPES):
                raise ValueError(
                    f"{source}:{number}: scopes {parts[0]!r} must be read, write or read,write"
                )
            if len(parts[1]) < MIN_TOKEN_CHARS:
                raise ValueError(f"{source}:{number}: tokens need at least {MIN_TOKEN_CHARS} chars")
            grants.append((digest(parts[1]), scopes))
        if not grants:
            raise ValueError(f"{source}: no token defined")
        return cls(tuple(grants))

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Parse a token file; one that other users may read (or write) is refused, as ssh
        refuses a private key anyone can read: its tokens would no longer be secret. As
        PostgreSQL does for its key, a file owned by root may also be read by its group
        (0640): how a Kubernetes Secret volume with an fsGroup reaches a non-root server."""
        info = path.stat()
        allowed = 0o037 if info.st_uid == 0 else 0o077  # bits that must be clear
        if info.st_mode & allowed:
            raise ValueError(
                f"the tokens file {path} is accessible by other users (mode "
                f"{info.st_mode & 0o777:o}); make it private: chmod 600 {path} (or, owned by "
                "root, 640)"
            )
        return cls.parse(path.read_text(), str(path))

    def scopes(self, token: str) -> frozenset[str] | None:
        """The scopes ``token`` grants, None when unknown (compares every entry in full)."""
        presented = digest(token)
        found: frozenset[str] | None = None
        for known, scopes in self.grants:
            if hmac.compare_digest(presented, known):
                found = scopes
        return found

    def authorize(self, token: str | None, need: str, call: str) -> None:
        """Raise UnauthenticatedError unless ``token`` is known, PermissionDeniedError unless
        it grants the scope ``need`` that ``call`` needs."""
        if token is None:
            raise UnauthenticatedError(
                "this server needs a token: send 'authorization: Bearer TOKEN' "
                "(sparsecl --token or SPARSECL_TOKEN)"
            )
        scopes = self.scopes(token)
        if scopes is None:
            raise UnauthenticatedError("unknown token")
        if need not in scopes:
            raise PermissionDeniedError(f"{call} needs a token with the '{need}' scope")


def required_scope(method: str) -> str | None:
    """The scope a method needs; None for open services (health, reflection) and probes."""
    if method.startswith(PROTECTED):
        return METHOD_SCOPES.get(method.removeprefix(PROTECTED), UNLISTED)
    if method.startswith(INFERENCE):
        return INFERENCE_SCOPES.get(method.removeprefix(INFERENCE), UNLISTED)
    return None


def bearer(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer TOKEN`` header, if any."""
    for key, value in metadata or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _denied(handler: grpc.RpcMethodHandler, error: Exception) -> Any:
    """A handler of the same kind as ``handler`` that only answers ``error``."""

    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(status_of(error), message_of(error))

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(abort, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    return grpc.stream_stream_rpc_method_handler(abort, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a protected call through only with a known token that has the method's scope."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        need = required_scope(method)
        handler = await continuation(handler_call_details)
        if need is None or handler is None:
            return handler
        try:
            token = bearer(handler_call_details.invocation_metadata)
            self.tokens.authorize(token, need, method.rsplit("/", 1)[-1])
        except (UnauthenticatedError, PermissionDeniedError) as e:
            log.warning("refused %s: %s", method, e)
            return _denied(handler, e)
        return handler
