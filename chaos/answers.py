"""A fault between the workload and the nodes: produce answers lost on their way back.

The request reaches the leader and is handled as usual (the batch is written and committed);
only the answer never reaches the producer, which sees a broken connection instead. That is the
history that wedged the idempotent producer (issue 12): a batch in the log whose producer does
not know it, and retries it, while newer batches follow. A power cut makes it by chance; this
makes it on demand, without touching the nodes.

It sits in the workload's gRPC channels (a grpc.aio client interceptor, given to the producers'
`grpc_interceptors`), so it sees every call to every node, whichever node the client follows
after a failover, without the address rewriting a TCP proxy in front of the nodes would need
(metadata and NOT_LEADER hints name the nodes' own addresses).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["AnswerDropper"]

_PRODUCE = "/Produce"
_PRODUCE_STREAM = "/ProduceStream"


class AnswerDropper(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """While `active`, every Produce answer (success or a node's error) is dropped and the
    caller gets UNAVAILABLE, as when a connection dies after the request went through.

    Give a client both `interceptors()`: this one for unary Produce, its twin for the produce
    stream (client/produce_stream.py), where a lost answer is a connection that dies: the
    stream ends, and every request waiting on it fails with UNAVAILABLE."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = False
        self.dropped = 0
        """Answers dropped so far."""
        self.stream_twin = _StreamAnswerDropper(self)

    def interceptors(self) -> list[Any]:
        """Both: a grpc.aio channel files an interceptor under one kind of call only."""
        return [self, self.stream_twin]

    def note_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    @property
    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        """Lose answers from now on (safe from any thread: the nemesis injects from one)."""
        with self._lock:
            self._active = True

    def stop(self) -> None:
        with self._lock:
            self._active = False

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        if not name.endswith(_PRODUCE) or not self._active:
            return call
        with contextlib.suppress(grpc.RpcError):
            await call  # the node handles the request to the end: written, or refused
        if not self._active:  # healed while the node answered: let the answer through
            return call
        self.note_dropped()
        raise _lost()


def _lost() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="chaos: the answer was lost on its way back to the client",
    )


class _StreamAnswerDropper(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """AnswerDropper's twin for ProduceStream: while active, the first answer to come back
    ends the stream (cancelled) and its reader sees UNAVAILABLE; the node handled the request."""

    def __init__(self, owner: AnswerDropper) -> None:
        self._owner = owner

    async def intercept_stream_stream(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: Any,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        if not name.endswith(_PRODUCE_STREAM):
            return call
        owner = self._owner

        async def answers() -> Any:
            while True:
                answer = await call.read()
                if answer is grpc.aio.EOF:
                    return
                if owner.active:
                    owner.note_dropped()
                    call.cancel()
                    raise _lost()
                yield answer

        return answers()
