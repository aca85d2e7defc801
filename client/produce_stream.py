"""Produce over one long-lived ProduceStream call per node, instead of a unary call per batch.

A unary gRPC call costs the leader about a third of its CPU per small batch (issue 18); on a
stream each batch is one message each way. The cluster core (client/cluster.py) sends a
Produce attempt here when the node is known to serve ProduceStream and the channel's
interceptors can see streams; everything above it (failover, retries, the idempotent
producer's sequence book) is unchanged: one attempt is still one request that succeeds, fails
with the node's error, or fails at the transport.

Theory of operation. `ProduceStreams` keeps one `ProduceStreamCall` per address, opened on
first use. A request takes a slot (at most `max_in_flight` unanswered per stream: back-pressure),
gets the next correlation id, joins the outbox and waits for the response carrying its id. One
writer sends the outbox in order, all of what is queued in one message, so the node reads the
requests in the order they were queued (one partition's batches are proposed in that order) and,
under load, many share one message. Answers of different partitions may come out of order; one
partition's come in order, as the node commits them in order. `submit` is the same attempt
without a coroutine (the producer's sender, when the stream is open and has a free slot): its
outcome reaches a callback, from the answer's future.

Two links can carry a stream, and all of the above is shared: the node's stream listener
(framed TCP, client/stream_transport.py; the default when the node's metadata names one and
the client was not told `stream_transport=False`), or a grpc.aio ProduceStream call (nodes
without a listener, a listener that fails to open a stream, clients whose own gRPC
interceptors must see every request). Either ends the same ways, below.

What an attempt can end with:
  - the response, or its `error` as the LiferaftError it names (NOT_LEADER with its hint, ...):
    the stream goes on;
  - no answer within the attempt's time: RequestTimedOutError, as a unary deadline would (the
    batch may have been written; the stream goes on, a late answer is dropped);
  - the stream broke (node gone, connection lost): every waiting request fails with the
    transport error, as each unary call would have; the next request opens a new stream;
  - UNIMPLEMENTED: the node predates ProduceStream; the address is remembered and the cluster
    core sends its Produce requests unary (`StreamUnsupported`; nothing was written).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import heapq
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from client.errors import (
    LiferaftError,
    RequestTimedOutError,
    error_from_detail,
    from_rpc_error,
)
from client.stream_transport import StreamDialer, StreamDialFailed, broken
from liferaft_proto import stream_wire
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "ProduceStreamCall", "ProduceStreams", "StreamUnsupported"]

log = logging.getLogger("liferaft.client")

DEFAULT_MAX_IN_FLIGHT = 128
"""Unanswered requests per stream (the node reads up to 256 ahead: node/api/produce_stream.py)."""

MESSAGE_BYTES = 4 << 20
"""Record bytes one stream message carries at most (more than one request's only if they fit);
far below the 64 MiB gRPC message limit (client/connection.py)."""


Outcome = broker_pb2.ProduceResponse | BaseException
"""What a submitted request ended with: the response (no error in it), or the exception a
`produce` call would have raised (a LiferaftError, StreamUnsupported)."""


class _Slots:
    """At most n unanswered requests per stream (back-pressure): an asyncio.Semaphore that can
    also be taken without a coroutine (`try_take`, for `submit`). A released slot goes to the
    longest waiter first."""

    __slots__ = ("_waiters", "free")

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        return self.free == 0 or bool(self._waiters)

    def try_take(self) -> bool:
        if self.locked():
            return False
        self.free -= 1
        return True

    async def take(self) -> None:
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot, but gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes to it
                return
        self.free += 1


class StreamUnsupported(Exception):
    """The node does not serve ProduceStream (an older version): send Produce unary instead."""


_broken = broken
"""The stream failed below liferaft, as a unary call's lost connection would."""

STREAM_RETRY_S = 10.0
"""After a node's stream listener failed to open a stream, how long its produce streams go on
gRPC before the listener is tried again (a node restarting, a listener not up yet)."""


@dataclass(frozen=True, slots=True)
class _Sent:
    """A request queued on a stream (ProduceStreamCall.send), to wait for its answer."""

    cid: int
    fut: asyncio.Future[broker_pb2.ProduceResponse]
    timeout_s: float


class ProduceStreamCall:
    """One produce stream to one node, shared by every Produce attempt sent there.

    Attempts queue their requests in the outbox; the link (`_GrpcLink`: a grpc.aio
    ProduceStream call; `_TcpLink`: the node's stream listener, client/stream_transport.py)
    sends what is queued whenever the previous write is done, as one message (up to
    MESSAGE_BYTES), so requests that arrive while a write is under way share the next message,
    and hands each answer back (`_answer`) to the attempt waiting for its correlation id. All
    else (slots, deadlines, `submit`) is the same whichever link carries the stream."""

    def __init__(self, link: _GrpcLink | _TcpLink, address: str, max_in_flight: int) -> None:
        self.address = address
        self._link = link
        self._waiting: dict[int, asyncio.Future[broker_pb2.ProduceResponse]] = {}
        self._outbox: dict[int, broker_pb2.ProduceRequest] = {}  # queued, not yet written
        self._next_id = 0
        self._room = _Slots(max_in_flight)
        # The waiting requests' deadlines, (when, cid), a heap; an answered request's entry is
        # dropped when it surfaces (or the heap is rebuilt). One timer, at the earliest entry,
        # times them all: no timer made and cancelled per request (issue 18).
        self._deadlines: list[tuple[float, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.failure: BaseException | None = None
        """Why the stream ended (every request on it failed with it); None while it is open."""
        link.start(self)

    @property
    def open(self) -> bool:
        return self.failure is None

    @property
    def over_tcp(self) -> bool:
        """Whether the stream runs on the node's stream listener (not gRPC)."""
        return isinstance(self._link, _TcpLink)

    @property
    def idle(self) -> bool:
        """No request waits for an answer."""
        return not self._waiting

    def _answer(self, message: broker_pb2.ProduceStreamResponse) -> None:
        """The link read `message`: each response to the attempt waiting for it."""
        waiting = self._waiting
        for response in message.responses:
            fut = waiting.pop(response.correlation_id, None)
            if fut is not None and not fut.done():
                fut.set_result(response)

    def _take(self) -> broker_pb2.ProduceStreamRequest:
        """The next message: queued requests in order, up to MESSAGE_BYTES (at least one)."""
        message = broker_pb2.ProduceStreamRequest()
        size = 0
        for cid in list(self._outbox):
            request = self._outbox[cid]
            size += len(request.records)
            if message.requests and size > MESSAGE_BYTES:
                break
            del self._outbox[cid]
            message.requests.append(request)
        return message

    def _time(self, cid: int, deadline: float) -> None:
        """Fail request `cid` with TimeoutError at `deadline` if it is still waiting then."""
        heap = self._deadlines
        if len(heap) > 2 * len(self._waiting) + 64:  # mostly answered: keep it small
            heap[:] = [e for e in heap if e[1] in self._waiting]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, cid))
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._ring)

    def _ring(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap, waiting = self._deadlines, self._waiting
        now = asyncio.get_running_loop().time()
        while heap and (heap[0][0] <= now or heap[0][1] not in waiting):
            _, cid = heapq.heappop(heap)
            fut = waiting.get(cid)
            if fut is not None and not fut.done():
                fut.set_exception(TimeoutError())
        if heap:
            self._arm(heap[0][0])

    def _end(self, failure: BaseException) -> None:
        if self.failure is None:
            self.failure = failure
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        self._deadlines.clear()
        self._outbox.clear()
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(copy.copy(self.failure))
        self._link.stop()

    async def produce(
        self, request: broker_pb2.ProduceRequest, timeout_s: float
    ) -> broker_pb2.ProduceResponse:
        """One attempt: the response, or the LiferaftError it ended with (module docstring)."""
        return await self.answer(await self.send(request, timeout_s))

    async def send(self, request: broker_pb2.ProduceRequest, timeout_s: float) -> _Sent:
        """Queue one attempt behind every request queued before it, waiting for a slot (within
        `timeout_s`) if need be; `answer` waits for its answer. Split from it so that a caller
        can queue requests in its own order, then wait for their answers together."""
        if self.failure is not None:
            raise copy.copy(self.failure)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not self._room.try_take():  # max_in_flight unanswered: wait, within the time
            try:
                async with asyncio.timeout_at(deadline):
                    await self._room.take()
            except TimeoutError:
                raise self._timed_out(timeout_s, sent=False) from None
        if self.failure is not None:
            self._room.release()
            raise copy.copy(self.failure)
        # The stream's deadline timer on the answer's future, not asyncio.timeout: no
        # context object, no cancellation of the task to undo, no timer per request.
        cid, fut = self._enqueue(request, deadline)
        return _Sent(cid, fut, timeout_s)

    async def answer(self, sent: _Sent) -> broker_pb2.ProduceResponse:
        """The answer to a request `send` queued, or the LiferaftError it ended with."""
        try:
            response = await sent.fut
        except TimeoutError:
            sent_out = self._outbox.pop(sent.cid, None) is None
            raise self._timed_out(sent.timeout_s, sent=sent_out) from None
        finally:
            self._waiting.pop(sent.cid, None)
            self._room.release()
        if response.HasField("error"):
            raise error_from_detail(response.error)
        return response

    def submit(
        self,
        request: broker_pb2.ProduceRequest,
        timeout_s: float,
        on_done: Callable[[Outcome], None],
    ) -> asyncio.Future[broker_pb2.ProduceResponse] | None:
        """One attempt without a coroutine, when the stream is open and has a free slot (else
        None: the caller uses `produce`). `on_done` hears what the attempt ended with, as
        `produce` would return or raise it, from a callback of the answer's future (which is
        returned: cancelling it ends the attempt). No task per request, no wake-up of a
        waiting task for its answer (issue 18: the client's task switches per request)."""
        if self.failure is not None or not self._room.try_take():
            return None
        cid, fut = self._enqueue(request, asyncio.get_running_loop().time() + timeout_s)
        fut.add_done_callback(functools.partial(self._submitted, cid, timeout_s, on_done))
        return fut

    def _enqueue(
        self, request: broker_pb2.ProduceRequest, deadline: float
    ) -> tuple[int, asyncio.Future[broker_pb2.ProduceResponse]]:
        """Give the request the next correlation id, queue it for the writer, and time its
        answer's future to `deadline` (loop time). The caller holds a slot."""
        self._next_id += 1
        cid = self._next_id
        fut: asyncio.Future[broker_pb2.ProduceResponse] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        request.correlation_id = cid
        self._outbox[cid] = request
        self._link.wake()
        self._time(cid, deadline)
        return cid, fut

    def _submitted(
        self,
        cid: int,
        timeout_s: float,
        on_done: Callable[[Outcome], None],
        fut: asyncio.Future[broker_pb2.ProduceResponse],
    ) -> None:
        self._waiting.pop(cid, None)
        self._room.release()
        outcome: Outcome
        if fut.cancelled():
            self._outbox.pop(cid, None)
            outcome = asyncio.CancelledError()
        elif (error := fut.exception()) is not None:
            if isinstance(error, TimeoutError):
                sent = self._outbox.pop(cid, None) is None
                outcome = self._timed_out(timeout_s, sent=sent)
            else:
                outcome = error
        else:
            response = fut.result()
            outcome = error_from_detail(response.error) if response.HasField("error") else response
        on_done(outcome)

    def _timed_out(self, timeout_s: float, *, sent: bool) -> LiferaftError:
        error = RequestTimedOutError(
            None,
            f"no answer from {self.address} on the produce stream within "
            f"{int(timeout_s * 1000)} ms"
            + ("; the batch may have been written" if sent else " (it was not sent)"),
            retriable=True,
            invalid_metadata=True,
        )
        error.transport = True
        return error

    async def close(self) -> None:
        await self._link.close()


class _GrpcLink:
    """A produce stream on a grpc.aio ProduceStream call: one writer task sends the outbox,
    one reader task reads the answers."""

    def __init__(
        self,
        stub: broker_pb2_grpc.BrokerStub,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
    ) -> None:
        self._grpc: Any = stub.ProduceStream(metadata=metadata)
        self._queued = asyncio.Event()
        self._stream: ProduceStreamCall

    def start(self, stream: ProduceStreamCall) -> None:
        self._stream = stream
        self.address = stream.address
        self._reader = asyncio.ensure_future(self._read())
        self._writer = asyncio.ensure_future(self._write())

    def wake(self) -> None:
        self._queued.set()

    async def _read(self) -> None:
        stream = self._stream
        try:
            while True:
                message = await self._grpc.read()
                if message is grpc.aio.EOF:
                    stream._end(_broken(f"{self.address} ended the produce stream"))
                    return
                stream._answer(message)
        except grpc.RpcError as e:
            if isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNIMPLEMENTED:
                stream._end(StreamUnsupported(f"{self.address} does not serve ProduceStream"))
            else:
                stream._end(from_rpc_error(e, address=self.address))
        except asyncio.CancelledError:
            stream._end(_broken(f"the produce stream to {self.address} was closed"))
            raise
        except Exception as e:  # a bug: fail the waiting requests with it rather than hang them
            log.exception("the produce stream to %s failed", self.address)
            stream._end(_broken(f"the produce stream to {self.address} failed: {e!r}"))

    async def _write(self) -> None:
        stream = self._stream
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                while stream._outbox:
                    await self._grpc.write(stream._take())
        except (grpc.RpcError, asyncio.InvalidStateError):
            # The call ended ("RPC already finished"): the reader says why.
            await asyncio.wait([self._reader])
            stream._end(_broken(f"the produce stream to {self.address} ended"))
        except asyncio.CancelledError:
            stream._end(_broken(f"the produce stream to {self.address} was closed"))
            raise
        except Exception as e:  # a bug: fail the waiting requests with it rather than hang them
            log.exception("the produce stream to %s failed", self.address)
            stream._end(_broken(f"the produce stream to {self.address} failed: {e!r}"))

    def stop(self) -> None:
        self._grpc.cancel()
        if self._writer is not asyncio.current_task():
            self._writer.cancel()  # it may be waiting for a request that will never come

    async def close(self) -> None:
        for task in (self._writer, self._reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _TcpLink:
    """A produce stream on a node's stream listener (client/stream_transport.py): the answers
    arrive in the connection's callbacks (no reader task); what the attempts queue in one turn
    of the event loop is written at its end, as one PRODUCE frame in one write (no writer
    task), or later when the socket takes writes again."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.conn: Any = None  # the StreamConnection, once open
        self._stream: ProduceStreamCall | None = None
        self._flush_at_end_of_turn = False
        self._draining: asyncio.Future[None] | None = None

    def start(self, stream: ProduceStreamCall) -> None:
        self._stream = stream

    def wake(self) -> None:
        if not self._flush_at_end_of_turn:
            self._flush_at_end_of_turn = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_at_end_of_turn = False
        stream, conn = self._stream, self.conn
        if stream is None or conn is None:
            return
        while stream._outbox and conn.writable:
            conn.send(stream_wire.PRODUCE, stream._take().SerializeToString())
        if stream._outbox and not conn.ended and self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await self.conn.drain()
        finally:
            self._draining = None
        self._flush()

    # StreamSink
    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind != stream_wire.PRODUCED:
            raise ValueError("not a PRODUCED frame on a produce stream")
        message = broker_pb2.ProduceStreamResponse()
        message.ParseFromString(payload)
        if self._stream is not None:
            self._stream._answer(message)

    def on_end(self, failure: BaseException | None) -> None:
        if self._stream is not None:
            self._stream._end(failure or _broken(f"{self.address} ended the produce stream"))

    def waiting(self) -> bool:
        return self._stream is not None and not self._stream.idle

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.abort()
        if self._draining is not None:
            self._draining.cancel()

    async def close(self) -> None:
        if self._stream is not None:
            self._stream._end(_broken(f"the produce stream to {self.address} was closed"))
        self.stop()


class _Gate:
    """The requests waiting for one node's produce stream to open, in arrival order."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class ProduceStreams:
    """The produce stream per node address, and the addresses that do not serve one.

    A node whose metadata names a stream listener (`stream_address`) gets its stream there
    when a `dialer` is given (client/stream_transport.py); else, or when that listener cannot
    open a stream (refused, TLS, credentials, silence: StreamDialFailed), a gRPC ProduceStream
    call, and the listener is tried again STREAM_RETRY_S later, once that gRPC stream is idle
    (so one partition's batches never travel on two streams to a node at once)."""

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        metadata: tuple[tuple[str, str | bytes], ...] | None = None,
        dialer: StreamDialer | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.metadata = metadata
        """Sent when a gRPC stream opens (the raw bench's SASL credentials; the client's come
        from its channel's interceptors)."""
        self.dialer = dialer
        """How to reach stream listeners; None: gRPC only."""
        self._calls: dict[str, ProduceStreamCall] = {}
        self._opening: dict[str, _Gate] = {}
        """Addresses whose stream some `produce` waits to open, and the order they wait in."""
        self._dialing: dict[str, asyncio.Future[None]] = {}
        self._no_listener_until: dict[str, float] = {}
        self.unsupported: set[str] = set()
        """Nodes that answered UNIMPLEMENTED: Produce goes to them unary."""

    async def produce(
        self,
        stub: broker_pb2_grpc.BrokerStub,
        address: str,
        request: broker_pb2.ProduceRequest,
        timeout_s: float,
        stream_address: str | None = None,
    ) -> broker_pb2.ProduceResponse:
        """Send one Produce attempt on `address`'s stream (opened if need be: on the node's
        stream listener at `stream_address` if it has one, else gRPC). Raises LiferaftError as
        a unary call's failure would map, or StreamUnsupported."""
        call = self._calls.get(address)
        try:
            if (
                address in self._opening
                or call is None
                or not call.open
                or self._may_upgrade(call, stream_address)
            ):
                # The stream must be opened first: this request and every one after it to this
                # node queue in the order they came (asyncio.Lock is first come, first served),
                # and `submit` sends none past them, so a partition's batches are written in
                # the order its sender sent them even while the stream opens.
                gate = self._opening.setdefault(address, _Gate())
                gate.users += 1
                try:
                    async with gate.lock:
                        call = self._calls.get(address)
                        if call is None or not call.open or self._may_upgrade(call, stream_address):
                            call = await self._open(stub, address, stream_address)
                        sent = await call.send(request, timeout_s)
                finally:
                    gate.users -= 1
                    if not gate.users:
                        del self._opening[address]
                return await call.answer(sent)
            return await call.produce(request, timeout_s)
        except StreamUnsupported:
            self.unsupported.add(address)
            self._calls.pop(address, None)
            raise

    def _may_upgrade(self, call: ProduceStreamCall, stream_address: str | None) -> bool:
        """A gRPC stream, idle, to a node whose stream listener may be tried again."""
        return (
            stream_address is not None
            and self.dialer is not None
            and not call.over_tcp
            and call.idle
            and self._listener_ok(call.address)
        )

    def _listener_ok(self, address: str) -> bool:
        until = self._no_listener_until.get(address)
        if until is None:
            return True
        if asyncio.get_running_loop().time() < until:
            return False
        del self._no_listener_until[address]
        return True

    async def _open(
        self, stub: broker_pb2_grpc.BrokerStub, address: str, stream_address: str | None
    ) -> ProduceStreamCall:
        if stream_address is not None and self.dialer is not None and self._listener_ok(address):
            dialing = self._dialing.get(address)
            if dialing is None:
                dialing = self._dialing[address] = asyncio.ensure_future(
                    self._dial(address, stream_address, self.dialer)
                )
                dialing.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.shield(dialing)
        call = self._calls.get(address)
        if call is None or not call.open or self._may_upgrade(call, stream_address):
            if call is not None and call.open:
                await call.close()  # idle: nothing waits on it
            call = self._calls[address] = ProduceStreamCall(
                _GrpcLink(stub, self.metadata), address, self.max_in_flight
            )
        return call

    async def _dial(self, address: str, stream_address: str, dialer: StreamDialer) -> None:
        """Open `address`'s stream on its listener, as its call; or note that it cannot."""
        try:
            link = _TcpLink(address)
            try:
                link.conn = await dialer.open(stream_address, stream_wire.PRODUCE_STREAM, link)
            except StreamDialFailed as e:
                log.info("produce stream to %s on gRPC for now: %s", address, e)
                self._no_listener_for_now(address)
                return
            old = self._calls.get(address)
            if old is not None and old.open and not old.idle:
                # An upgrade overtaken by requests on the gRPC stream (submit): keep it, so
                # that no partition's batches travel on two streams at once; later.
                link.conn.abort()
                self._no_listener_for_now(address)
                return
            self._calls[address] = ProduceStreamCall(link, address, self.max_in_flight)
            if old is not None:
                await old.close()  # idle (an upgrade) or ended
        finally:
            self._dialing.pop(address, None)

    def _no_listener_for_now(self, address: str) -> None:
        loop = asyncio.get_running_loop()
        self._no_listener_until[address] = loop.time() + STREAM_RETRY_S

    def submit(
        self,
        address: str,
        request: broker_pb2.ProduceRequest,
        timeout_s: float,
        on_done: Callable[[Outcome], None],
    ) -> asyncio.Future[broker_pb2.ProduceResponse] | None:
        """ProduceStreamCall.submit on `address`'s stream, if one is open and no earlier
        request waits for it to open (else None)."""
        call = self._calls.get(address)
        if call is None or address in self._opening:
            return None
        return call.submit(request, timeout_s, on_done)

    def over_tcp(self, address: str) -> bool:
        """Whether `address`'s produce stream is open on its stream listener."""
        call = self._calls.get(address)
        return call is not None and call.open and call.over_tcp

    def unsupported_at(self, address: str) -> None:
        """`address` answered UNIMPLEMENTED (a submitted attempt's StreamUnsupported)."""
        self.unsupported.add(address)
        call = self._calls.get(address)
        if call is not None and not call.open:
            del self._calls[address]

    async def drop(self, address: str) -> None:
        call = self._calls.pop(address, None)
        if call is not None:
            await call.close()

    async def close(self) -> None:
        for dialing in list(self._dialing.values()):
            dialing.cancel()
        calls, self._calls = list(self._calls.values()), {}
        for call in calls:
            await call.close()


def sees_streams(interceptors: tuple[Any, ...] | list[Any]) -> bool:
    """Whether Produce may travel on streams, given the caller's own grpc_interceptors (the chaos
    suite's lost answers, a tracer): not when one intercepts unary calls and none intercepts
    stream-stream calls, so that such an interceptor still sees every Produce request. (The
    credentials interceptors of client/security.py cover streams.)"""
    unary = any(isinstance(i, grpc.aio.UnaryUnaryClientInterceptor) for i in interceptors)
    bidi = any(isinstance(i, grpc.aio.StreamStreamClientInterceptor) for i in interceptors)
    return bidi or not unary
