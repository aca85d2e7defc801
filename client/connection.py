"""gRPC channels to the cluster's nodes: one per address, opened on first use, reused.

A grpc.aio channel multiplexes every call to its node over one HTTP/2 connection and reconnects
by itself, so the client needs exactly one per node. The reconnect backoff is kept short (gRPC's
default grows to two minutes): a node that comes back after a crash should be usable again
within about a second, not after the channel's backoff expires.

Channels belong to the event loop that created them: create and close a `Connections` on one
loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from liferaft_proto.v1 import broker_pb2_grpc

__all__ = ["MAX_MESSAGE_BYTES", "Connections"]

MAX_MESSAGE_BYTES = 64 << 20
"""Largest gRPC message either way; the node's own limit (node/server.py) is the same."""


def channel_options(reconnect_backoff_max_ms: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", min(100, reconnect_backoff_max_ms)),
        ("grpc.min_reconnect_backoff_ms", min(100, reconnect_backoff_max_ms)),
        ("grpc.max_reconnect_backoff_ms", reconnect_backoff_max_ms),
        # Notice a node that stopped answering (paused, hung, cut off behind a NAT) within
        # about two seconds, instead of waiting out each call's deadline (30 s by default):
        # an unanswered HTTP/2 ping closes the connection and the call fails over. Nodes
        # accept pings this often (node/server.py).
        ("grpc.keepalive_time_ms", 1_000),
        ("grpc.keepalive_timeout_ms", 1_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class Connections:
    """The channel and Broker stub per node address."""

    def __init__(
        self,
        *,
        reconnect_backoff_max_ms: int = 1000,
        interceptors: Sequence[Any] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._credentials = credentials
        self._options = channel_options(reconnect_backoff_max_ms)
        self._interceptors = list(interceptors)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, broker_pb2_grpc.BrokerStub] = {}
        self._closed = False

    def stub(self, address: str) -> broker_pb2_grpc.BrokerStub:
        stub = self._stubs.get(address)
        if stub is None:
            if self._closed:
                raise RuntimeError("the client is closed")
            interceptors = self._interceptors or None
            channel = (
                grpc.aio.secure_channel(
                    address, self._credentials, options=self._options, interceptors=interceptors
                )
                if self._credentials is not None
                else grpc.aio.insecure_channel(
                    address, options=self._options, interceptors=interceptors
                )
            )
            self._channels[address] = channel
            stub = self._stubs[address] = broker_pb2_grpc.BrokerStub(channel)
        return stub

    def __contains__(self, address: str) -> bool:
        return address in self._channels

    async def drop(self, address: str) -> None:
        """Close one node's channel (it is gone from the cluster)."""
        channel = self._channels.pop(address, None)
        self._stubs.pop(address, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()
