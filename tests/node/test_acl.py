"""ACL values and Kafka's matching rules (node/acl.py): examples, and properties checked by
hypothesis against a naive restatement of the rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.acl import (
    CLUSTER,
    WILDCARD,
    AclBinding,
    AclBindingFilter,
    AclSet,
    Operation,
    PatternType,
    Permission,
    Resource,
    ResourcePattern,
    ResourceType,
    decide,
    may_write_some_topic,
    topic,
)
from node.errors import BrokerError, ErrorCode

REAL_OPS = [op for op in Operation if op != Operation.ANY]
REQUEST_OPS = [op for op in REAL_OPS if op != Operation.ALL]
TYPES = [ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID]
PRINCIPALS = ["User:alice", "User:bob", "User:*"]
NAMES = ["a", "ab", "abc", "b", "ba"]


def acl(
    principal: str,
    op: Operation,
    perm: Permission,
    name: str = "orders",
    pattern: PatternType = PatternType.LITERAL,
    rtype: ResourceType = ResourceType.TOPIC,
) -> AclBinding:
    return AclBinding(
        pattern=ResourcePattern(type=rtype, name=name, pattern_type=pattern),
        principal=principal,
        operation=op,
        permission=perm,
    )


patterns = st.one_of(
    st.builds(
        lambda t, n: ResourcePattern(type=t, name=n, pattern_type=PatternType.LITERAL),
        st.sampled_from(TYPES),
        st.sampled_from([*NAMES, WILDCARD]),
    ),
    st.builds(
        lambda t, n: ResourcePattern(type=t, name=n, pattern_type=PatternType.PREFIXED),
        st.sampled_from(TYPES),
        st.sampled_from(NAMES),
    ),
)
bindings = st.builds(
    lambda p, who, op, perm: AclBinding(pattern=p, principal=who, operation=op, permission=perm),
    patterns,
    st.sampled_from(PRINCIPALS),
    st.sampled_from(REAL_OPS),
    st.sampled_from([Permission.ALLOW, Permission.DENY]),
)
resources = st.builds(Resource, st.sampled_from(TYPES), st.sampled_from(NAMES))
acl_lists = st.lists(bindings, max_size=12)
askers = st.sampled_from(["User:alice", "User:bob"])


def naive(acls: list[AclBinding], who: str, op: Operation, res: Resource) -> bool:
    """Kafka's rules as written in its documentation, one by one."""

    def applies(a: AclBinding) -> bool:
        p = a.pattern
        name_ok = (
            res.name.startswith(p.name)
            if p.pattern_type == PatternType.PREFIXED
            else p.name in ("*", res.name)
        )
        return p.type == res.type and name_ok and a.principal in (who, "User:*")

    mine = [a for a in acls if applies(a)]
    if any(a.permission == Permission.DENY and a.operation in (op, Operation.ALL) for a in mine):
        return False
    implied = {op}
    if op == Operation.DESCRIBE:
        implied |= {Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER}
    if op == Operation.DESCRIBE_CONFIGS:
        implied |= {Operation.ALTER_CONFIGS}
    return any(
        a.permission == Permission.ALLOW
        and (a.operation == Operation.ALL or a.operation in implied)
        for a in mine
    )


@settings(max_examples=500)
@given(acl_lists, askers, st.sampled_from(REQUEST_OPS), resources)
def test_decide_agrees_with_the_rules_as_written(
    acls: list[AclBinding], who: str, op: Operation, res: Resource
) -> None:
    assert decide(AclSet(acls), who, op, res) == naive(acls, who, op, res)


@given(acl_lists, askers, st.sampled_from(REQUEST_OPS), resources, st.sampled_from(PRINCIPALS))
def test_a_matching_deny_beats_any_allow(
    acls: list[AclBinding], who: str, op: Operation, res: Resource, deny_who: str
) -> None:
    if deny_who not in (who, "User:*"):
        deny_who = who
    denied = AclSet(
        [
            *acls,
            acl(deny_who, op, Permission.DENY, res.name, rtype=res.type),
            acl(who, Operation.ALL, Permission.ALLOW, WILDCARD, rtype=res.type),
        ]
    )
    assert not decide(denied, who, op, res)


@given(st.sampled_from(REQUEST_OPS), resources, askers)
def test_all_allows_every_operation(op: Operation, res: Resource, who: str) -> None:
    acls = AclSet([acl(who, Operation.ALL, Permission.ALLOW, res.name, rtype=res.type)])
    assert decide(acls, who, op, res)


@given(acl_lists, askers, st.sampled_from(REQUEST_OPS), resources, bindings)
def test_adding_an_allow_never_denies_and_a_deny_never_allows(
    acls: list[AclBinding], who: str, op: Operation, res: Resource, extra: AclBinding
) -> None:
    before = decide(AclSet(acls), who, op, res)
    after = decide(AclSet([*acls, extra]), who, op, res)
    if extra.permission == Permission.ALLOW:
        assert after or not before
    else:
        assert before or not after


@given(st.sampled_from([Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER]))
def test_read_write_delete_alter_imply_describe_but_not_each_other(op: Operation) -> None:
    acls = AclSet([acl("User:alice", op, Permission.ALLOW)])
    assert decide(acls, "User:alice", Operation.DESCRIBE, topic("orders"))
    for other in (Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER):
        assert decide(acls, "User:alice", other, topic("orders")) == (other == op)


def test_alter_configs_implies_describe_configs_only() -> None:
    acls = AclSet([acl("User:alice", Operation.ALTER_CONFIGS, Permission.ALLOW)])
    assert decide(acls, "User:alice", Operation.DESCRIBE_CONFIGS, topic("orders"))
    assert not decide(acls, "User:alice", Operation.DESCRIBE, topic("orders"))


def test_no_acl_denies_and_others_acls_do_not_apply() -> None:
    assert not decide(AclSet(), "User:alice", Operation.READ, topic("orders"))
    acls = AclSet([acl("User:alice", Operation.READ, Permission.ALLOW)])
    assert not decide(acls, "User:bob", Operation.READ, topic("orders"))
    assert not decide(acls, "User:alice", Operation.READ, topic("orders2"))


def test_wildcard_principal_and_wildcard_name() -> None:
    acls = AclSet([acl("User:*", Operation.WRITE, Permission.ALLOW, WILDCARD)])
    assert decide(acls, "User:anyone", Operation.WRITE, topic("x"))
    assert not decide(acls, "User:anyone", Operation.WRITE, Resource(ResourceType.GROUP, "x"))


def test_prefixed_patterns() -> None:
    acls = AclSet(
        [acl("User:alice", Operation.READ, Permission.ALLOW, "pay.", PatternType.PREFIXED)]
    )
    assert decide(acls, "User:alice", Operation.READ, topic("pay.eu"))
    assert decide(acls, "User:alice", Operation.READ, topic("pay."))
    assert not decide(acls, "User:alice", Operation.READ, topic("pay"))
    assert not decide(acls, "User:alice", Operation.READ, topic("xpay.eu"))


def test_idempotent_write_through_write_on_some_topic() -> None:
    who = "User:alice"
    assert not may_write_some_topic(AclSet(), who)
    allow = acl(who, Operation.WRITE, Permission.ALLOW, "pay.", PatternType.PREFIXED)
    assert may_write_some_topic(AclSet([allow]), who)
    assert not may_write_some_topic(AclSet([allow]), "User:bob")
    # A deny covering every topic the allow names takes it back; a narrower one does not.
    wide = acl(who, Operation.WRITE, Permission.DENY, "pay", PatternType.PREFIXED)
    narrow = acl(who, Operation.WRITE, Permission.DENY, "pay.eu", PatternType.PREFIXED)
    everything = acl("User:*", Operation.ALL, Permission.DENY, WILDCARD)
    assert not may_write_some_topic(AclSet([allow, wide]), who)
    assert may_write_some_topic(AclSet([allow, narrow]), who)
    assert not may_write_some_topic(AclSet([allow, everything]), who)
    read_only = acl(who, Operation.READ, Permission.ALLOW, WILDCARD)
    assert not may_write_some_topic(AclSet([read_only]), who)


@settings(max_examples=300)
@given(acl_lists, askers)
def test_may_write_some_topic_is_sound(acls: list[AclBinding], who: str) -> None:
    """When it says yes, some topic name is writable; when every plain name is writable-checked
    and none is, it says no unless an allow is only on names outside our sample."""
    got = may_write_some_topic(AclSet(acls), who)
    candidates = [*NAMES, *(a.pattern.name for a in acls), "zzz"]
    some = any(decide(AclSet(acls), who, Operation.WRITE, topic(n)) for n in candidates)
    if some:
        assert got
    # got without `some` can only mean an allowed name outside the sample (a longer prefix).
    if got and not some:
        assert any(a.pattern.pattern_type == PatternType.PREFIXED for a in acls)


@given(acl_lists, bindings)
def test_filters_from_a_binding_find_exactly_it(acls: list[AclBinding], target: AclBinding) -> None:
    exact = AclBindingFilter(
        resource_type=target.pattern.type,
        name=target.pattern.name,
        pattern_type=target.pattern.pattern_type,
        principal=target.principal,
        host=target.host,
        operation=target.operation,
        permission=target.permission,
    )
    s = AclSet([*acls, target])
    assert s.matching(exact) == [target]
    assert AclSet(acls).matching(AclBindingFilter()) == list(dict.fromkeys(acls))
    gone = s.remove_matching(exact)
    assert gone == [target] and target not in s


@given(acl_lists, resources)
def test_match_filter_finds_the_acls_that_apply(acls: list[AclBinding], res: Resource) -> None:
    flt = AclBindingFilter(resource_type=res.type, name=res.name, pattern_type=PatternType.MATCH)
    assert AclSet(acls).matching(flt) == [a for a in dict.fromkeys(acls) if a.pattern.matches(res)]


@given(bindings)
def test_json_round_trip(binding: AclBinding) -> None:
    assert AclBinding.from_json(binding.to_json()) == binding


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"resource_type": "any", "name": "x"}, "one resource type"),
        ({"pattern_type": "match"}, "literal or prefixed"),
        ({"operation": "any"}, "one operation"),
        ({"permission": "any"}, "allows or denies"),
        ({"operation": "fly"}, "unknown operation 'fly'"),
        ({"principal": "alice"}, "must look like User:NAME"),
        ({"host": "10.0.0.1"}, "only host '*'"),
        ({"name": ""}, "non-empty"),
        ({"name": "x" * 300}, "at most 255"),
        ({"resource_type": "cluster", "name": "c"}, "'kafka-cluster'"),
        ({"pattern_type": "prefixed", "name": "*"}, "use literal"),
    ],
)
def test_bad_acls_are_refused_clearly(raw: dict[str, str], why: str) -> None:
    good = acl("User:alice", Operation.READ, Permission.ALLOW).to_json()
    with pytest.raises(BrokerError) as e:
        AclBinding.from_json({**good, **raw})
    assert e.value.code == ErrorCode.INVALID_REQUEST
    assert why in e.value.message


def test_cluster_acl() -> None:
    a = acl(
        "User:ops", Operation.ALTER, Permission.ALLOW, "kafka-cluster", rtype=ResourceType.CLUSTER
    )
    assert decide(AclSet([a]), "User:ops", Operation.ALTER, CLUSTER)
    assert decide(AclSet([a]), "User:ops", Operation.DESCRIBE, CLUSTER)
    assert str(CLUSTER) == "the cluster"
