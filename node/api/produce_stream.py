"""ProduceStream: many produce requests over one long-lived call, answered as each completes.

Why: a unary gRPC call costs the leader about a third of its CPU per small batch (call set-up,
metadata, a task, status and trailers; docs/performance.md, issue 18). On a stream there is no
call per request, and a message in or out costs gRPC about what a small unary call's message
does, so messages carry several requests (what the client had to send at once) and several
answers (what completed at once): under load, many batches share one message's cost.

Theory of operation. One reader takes the stream's requests in order and runs each one's
synchronous part, node/api/produce.py's `propose` (validate, authorize, leader check, propose),
before it reads the next: so a partition's batches are proposed in the order the client wrote
them, and Raft commits (and so answers) them in that order. Different partitions' answers
complete independently and may overtake one another; the client matches them by correlation_id.
Each request's wait for its acks is produce.when_done's callback and timer, which drops the
answer on the queue this generator drains: every answer there goes out in one message.

Errors are values: a request that fails (NOT_LEADER, a refused batch, REQUEST_TIMED_OUT, a bug:
UNKNOWN_SERVER_ERROR) is answered with its `error` and the stream goes on. The caller's
principal is set once, when the stream opens (node/service.py authenticates its metadata, as a
Kafka connection authenticates once); each request is authorized against the ACLs as they are
when it is read.

Back-pressure: at most MAX_IN_FLIGHT requests are read ahead of their answers. Past that the
reader stops reading, HTTP/2 flow control fills, and the client's writes wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from liferaft_proto.v1 import broker_pb2, errors_pb2
from node.api import produce
from node.api.context import Api, cut, detail
from node.errors import BrokerError

log = logging.getLogger("liferaft.service")

MAX_IN_FLIGHT = 256
"""Requests one stream may have proposed and not yet answered (the client keeps fewer)."""

Observe = Callable[[str, str, float], None]
"""(api, outcome, seconds): NodeMetrics.observe_request, to count each request as a Produce."""

_END = object()


def _error_response(
    correlation_id: int, error: BaseException
) -> tuple[str, broker_pb2.ProduceResponse]:
    if isinstance(error, BrokerError):
        return error.code_name, broker_pb2.ProduceResponse(
            correlation_id=correlation_id, error=detail(error)
        )
    log.error("a ProduceStream request failed", exc_info=error)
    return "UNKNOWN_SERVER_ERROR", broker_pb2.ProduceResponse(
        correlation_id=correlation_id,
        error=errors_pb2.ErrorDetail(
            code=errors_pb2.UNKNOWN_SERVER_ERROR,
            message=cut(f"{type(error).__name__}: {error}"),
            retriable=False,
        ),
    )


async def produce_stream(
    api: Api,
    messages: AsyncIterator[broker_pb2.ProduceStreamRequest],
    observe: Observe | None = None,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> AsyncIterator[broker_pb2.ProduceStreamResponse]:
    """The stream's answers, one per request, as they complete (those ready together in one
    message); ends after the client has closed its side and every request read is answered."""
    answers: asyncio.Queue[object] = asyncio.Queue()
    room = asyncio.Semaphore(max_in_flight)
    open_requests = 0
    reading = True

    def handle(request: broker_pb2.ProduceRequest) -> None:
        nonlocal open_requests
        t0 = time.perf_counter()
        cid = request.correlation_id
        open_requests += 1

        def deliver(answer: produce.Answer) -> None:
            nonlocal open_requests
            if isinstance(answer, broker_pb2.ProduceResponse):
                outcome = "OK"
                answer.correlation_id = cid
                response = answer
            else:
                outcome, response = _error_response(cid, answer)
            if observe is not None:
                observe("Produce", outcome, time.perf_counter() - t0)
            answers.put_nowait(response)
            open_requests -= 1
            room.release()
            if not reading and open_requests == 0:
                answers.put_nowait(_END)

        try:
            pending = produce.propose(api, request)
        except Exception as e:  # BrokerError: a value; anything else: a bug, still a value
            deliver(e)
            return
        produce.when_done(pending, deliver)

    async def read() -> None:
        nonlocal reading
        try:
            async for message in messages:
                for request in message.requests:
                    await room.acquire()
                    handle(request)
        finally:
            reading = False
            if open_requests == 0:
                answers.put_nowait(_END)

    def read_ended(task: asyncio.Task[None]) -> None:
        # The reader failing (the client went away, a broken message) ends the stream at once,
        # with the reader's exception raised from here.
        if not task.cancelled() and task.exception() is not None:
            answers.put_nowait(_END)

    reader = asyncio.ensure_future(read())
    reader.add_done_callback(read_ended)
    try:
        ended = False
        while not ended:
            item = await answers.get()
            out = broker_pb2.ProduceStreamResponse()
            while True:
                if item is _END:
                    ended = True
                    break
                assert isinstance(item, broker_pb2.ProduceResponse)
                out.responses.append(item)
                if answers.empty():
                    break
                item = answers.get_nowait()
            if out.responses:
                yield out
        failure = reader.exception() if reader.done() and not reader.cancelled() else None
        if failure is not None:
            raise failure
    finally:
        if not reader.done():
            reader.cancel()
