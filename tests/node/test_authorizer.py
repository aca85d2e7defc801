"""node/authorizer.py: off allows everything; on, super users may do all, others what an ACL
allows; refusals name the principal, the operation and the resource exactly."""

from __future__ import annotations

import pytest

from node.acl import (
    CLUSTER,
    AclBinding,
    AclSet,
    Operation,
    PatternType,
    Permission,
    ResourcePattern,
    ResourceType,
    group,
    topic,
    transactional_id,
)
from node.authorizer import Authorizer
from node.config import ConfigError, NodeConfig
from node.errors import BrokerError, ErrorCode
from node.principal import caller


def _acl(
    who: str,
    op: Operation,
    name: str = "orders",
    perm: Permission = Permission.ALLOW,
    rtype: ResourceType = ResourceType.TOPIC,
    pattern: PatternType = PatternType.LITERAL,
) -> AclBinding:
    return AclBinding(
        pattern=ResourcePattern(type=rtype, name=name, pattern_type=pattern),
        principal=who,
        operation=op,
        permission=perm,
    )


def test_off_allows_everything() -> None:
    auth = Authorizer(False, [], AclSet)
    auth.may("User:bob", Operation.DELETE, topic("orders"))
    auth.check(Operation.ALTER, CLUSTER)


@pytest.mark.parametrize(
    ("op", "resource", "message"),
    [
        (
            Operation.WRITE,
            topic("orders"),
            "TOPIC_AUTHORIZATION_FAILED: User:bob may not WRITE topic orders",
        ),
        (Operation.READ, group("g1"), "GROUP_AUTHORIZATION_FAILED: User:bob may not READ group g1"),
        (
            Operation.ALTER,
            CLUSTER,
            "CLUSTER_AUTHORIZATION_FAILED: User:bob may not ALTER the cluster",
        ),
        (
            Operation.WRITE,
            transactional_id("tx"),
            "TRANSACTIONAL_ID_AUTHORIZATION_FAILED: User:bob may not WRITE transactional id tx",
        ),
    ],
)
def test_a_refusal_names_what_is_missing(op: Operation, resource: object, message: str) -> None:
    auth = Authorizer(True, [], AclSet)
    with pytest.raises(BrokerError) as e:
        auth.may("User:bob", op, resource)  # type: ignore[arg-type]
    assert f"{e.value.code_name}: {e.value.message}" == message
    assert not e.value.retriable


def test_super_users_and_acls_for_the_caller() -> None:
    acls = AclSet([_acl("User:alice", Operation.WRITE)])
    auth = Authorizer(True, ["User:admin"], lambda: acls)
    auth.may("User:admin", Operation.ALTER, CLUSTER)
    auth.may("User:alice", Operation.WRITE, topic("orders"))
    token = caller.set("User:alice")
    try:
        auth.check(Operation.WRITE, topic("orders"))
        assert auth.permits(Operation.DESCRIBE, topic("orders"))
        assert not auth.permits(Operation.DESCRIBE, topic("other"))
        with pytest.raises(BrokerError) as e:
            auth.check(Operation.READ, topic("orders"))
        assert e.value.message == "User:alice may not READ topic orders"
    finally:
        caller.reset(token)
    # The default caller is User:ANONYMOUS.
    with pytest.raises(BrokerError, match="User:ANONYMOUS may not WRITE topic orders"):
        auth.check(Operation.WRITE, topic("orders"))


def test_acls_are_read_as_they_change() -> None:
    acls = AclSet()
    auth = Authorizer(True, [], lambda: acls)
    assert not auth.allows("User:a", Operation.READ, topic("t"))
    acls.add(_acl("User:a", Operation.READ, "t"))
    assert auth.allows("User:a", Operation.READ, topic("t"))
    acls.add(_acl("User:*", Operation.ALL, "t", Permission.DENY))
    assert not auth.allows("User:a", Operation.READ, topic("t"))


def test_idempotent_write_through_write_on_a_topic() -> None:
    acls = AclSet([_acl("User:p", Operation.WRITE, "pay.", pattern=PatternType.PREFIXED)])
    auth = Authorizer(True, [], lambda: acls)
    auth.may("User:p", Operation.IDEMPOTENT_WRITE, CLUSTER)
    with pytest.raises(BrokerError) as e:
        auth.may("User:q", Operation.IDEMPOTENT_WRITE, CLUSTER)
    assert e.value.code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert e.value.message == "User:q may not IDEMPOTENT_WRITE the cluster"


def test_config_checks_super_users() -> None:
    base = {
        "node_id": 1,
        "listen": "127.0.0.1:9092",
        "peers": {1: "127.0.0.1:9092"},
        "data_dir": "/tmp/x",
        "insecure_plaintext_between_nodes": True,
    }
    NodeConfig(**base, authorizer=True, super_users=["User:admin"]).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a principal like User:admin"):
        NodeConfig(**base, authorizer=True, super_users=["admin"]).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs --authorizer"):
        NodeConfig(**base, super_users=["User:admin"]).validate()  # type: ignore[arg-type]
