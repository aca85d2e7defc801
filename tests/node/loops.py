"""A module-scoped pytest fixture that runs every test of the module importing it on each event
loop a node runs on (node/event_loop.py): the transport must work on uvloop's transports, the
default, as on asyncio's."""

from __future__ import annotations

import asyncio

import pytest

from node.config import EVENT_LOOPS


@pytest.fixture(scope="module", params=EVENT_LOOPS)
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    if request.param == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()
