"""Who may reach the server: TLS (optionally verifying client certificates) and a bearer token.

Server side: ``bind`` adds the listening port (TLS when a certificate is configured) and warns when a
non-loopback address is served in plaintext or without authentication; ``TokenAuthInterceptor``
refuses calls without the right ``authorization: Bearer <token>`` metadata with UNAUTHENTICATED.
The health service is exempt (load balancers probe it without credentials); reflection is not (it
describes the API to whoever may use it: ``grpcurl -H 'authorization: Bearer ...'``).

Client side: ``channel`` makes a plaintext or TLS channel that sends the token with every call.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from serving.config import TOKEN_ENV
from styletrain.errors import UserError

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods callable without a token."""


def read_token(token_file: str | Path | None = None, env: Mapping[str, str] = os.environ) -> str | None:
    """The token from ``token_file`` (its whole text, stripped: one token, nothing else), else from
    ``$STYLETRAIN_TOKEN``, else None."""
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise UserError(f"token file not found: {path}")
        token, source = path.read_text().strip(), f"token file {path}"
    elif env.get(TOKEN_ENV):
        token, source = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        return None
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise UserError(f"{source} must hold one token of printable ASCII without spaces")
    return token


def _read(path: str | Path, what: str) -> bytes:
    """A PEM file's bytes; ``UserError`` if it is missing or not PEM."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    data = path.read_bytes()
    if b"-----BEGIN " not in data:
        raise UserError(f"{what} {path} is not a PEM file (-----BEGIN ...-----)")
    return data


def server_credentials(cert: str | Path, key: str | Path, ca: str | Path | None = None) -> grpc.ServerCredentials:
    """TLS with ``cert``/``key`` (PEM); with ``ca``, clients must show a certificate signed by it."""
    chain = _read(cert, "TLS certificate")
    pair = (_read(key, "TLS key"), chain)
    root = _read(ca, "TLS CA certificate") if ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=root is not None)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as in ``host:port``) is reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(server: grpc.Server, address: str, *, tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
         tls_ca: str | Path | None = None, token: str | None = None) -> int:
    """Listen on ``address`` (TLS when ``tls_cert`` is given); returns the port. Warns when the
    address is reachable from other machines in plaintext or without authentication."""
    if bool(tls_cert) != bool(tls_key):
        raise UserError("--tls-cert and --tls-key go together: give both (PEM files) or neither")
    if tls_ca and not tls_cert:
        raise UserError("--tls-ca (verify client certificates) needs TLS: give --tls-cert and --tls-key too")
    try:
        if tls_cert:
            port = server.add_secure_port(address, server_credentials(tls_cert, tls_key, tls_ca))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        check = " (are --tls-cert and --tls-key a matching PEM certificate and key?)" if tls_cert else ""
        raise UserError(f"cannot listen on {address}: {exc}{check}") from None
    if port == 0:
        raise UserError(f"cannot listen on {address}: is the port in use?")
    host = address.rpartition(":")[0]
    if not is_loopback(host):
        if not tls_cert:
            log.warning("listening on %s without TLS: images and any token cross the network in plaintext "
                        "(--tls-cert/--tls-key)", address)
        if not token and not tls_ca:
            log.warning("listening on %s without authentication: anyone who reaches the port can use the "
                        "server (--token-file or $%s, or --tls-ca for client certificates)", address, TOKEN_ENV)
    return port


def refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends every call with ``code``."""

    def refuse(request_or_iterator: object, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    kind = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    return kind[handler.request_streaming, handler.response_streaming](
        refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuse calls whose ``authorization`` metadata is not ``Bearer <token>`` with UNAUTHENTICATED;
    the comparison takes the same time however much of the token matches (``hmac.compare_digest``)."""

    def __init__(self, token: str, exempt: Sequence[str] = EXEMPT_PREFIXES) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()
        self._exempt = tuple(exempt)

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(self._exempt):
            return handler
        values = [v for k, v in details.invocation_metadata or () if k == "authorization"]
        if not values:
            return refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "this server needs a token: send "
                            "'authorization: Bearer <token>' metadata (styletrain client --token-file FILE)")
        scheme, _, credential = str(values[0]).partition(" ")
        digest = hashlib.sha256(credential.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self._digest):
            return refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
        return handler


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details.method, details.timeout, [*(details.metadata or ()), self._header],
                            details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Callable, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Callable, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method: str, timeout: float | None, metadata: Sequence[tuple[str, str]] | None,
                 credentials: grpc.CallCredentials | None, wait_for_ready: bool | None,
                 compression: grpc.Compression | None) -> None:
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def channel(address: str, *, options: Sequence[tuple[str, Any]] = (), tls: bool = False,
            tls_ca: str | Path | None = None, tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
            token: str | None = None) -> grpc.Channel:
    """A channel to ``address``: TLS when ``tls`` or any ``tls_*`` file is given (``tls_ca`` to trust
    a private CA, else the system's roots; ``tls_cert``/``tls_key`` to show a client certificate),
    sending ``token`` as ``authorization: Bearer`` metadata with every call."""
    if bool(tls_cert) != bool(tls_key):
        raise UserError("--tls-cert and --tls-key go together: give both (PEM files) or neither")
    if tls or tls_ca or tls_cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca, "TLS CA certificate") if tls_ca else None,
            private_key=_read(tls_key, "TLS key") if tls_key else None,
            certificate_chain=_read(tls_cert, "TLS certificate") if tls_cert else None)
        result = grpc.secure_channel(address, credentials, options=list(options))
    else:
        result = grpc.insecure_channel(address, options=list(options))
    return grpc.intercept_channel(result, _BearerToken(token)) if token else result
