"""A guard for Python 3.11's asyncio.wait_for, which aiomqtt and pymodbus use inside their calls."""

from __future__ import annotations

import asyncio


def reraise_swallowed_cancel() -> None:
    """Call after each awaited aiomqtt or pymodbus call.

    Python 3.11's `asyncio.wait_for`, which aiomqtt's connect/publish/subscribe and pymodbus requests
    use, can drop a cancellation that races with the reply (gh-86296, fixed in 3.12): the task carries
    on as if never cancelled and a TaskGroup shutdown hangs.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
