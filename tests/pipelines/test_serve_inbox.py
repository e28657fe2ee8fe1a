"""EventInbox: the engine thread's events reach the replica's loop in order, the end at once."""

import asyncio
import threading
import time

from pipelines.serve.inbox import EventInbox
from sp_core.engine import DONE, TEXT, EngineEvent


def test_events_from_another_thread_arrive_in_order_and_the_end_cuts_a_hold_short():
    async def scenario():
        inbox = EventInbox(asyncio.get_running_loop())

        def engine_thread():
            for index in range(50):
                inbox.put(EngineEvent(TEXT, text=str(index)))
            time.sleep(0.05)
            inbox.put(EngineEvent(DONE))

        threading.Thread(target=engine_thread).start()
        taken, started = [], time.monotonic()
        while not taken or taken[-1].kind != DONE:
            taken.extend(await inbox.take(hold_s=30.0))  # held, but the end wakes it at once
        return taken, time.monotonic() - started

    taken, elapsed = asyncio.run(scenario())
    assert [event.text for event in taken[:-1]] == [str(index) for index in range(50)]
    assert taken[-1].kind == DONE and elapsed < 10
