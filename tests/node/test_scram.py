"""SCRAM credentials in the controller's state (node/scram.py): the RFC 5802 exchange against a
stored credential, password checks, and the two user commands, which change nothing when bad."""

from __future__ import annotations

import base64

import pytest
from scramp import ScramClient, ScramException

from node.controller import ControllerState
from node.errors import BrokerError
from node.scram import (
    ScramCredential,
    apply_user_command,
    check_password,
    make_credential,
)


def exchange(credential: ScramCredential, user: str, password: str) -> None:
    """One SCRAM login, client and server in-process; raises ScramException when refused."""
    from scramp import ScramMechanism

    server = ScramMechanism(credential.mechanism).make_server(lambda _: credential.auth_info())
    client = ScramClient([credential.mechanism], user, password)
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    server.set_client_final(client.get_client_final())
    client.set_server_final(server.get_server_final())


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_stored_credential_logs_in_with_its_password_only(mechanism: str) -> None:
    cred = make_credential("s3cret", mechanism)
    exchange(cred, "alice", "s3cret")
    with pytest.raises(ScramException):
        exchange(cred, "alice", "wrong")
    assert check_password(cred, "s3cret")
    assert not check_password(cred, "s3cret ")


def upsert(name: str, cred: ScramCredential) -> dict[str, object]:
    return {"op": "upsert_user", "name": name, **cred.to_json()}


def test_user_commands_and_the_snapshot_round_trip() -> None:
    st = ControllerState()
    cred = make_credential("pw", "SCRAM-SHA-512")
    apply_user_command(st.users, upsert("alice", cred))
    apply_user_command(st.users, upsert("alice", make_credential("pw", "SCRAM-SHA-256")))
    back = ControllerState.from_json(st.to_json())
    assert back.users == st.users
    assert back.users["alice"]["SCRAM-SHA-512"] == cred
    apply_user_command(
        st.users, {"op": "delete_user", "name": "alice", "mechanism": "SCRAM-SHA-256"}
    )
    assert set(st.users["alice"]) == {"SCRAM-SHA-512"}
    apply_user_command(st.users, {"op": "delete_user", "name": "alice", "mechanism": None})
    assert st.users == {}


def test_bad_user_commands_change_nothing() -> None:
    st = ControllerState()
    good = upsert("alice", make_credential("pw"))
    apply_user_command(st.users, good)
    before = st.to_json()
    short_key = {**good, "stored_key": base64.b64encode(b"x" * 8).decode()}
    bad = [
        {**good, "name": ""},
        {**good, "name": "a,b"},
        {**good, "mechanism": "SCRAM-MD5"},
        {**good, "iterations": 10},
        {**good, "salt": "not base64!"},
        short_key,
        {"op": "delete_user", "name": "bob", "mechanism": None},
        {"op": "delete_user", "name": "alice", "mechanism": "SCRAM-SHA-256"},
    ]
    for cmd in bad:
        with pytest.raises(BrokerError):
            apply_user_command(st.users, cmd)
        assert st.to_json() == before, cmd


def test_make_credential_refuses_what_it_cannot_make() -> None:
    with pytest.raises(ValueError, match="mechanism"):
        make_credential("pw", "SCRAM-SHA-1")
    with pytest.raises(ValueError, match="empty"):
        make_credential("")
