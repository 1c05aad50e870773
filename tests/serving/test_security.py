"""Issue 9.2: the server binds 127.0.0.1 by default; TLS, mutual TLS, a bearer token, reflection off.

Certificates are made for the test with the ``openssl`` command (a throwaway CA, a server certificate
for 127.0.0.1/localhost and client certificates); the TLS tests skip when it is not installed.
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from PIL import Image

from support import code_of
from serving import security
from serving.client import StyleClient, make_request
from serving.config import add_arguments, config_from_args
from styletrain.cli import main
from styletrain.errors import UserError

Live = Any  # tests/serving/conftest.py's Live

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="needs the openssl command to make test certificates")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=styletrain test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=folder)


def _signed(folder: Path, name: str, ca: str, extensions: str, serial: int) -> None:
    (folder / f"{name}.ext").write_text(extensions + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-set_serial",
             str(serial), "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files: ca, server (+ .key), client (+ .key, signed by ca), rogue_client (signed by another CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    folder = tmp_path_factory.mktemp("certs")
    _ca(folder, "ca")
    _ca(folder, "other_ca")
    _signed(folder, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth", 1)
    _signed(folder, "client", "ca", "extendedKeyUsage=clientAuth", 2)
    _signed(folder, "rogue_client", "other_ca", "extendedKeyUsage=clientAuth", 3)
    return {p.stem if p.suffix == ".pem" else p.name: p for p in folder.iterdir() if p.suffix in (".pem", ".key")}


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()



def reflection_services(channel: grpc.Channel, version: str = "v1alpha",
                        metadata: tuple[tuple[str, str], ...] = ()) -> set[str]:
    """The service names a reflection ``list_services`` request on ``grpc.reflection.<version>`` returns."""
    info = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    responses = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10,
                          metadata=metadata))
    return {s.name for s in responses[0].list_services_response.service}


# --- defaults ----------------------------------------------------------------------------------


def test_default_address_is_loopback_and_reflection_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STYLETRAIN_TOKEN", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    address, config = config_from_args(parser.parse_args([]))
    assert address == "127.0.0.1:50051"
    assert config.reflection and config.token is None and config.tls_cert is None and config.drain_delay == 5
    _, config = config_from_args(parser.parse_args(["--no-reflection", "--drain-delay", "0"]))
    assert not config.reflection and config.drain_delay == 0


class _FakeServer:
    """Stands in for ``grpc.Server`` in ``security.bind``: tests bind 127.0.0.1 only."""

    def add_insecure_port(self, address: str) -> int:
        return 50051

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return 50051


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "192.168.1.10"])
def test_binding_beyond_this_machine_without_tls_or_token_warns(host: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serving.security"):
        assert security.bind(_FakeServer(), f"{host}:50051") == 50051  # type: ignore[arg-type]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "without TLS" in messages and "without authentication" in messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="serving.security"):
        security.bind(_FakeServer(), "127.0.0.1:50051")  # type: ignore[arg-type]
        security.bind(_FakeServer(), "[::1]:50051")  # type: ignore[arg-type]
        security.bind(_FakeServer(), "localhost:50051")  # type: ignore[arg-type]
    assert caplog.records == []


def test_tls_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--tls-cert and --tls-key go together"):
        security.bind(_FakeServer(), "127.0.0.1:0", tls_cert="cert.pem")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="--tls-ca .* needs TLS"):
        security.bind(_FakeServer(), "127.0.0.1:0", tls_ca="ca.pem")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="TLS certificate not found: missing.pem"):
        security.bind(_FakeServer(), "127.0.0.1:0", tls_cert="missing.pem",  # type: ignore[arg-type]
                      tls_key="missing.key")
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(UserError, match="TLS certificate .*cert.pem is not a PEM file"):
        security.bind(_FakeServer(), "127.0.0.1:0", tls_cert=tmp_path / "cert.pem",  # type: ignore[arg-type]
                      tls_key="k")


def test_token_from_file_or_environment(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    assert security.read_token(tmp_path / "token", env={}) == "s3cret-token"
    assert security.read_token(None, env={"STYLETRAIN_TOKEN": "from-env"}) == "from-env"
    assert security.read_token(tmp_path / "token", env={"STYLETRAIN_TOKEN": "from-env"}) == "s3cret-token"
    assert security.read_token(None, env={}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="token file .*empty must hold one token"):
        security.read_token(tmp_path / "empty", env={})
    with pytest.raises(UserError, match="token file not found"):
        security.read_token(tmp_path / "missing", env={})


# --- TLS ---------------------------------------------------------------------------------------


@needs_openssl
def test_tls_works_and_plaintext_to_a_tls_port_fails(start_server: Callable[..., Live], certs: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    live = start_server(tls_cert=certs["server"], tls_key=certs["server.key"])
    with StyleClient(live.address, tls_ca=certs["ca"], timeout=10) as client:
        assert [m.name for m in client.list_styles()] == ["mosaic", "multi"]
        assert client.health() == "SERVING"
    with StyleClient(live.address, timeout=5) as plaintext:
        assert code_of(plaintext.list_styles) == grpc.StatusCode.UNAVAILABLE
    with StyleClient(live.address, tls_ca=certs["other_ca"], timeout=5) as untrusting:
        assert code_of(untrusting.list_styles) == grpc.StatusCode.UNAVAILABLE
    assert main(["client", "styles", "--server", live.address, "--tls-ca", str(certs["ca"])]) == 0
    assert capsys.readouterr().out.splitlines() == ["mosaic: mosaic", "multi: candy, mosaic, udnie"]
    assert main(["client", "styles", "--server", live.address, "--timeout", "5"]) == 2
    assert "If it serves TLS: --tls-ca or --tls" in capsys.readouterr().err


@needs_openssl
def test_mutual_tls_rejects_clients_without_a_trusted_certificate(start_server: Callable[..., Live],
                                                                 certs: dict[str, Path]) -> None:
    live = start_server(tls_cert=certs["server"], tls_key=certs["server.key"], tls_ca=certs["ca"])
    with StyleClient(live.address, tls_ca=certs["ca"], tls_cert=certs["client"], tls_key=certs["client.key"],
                     timeout=10) as client:
        assert len(client.list_styles()) == 2
    with StyleClient(live.address, tls_ca=certs["ca"], timeout=5) as no_certificate:
        assert code_of(no_certificate.list_styles) == grpc.StatusCode.UNAVAILABLE
        assert code_of(no_certificate.health) == grpc.StatusCode.UNAVAILABLE
    with StyleClient(live.address, tls_ca=certs["ca"], tls_cert=certs["rogue_client"],
                     tls_key=certs["rogue_client.key"], timeout=5) as rogue:
        assert code_of(rogue.list_styles) == grpc.StatusCode.UNAVAILABLE


# --- token -------------------------------------------------------------------------------------


def test_token_is_required_except_for_health(start_server: Callable[..., Live], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    live = start_server(token="s3cret-token")
    image = small_png()
    for token in (None, "wrong-token", "s3cret-token-but-longer", ""):
        with StyleClient(live.address, token=token, timeout=10) as client:
            for call in (client.list_styles, lambda: client.stylize(image, style="candy"),
                         lambda: list(client.stream(iter([(1, make_request(image, style="candy"))])))):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, token
            assert client.health() == "SERVING"  # health checks need no token
            assert code_of(lambda: reflection_services(client.channel)) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError, match="needs a token: send 'authorization: Bearer <token>'"):
        live.client.list_styles()
    with StyleClient(live.address, token="wrong-token", timeout=10) as client:
        with pytest.raises(grpc.RpcError, match="the bearer token is not valid"):
            client.list_styles()
    with StyleClient(live.address, token="s3cret-token", timeout=10) as client:
        assert len(client.list_styles()) == 2
        assert client.stylize(image, style="candy").width == 32
        assert [r.frame_id for r in client.stream(iter([(1, make_request(image, style="candy"))]))] == [1]
        assert "styletrain.v1.StyleTransferService" in reflection_services(client.channel)
    stub = health_pb2_grpc.HealthStub(live.client.channel)
    assert stub.Check(health_pb2.HealthCheckRequest(service="styletrain.v1.StyleTransferService"), timeout=5).status \
        == health_pb2.HealthCheckResponse.SERVING

    (tmp_path / "token").write_text("s3cret-token\n")
    assert main(["client", "styles", "--server", live.address, "--token-file", str(tmp_path / "token")]) == 0
    assert main(["client", "styles", "--server", live.address]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_token_server_option_reads_the_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    _, config = config_from_args(parser.parse_args(["--token-file", str(tmp_path / "token")]))
    assert config.token == "s3cret-token"
    assert "s3cret" not in repr(config)


# --- reflection --------------------------------------------------------------------------------


def test_reflection_can_be_turned_off(start_server: Callable[..., Live]) -> None:
    live = start_server(reflection=False)
    for version in ("v1", "v1alpha"):
        assert code_of(lambda: reflection_services(live.client.channel, version)) == grpc.StatusCode.UNIMPLEMENTED
    assert live.client.health() == "SERVING"
