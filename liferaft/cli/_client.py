"""What the `liferaft` commands that talk to a cluster as a client share: topic, cluster, group,
produce, consume.

They use the Python client's blocking facade (client.sync), so the main thread reads stdin and
prints while the client's event loop runs on its own thread, and Ctrl-C cancels cleanly. Each
imports the client inside its command function, so loading the CLI loads no client.

Every command takes --bootstrap HOST:PORT,... (or LIFERAFT_BOOTSTRAP); those that print data
take --json. A cluster error prints one line, its code and message, and exits 1; bad usage
exits 2. Record values are printed as their raw bytes (liferaft/cli/_formats.py); --json shows
non-UTF-8 bytes as {"base64": ...}.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from client import ConsumerRecord, PartitionMetadata

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        envvar="LIFERAFT_BOOTSTRAP",
        help="Any nodes of the cluster: HOST:PORT,HOST:PORT,...",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.5,
        help="Seconds the command may take, retries included; then it says what was missing.",
    ),
]
DEFAULT_TIMEOUT_S = 15.0
"""Admin commands give up after this long (retrying what the cluster says may pass: no
controller leader for a moment), with the last error the cluster gave."""


SECURITY_ENV = {
    "security_protocol": "LIFERAFT_SECURITY_PROTOCOL",
    "ssl_cafile": "LIFERAFT_SSL_CAFILE",
    "ssl_certfile": "LIFERAFT_SSL_CERTFILE",
    "ssl_keyfile": "LIFERAFT_SSL_KEYFILE",
    "sasl_mechanism": "LIFERAFT_SASL_MECHANISM",
    "sasl_plain_username": "LIFERAFT_SASL_USERNAME",
    "sasl_plain_password": "LIFERAFT_SASL_PASSWORD",
}
"""The client's security options (aiokafka's names) and where the CLI takes them from: the
environment, or `liferaft --security-protocol SSL --ssl-cafile ...` which sets it, over the
TOML file LIFERAFT_CLIENT_CONFIG names (`--client-config`). The password has no flag: a
command line is seen by every user of the machine (ps), the environment and a file are not."""


def security_settings() -> dict[str, Any]:
    """The security options for every client a command makes."""
    settings: dict[str, Any] = {}
    path = os.environ.get("LIFERAFT_CLIENT_CONFIG", "").strip()
    if path:
        settings.update(_client_config(path))
    settings.update(
        {opt: v for opt, env in SECURITY_ENV.items() if (v := os.environ.get(env, "").strip())}
    )
    return settings


def _client_config(path: str) -> dict[str, Any]:
    import tomllib
    from pathlib import Path

    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise _fail(f"client config {path}: {e.strerror or e}", 2) from None
    except tomllib.TOMLDecodeError as e:
        raise _fail(f"client config {path} is not valid TOML: {e}", 2) from None
    unknown = sorted(set(raw) - set(SECURITY_ENV))
    if unknown:
        raise _fail(
            f"client config {path}: unknown setting(s) {', '.join(unknown)} (known: "
            f"{', '.join(SECURITY_ENV)})",
            2,
        )
    folder = Path(path).parent
    return {
        k: str(folder / v) if k.startswith("ssl_") and not Path(str(v)).is_absolute() else str(v)
        for k, v in raw.items()
    }


def admin_client(bootstrap: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """A SyncAdminClient whose every call ends within timeout_s."""
    from client import SyncAdminClient

    ms = int(timeout_s * 1000)
    try:
        return SyncAdminClient(
            _bootstrap(bootstrap),
            timeout_ms=ms,
            request_timeout_ms=min(ms, 10_000),
            **security_settings(),
        )
    except ValueError as e:
        raise _fail(str(e), 2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _bootstrap(value: str | None) -> str:
    if not value or not value.strip():
        raise _fail("no cluster given: pass --bootstrap HOST:PORT,... or set LIFERAFT_BOOTSTRAP", 2)
    return value


@contextmanager
def _client_errors() -> Iterator[None]:
    """The CLI's one error boundary: cluster errors exit 1, bad arguments exit 2."""
    from client import LiferaftError

    try:
        yield
    except LiferaftError as e:
        raise _fail(f"{e.code_name}: {e.message}") from None
    except ValueError as e:
        raise _fail(str(e), 2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data))


def _node(node_id: int) -> int | None:
    return node_id if node_id > 0 else None


def _partition_json(p: PartitionMetadata) -> dict[str, Any]:
    return {
        "partition": p.partition,
        "leader": _node(p.leader),
        "leader_epoch": p.leader_epoch,
        "replicas": list(p.replicas),
        "isr": list(p.isr),
        "high_watermark": p.high_watermark,
        "log_start_offset": p.log_start_offset,
    }


def plural(n: int, word: str, words: str | None = None) -> str:
    """ "1 partition", "3 partitions": a count with its noun in the right number."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _ids(ids: tuple[int, ...]) -> str:
    return ",".join(map(str, ids)) or "-"


def _parse_configs(items: list[str] | None, flag: str = "--config") -> dict[str, str]:
    configs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _fail(f"{flag} {item!r} must look like NAME=VALUE, e.g. retention.ms=3600000", 2)
        configs[key.strip()] = value.strip()
    return configs


def _bytes_json(value: bytes | None) -> str | dict[str, str] | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def _record_json(r: ConsumerRecord) -> dict[str, Any]:
    return {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "key": _bytes_json(r.key),
        "value": _bytes_json(r.value),
        "tombstone": r.value is None,
        "headers": [[k, _bytes_json(v)] for k, v in r.headers],
    }
