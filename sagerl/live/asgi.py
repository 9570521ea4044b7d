"""Calling an ASGI ``send`` from a plain callback: run it now, finish it later only if it waits.

The router and the emulated backend forward streamed chunks from protocol callbacks (data
arrived from a backend; the engine published tokens), where nothing can be awaited; a task
wake-up per chunk was a large share of their CPU. uvicorn's ``send`` of a body message writes to
the socket and returns without suspending unless the client's socket is full (flow control), so
running it synchronously is the common case and finishing it in a task the rare one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from starlette.types import Send


def send_now(send: Send, message: dict[str, Any]) -> Awaitable[None] | None:
    """Run the ASGI ``send(message)`` up to its first suspension, synchronously.

    Returns:
        ``None`` when it completed, else an awaitable that finishes it (the caller must await
        it before sending anything else).
    """
    coro = send(message)  # type: ignore[arg-type]
    step = getattr(coro, "send", None)
    if step is None:  # not a coroutine (an ASGI server may return any awaitable)
        return coro
    try:
        fut = step(None)
    except StopIteration:
        return None
    return _resume(coro, fut)  # type: ignore[arg-type]


async def _resume(coro: Any, fut: Any) -> None:
    """Finish a coroutine that :func:`send_now` started and that suspended on ``fut``.

    Does what ``asyncio.Task`` does for a coroutine it drives: wait until the future it yielded
    is done, then resume it (``Future.__await__`` reads the result or raises inside).
    """
    try:
        while True:
            if getattr(fut, "_asyncio_future_blocking", None):
                fut._asyncio_future_blocking = False
                await asyncio.wait([fut])
            else:  # a bare yield (``asyncio.sleep(0)``)
                await asyncio.sleep(0)
            try:
                fut = coro.send(None)
            except StopIteration:
                return
    except BaseException:
        coro.close()
        raise
