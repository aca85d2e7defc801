"""`liferaft health`: is a node SERVING, as its standard gRPC health service (grpc.health.v1) says?

A node's health turns SERVING once it sees a controller leader and is registered in the cluster
metadata (node/server.py), which is exactly what a container health check, a Kubernetes exec
probe or a script waiting for a cluster wants to know, as an exit code: 0 SERVING, 1 anything
else (NOT_SERVING, unreachable, no answer in time), 2 bad usage.

Without --address it dials the node's own LIFERAFT_LISTEN, with a wildcard host (0.0.0.0, ::)
read as loopback, so the same command works inside any container whatever port it listens on.

A node whose client listeners serve TLS (LIFERAFT_CLIENT_SECURITY_PROTOCOL SSL or SASL_SSL, or
LIFERAFT_CLIENT_TLS) is dialled over TLS with its own certificate and key from LIFERAFT_TLS_DIR
(accepted even where client certificates are required), checking the CA and the first DNS name
its certificate carries; the health service needs no login.

`python -m liferaft.cli.health` is the same command with fewer imports than the whole `liferaft`
CLI: a container runs it every few seconds (deploy/Dockerfile's HEALTHCHECK).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from liferaft_proto.address import parse_address
from liferaft_proto.ports import DEFAULT_BASE_PORT

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_BASE_PORT}"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


@dataclass(frozen=True, slots=True)
class HealthResult:
    address: str
    status: str
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN, or UNREACHABLE."""
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def __str__(self) -> str:
        return f"{self.address}: {self.status}" + (f" ({self.detail})" if self.detail else "")


def resolve_address(address: str | None, listen: str | None) -> str:
    """The address to dial: --address as given, else the node's listen address made dialable."""
    if address:
        parse_address(address, "--address")
        return address
    if not listen:
        return DEFAULT_ADDRESS
    host, port = parse_address(listen, "LIFERAFT_LISTEN")
    dial = _WILDCARDS.get(host, host)
    if ":" in dial and not dial.startswith("["):
        dial = f"[{dial}]"  # a bare IPv6 literal needs brackets before :port
    return f"{dial}:{port}"


def _tls_files() -> tuple[bytes, bytes, bytes, str | None] | None:
    """The node's CA, certificate, key and first DNS name when its client listeners serve TLS
    (the node's own LIFERAFT_* settings, as a container has them); None for plaintext."""
    protocol = os.environ.get("LIFERAFT_CLIENT_SECURITY_PROTOCOL", "").strip().upper()
    flag = os.environ.get("LIFERAFT_CLIENT_TLS", "").strip().lower() in ("1", "true", "yes", "on")
    if protocol not in ("SSL", "SASL_SSL") and not flag:
        return None
    folder = Path(os.environ.get("LIFERAFT_TLS_DIR", "."))
    node = folder / f"node-{os.environ.get('LIFERAFT_NODE_ID', '').strip()}"
    if not (folder / "node.crt").exists() and (node / "node.crt").exists():
        folder = node  # --tls-dir may name the folder of every node's
    ca = (folder / "ca.crt").read_bytes()
    cert = (folder / "node.crt").read_bytes()
    key = (folder / "node.key").read_bytes()
    from cryptography import x509

    try:
        names = (
            x509.load_pem_x509_certificate(cert)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = []
    return ca, cert, key, (names[0] if names else None)


def _channel(address: str) -> grpc.Channel:
    try:
        tls = _tls_files()
    except OSError as e:
        raise _Unreachable(f"client TLS is on, but: {e}") from None
    if tls is None:
        return grpc.insecure_channel(address)
    ca, cert, key, name = tls
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    options = [("grpc.ssl_target_name_override", name)] if name else []
    return grpc.secure_channel(address, creds, options=options)


class _Unreachable(Exception):
    pass


def check(address: str, timeout_s: float, service: str = "") -> HealthResult:
    """One Health.Check call; never raises for a node that is down or slow."""
    try:
        channel = _channel(address)
    except _Unreachable as e:
        return HealthResult(address, "UNREACHABLE", str(e))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return HealthResult(address, "SERVICE_UNKNOWN", f"no health status for {service!r}")
            return HealthResult(address, "UNREACHABLE", f"{code.name}: {e.details()}")
    return HealthResult(address, health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def wait_serving(
    address: str, timeout_s: float, wait_s: float, service: str = "", interval_s: float = 0.5
) -> HealthResult:
    """Check until SERVING or until wait_s has passed (wait_s 0: exactly one check)."""
    deadline = time.monotonic() + wait_s
    while True:
        result = check(address, timeout_s, service)
        if result.serving or time.monotonic() + interval_s > deadline:
            return result
        time.sleep(interval_s)


def health_cmd(
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            "-a",
            envvar="LIFERAFT_HEALTH_ADDRESS",
            help="HOST:PORT of the node. Default: LIFERAFT_LISTEN, a wildcard host read as "
            f"loopback; without it {DEFAULT_ADDRESS}.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for one answer.")
    ] = 3.0,
    wait: Annotated[
        float,
        typer.Option(
            "--wait", min=0.0, help="Keep checking up to this many seconds until SERVING."
        ),
    ] = 0.0,
    service: Annotated[
        str, typer.Option("--service", help="The health service name; '' is the whole node.")
    ] = "",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing; exit code only.")
    ] = False,
) -> None:
    """Exit 0 if the node's gRPC health service says SERVING, else 1 (container health checks)."""
    try:
        target = resolve_address(address, os.environ.get("LIFERAFT_LISTEN"))
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    result = wait_serving(target, timeout, wait, service)
    if not quiet:
        typer.echo(str(result), err=not result.serving)
    raise typer.Exit(0 if result.serving else 1)


app = typer.Typer(add_completion=False)
app.command("health")(health_cmd)


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    typer.run(health_cmd)
