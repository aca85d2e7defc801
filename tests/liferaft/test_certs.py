"""`liferaft certs create` and what a node makes of its output: the layout node/tls.py loads,
keys only their owner can read, a CA reused and node certificates kept unless --force, bad
input refused; and a node started with neither certificates nor the explicit plaintext flag
refuses to start, naming both."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from liferaft.certs import CertsError, create_certs, parse_node_ids
from node.config import ConfigError, NodeConfig
from node.tls import PeerTls, TlsFiles


def _uris(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def test_cli_makes_a_ca_and_one_folder_per_node_that_a_node_loads(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "liferaft", "certs", "create", "--dir", str(tmp_path), "--nodes", "1-3",
         "--hosts", "node1.example,10.0.0.7"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "CA made" in out.stdout
    for key in [tmp_path / "ca.key", *(tmp_path / f"node-{n}" / "node.key" for n in (1, 2, 3))]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for n in (1, 2, 3):
        assert _uris(tmp_path / f"node-{n}" / "node.crt") == [f"liferaft://node/{n}"]
        tls = PeerTls(TlsFiles.find(n, tmp_path), n)  # finds DIR/node-N/ from the top folder
        assert tls.files.cert == tmp_path / f"node-{n}" / "node.crt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt", "ca.key", "node-1", "node-2", "node-3",
    ]  # fmt: skip


def test_the_ca_is_reused_and_node_certificates_kept_unless_forced(tmp_path: Path) -> None:
    first = create_certs(tmp_path, [1, 2])
    ca = (tmp_path / "ca.crt").read_bytes()
    node1 = (tmp_path / "node-1" / "node.crt").read_bytes()
    again = create_certs(tmp_path, [1, 2, 3])
    assert first.ca_created and not again.ca_created
    assert again.made == (3,) and again.kept == (1, 2)
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "node-1" / "node.crt").read_bytes() == node1
    forced = create_certs(tmp_path, [1], force=True)
    assert forced.made == (1,)
    assert (tmp_path / "node-1" / "node.crt").read_bytes() != node1
    PeerTls(TlsFiles.find(3, tmp_path), 3)  # node 3, made later, is signed by the same CA


def test_bad_requests_are_refused_and_write_nothing(tmp_path: Path) -> None:
    for bad in ("", "0", "x", "3-1", "1,,-2"):
        with pytest.raises(CertsError):
            parse_node_ids(bad)
    assert parse_node_ids("1,4-6,2") == [1, 2, 4, 5, 6]
    create_certs(tmp_path / "a", [1])
    (tmp_path / "a" / "ca.key").unlink()
    with pytest.raises(CertsError, match=r"ca\.key"):
        create_certs(tmp_path / "a", [2])
    assert not (tmp_path / "a" / "node-2").exists()
    # A node folder left from another CA is not silently kept.
    create_certs(tmp_path / "b", [1])
    (tmp_path / "c").mkdir()
    (tmp_path / "b" / "node-1").rename(tmp_path / "c" / "node-1")
    with pytest.raises(CertsError, match="not signed by this CA"):
        create_certs(tmp_path / "c", [1])


def _config(tmp_path: Path, **kw: object) -> NodeConfig:
    return NodeConfig(
        node_id=1, listen="127.0.0.1:9092", peers={1: "127.0.0.1:9092"}, data_dir=tmp_path, **kw
    )  # type: ignore[arg-type]


def test_a_node_needs_certificates_or_the_explicit_unsafe_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        _config(tmp_path).validate()
    assert "--tls-dir" in str(e.value) and "--insecure-plaintext-between-nodes" in str(e.value)
    with pytest.raises(ConfigError, match="contradict"):
        _config(tmp_path, tls_dir=tmp_path, insecure_plaintext_between_nodes=True).validate()
    _config(tmp_path, tls_dir=tmp_path).validate()
    _config(tmp_path, insecure_plaintext_between_nodes=True).validate()


def test_the_node_command_says_so_and_exits(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "liferaft", "node", "--node-id", "1", "--listen", "127.0.0.1:1",
            "--peers", "1@127.0.0.1:1", "--data-dir", str(tmp_path / "d")]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--tls-dir" in done.stderr and "--insecure-plaintext-between-nodes" in done.stderr
    assert not (tmp_path / "d").exists()
