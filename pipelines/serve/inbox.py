"""EventInbox: how a request's engine events cross from the engine thread to the replica's event loop.

Waking an event loop from another thread costs a system call and a loop iteration. The engine hears about every
streamed request at every decode step, so the inbox wakes its reader once for whatever has arrived since the reader
last looked, rather than once per event: a stream that sends its text every few tens of milliseconds then costs a
few wake-ups per piece, not one per token. The request's end (`done` or `error`) always wakes the reader at once,
so that pacing never delays a stream's last piece.
"""

from __future__ import annotations

import asyncio
import threading

from sp_core.engine import TEXT, EngineEvent


class EventInbox:
    """Filled by the engine thread (`put`), emptied by one coroutine on the loop it was made on (`take`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._events: list[EngineEvent] = []
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._ended = asyncio.Event()
        self._signalled = False  # a wake-up is on its way to the loop and the reader has not looked since

    def put(self, event: EngineEvent) -> None:
        if event.kind != TEXT:
            self._loop.call_soon_threadsafe(self._ended.set)
        with self._lock:
            self._events.append(event)
            if self._signalled:
                return
            self._signalled = True
        self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self, hold_s: float = 0.0) -> list[EngineEvent]:
        """Every event that arrived since the last take, in order: after hold_s seconds or at the request's end,
        whichever comes first, and at least one event."""
        if hold_s > 0 and not self._ended.is_set():
            try:
                await asyncio.wait_for(self._ended.wait(), hold_s)
            except TimeoutError:
                pass
        await self._ready.wait()
        with self._lock:
            events, self._events = self._events, []
            self._signalled = False
            self._ready.clear()
        return events
