"""The one place that decides whether the caller may do what a request asks.

Every handler of both listeners (gRPC in node/api/, Kafka in node/kafka/handlers/) asks here, in
one line at the call site, before it changes or reveals anything:
`ctx.broker.authorizer.check(Operation.WRITE, topic(name))`. The caller is the principal the
authentication set for the request being served (node/principal.py); the ACLs are the
controller's replica on this node (node/acl.py has the matching rules).

With `NodeConfig.authorizer` off (the default) everything is allowed, as before ACLs existed.
On, super users (`NodeConfig.super_users`) may do everything and anyone else only what an ACL
allows: no ACL for a resource means no access (Kafka's allow.everyone.if.no.acl.found=false).

Node-to-node traffic never comes here: the Raft transport has its own trust (mutual TLS and the
node's certificate, node/tls.py). A request one node forwards to another (to the controller
leader) is checked on the node the client called, before it is forwarded, and is checked again
where it lands; it carries the caller's principal signed with the forwarding node's key
(liferaft_proto/credentials.py `SignedCalls`, checked in node/authn.py), so no client can claim
another's principal. Nodes joined by --insecure-plaintext-between-nodes have no key to sign
with: their forwarded requests land as User:ANONYMOUS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from node.acl import (
    CLUSTER,
    AclSet,
    Operation,
    Resource,
    ResourceType,
    check_principal,
    decide,
    may_write_some_topic,
)
from node.errors import BrokerError, ErrorCode
from node.principal import caller

__all__ = ["Authorizer", "refused"]

_CODES = {
    ResourceType.TOPIC: ErrorCode.TOPIC_AUTHORIZATION_FAILED,
    ResourceType.GROUP: ErrorCode.GROUP_AUTHORIZATION_FAILED,
    ResourceType.CLUSTER: ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
    ResourceType.TRANSACTIONAL_ID: ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


def refused(principal: str, operation: Operation, resource: Resource) -> BrokerError:
    """The error naming exactly what is missing: `User:bob may not WRITE topic orders`."""
    return BrokerError(_CODES[resource.type], f"{principal} may not {operation.name} {resource}")


class Authorizer:
    def __init__(
        self, enabled: bool, super_users: Iterable[str], acls: Callable[[], AclSet]
    ) -> None:
        self.enabled = enabled
        self.super_users = frozenset(check_principal(p) for p in super_users)
        self._acls = acls
        """The controller's current ACLs (its state object is replaced by a snapshot)."""

    def allows(self, principal: str, operation: Operation, resource: Resource) -> bool:
        if not self.enabled or principal in self.super_users:
            return True
        acls = self._acls()
        if decide(acls, principal, operation, resource):
            return True
        # Kafka's InitProducerId: an idempotent producer needs IDEMPOTENT_WRITE on the cluster,
        # or WRITE on some topic (every batch is still checked against its own topic).
        return (
            operation == Operation.IDEMPOTENT_WRITE
            and resource == CLUSTER
            and may_write_some_topic(acls, principal)
        )

    def may(self, principal: str, operation: Operation, resource: Resource) -> None:
        """None if `principal` may do `operation` on `resource`, else the *_AUTHORIZATION_FAILED
        error that says who may not do what."""
        if not self.allows(principal, operation, resource):
            raise refused(principal, operation, resource)

    def check(self, operation: Operation, resource: Resource) -> None:
        """`may` for the caller of the request being served."""
        if self.enabled:
            self.may(caller.get(), operation, resource)

    def check_any(self, operation: Operation, *resources: Resource) -> None:
        """`check` passing if the caller may do `operation` on any of `resources` (CREATE on
        the cluster or on the topic); the refusal names the last, the narrowest."""
        if self.enabled and not any(self.permits(operation, r) for r in resources):
            raise refused(caller.get(), operation, resources[-1])

    def permits(self, operation: Operation, resource: Resource) -> bool:
        """`allows` for the caller of the request being served (to leave out what it may not
        see, as Metadata does with topics it may not DESCRIBE)."""
        return not self.enabled or self.allows(caller.get(), operation, resource)
