"""Who is asking: the principal a request runs as, written as Kafka writes it (`User:alice`;
a certificate user is `User:` plus the certificate's subject, e.g. `User:CN=alice,O=acme`).

Authentication sets it once per request (gRPC: in the `unary` wrapper of node/service.py,
from the call's credentials), once per stream (ProduceStream: when it opens, before its reader
task is made, so every request read on it runs as the stream's caller) or once per connection
(Kafka: after SASL or the TLS handshake, before the connection's request tasks are made, so
they inherit it); authorization reads it.
A context variable, so the handlers in between need not pass it along.
"""

from __future__ import annotations

from contextvars import ContextVar

ANONYMOUS = "User:ANONYMOUS"
"""Kafka's name for a caller that did not authenticate (a plaintext listener without SASL)."""

caller: ContextVar[str] = ContextVar("liferaft_caller", default=ANONYMOUS)
"""The principal of the request being served."""
