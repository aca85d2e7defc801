"""node/tasks.py: a background task that fails is logged with its cause, then restarted or
reported; none dies silently, and cancelling one is quiet."""

from __future__ import annotations

import asyncio
import logging

import pytest

from node.tasks import running, supervise


async def test_a_failing_loop_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ValueError(f"bad address {runs}")
        await asyncio.sleep(3600)

    caplog.set_level(logging.ERROR, logger="liferaft.tasks")
    task = supervise(loop, "housekeeping-test", restart=True)
    for _ in range(200):
        if runs >= 3:
            break
        await asyncio.sleep(0.01)
    assert runs == 3 and not task.done() and task in running()
    failures = [r for r in caplog.records if "housekeeping-test failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None
    assert "bad address 1" in str(failures[0].exc_info[1])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task not in running()


async def test_a_failing_one_shot_is_logged_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    reported: list[BaseException] = []

    async def boom() -> None:
        raise RuntimeError("driver died")

    caplog.set_level(logging.INFO, logger="liferaft.tasks")
    task = supervise(boom(), "driver-test", on_failure=reported.append)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert [str(e) for e in reported] == ["driver died"]
    assert any(
        r.levelno == logging.ERROR and "driver-test" in r.getMessage() for r in caplog.records
    )

    async def not_controller() -> None:
        raise KeyError("not the controller")

    task = supervise(not_controller(), "register-test", expected=(KeyError,))
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    expected = [r for r in caplog.records if "register-test" in r.getMessage()]
    assert expected and expected[0].levelno == logging.INFO and expected[0].exc_info is None


async def test_restart_needs_a_factory() -> None:
    async def once() -> None:
        return None

    coro = once()
    with pytest.raises(TypeError):
        supervise(coro, "x", restart=True)
    await coro
