"""Case 6: a telephony load: N calls, a 160-byte frame every 20 ms each, and a reply.

Media engines do not run a thread per call: a few media threads each serve
many calls on a 20 ms tick. Here each media thread owns two channels of one
Bridge: on every tick it puts a frame for each of its calls on its inbound
channel; on the loop, one coroutine per media thread hands each frame to the
call's async session, which returns a reply frame, put on the outbound channel;
a receiver thread per media thread takes the replies as they arrive.

Measured per frame: the handoff latency, from the media thread putting the
frame to the receiver thread holding the reply. Also: frames lost (sent but no
reply), how late the media ticks ran, and the CPU the process used.

Three modes. ``frame``: every frame is its own channel item, handed over in
batches where a real media engine could batch: the media thread puts a tick's
frames with one ``Channel.put_many``, the loop's pump takes what is there with
``aget_many`` and sends the replies back with one ``aput_many``, and the
receiver takes what is there with ``get_many``. ``frame-per-item``: the same
items, one ``put``/``get`` each (janus's single-item path). ``tick``: a media
thread's frames for one tick are one item (a list), as an engine that
processes all its calls per tick would.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from typing import Any

from ._approaches import make_bridge
from ._util import cpu_seconds, percentile

__all__ = ["run"]

APPROACHES = ("frame", "frame-per-item", "tick")
_STOP = None


class Session:
    """One call's async side: it turns each inbound frame into a reply frame."""

    __slots__ = ("call_id", "frames", "last_seq")

    def __init__(self, call_id: int) -> None:
        self.call_id = call_id
        self.frames = 0
        self.last_seq = -1

    async def on_frame(self, seq: int, frame: bytes) -> bytes:
        if seq != self.last_seq + 1:
            raise AssertionError(f"call {self.call_id}: frame {seq} after {self.last_seq}")
        self.last_seq = seq
        self.frames += 1
        return frame[::-1]  # the reply: same size, new bytes


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run the load for ``params["duration"]`` seconds; return latency, loss, CPU."""
    if approach not in APPROACHES:
        raise ValueError(f"unknown approach {approach!r}")
    calls, media = params["calls"], params["media_threads"]
    groups = [list(range(m, calls, media)) for m in range(media)]
    sessions = {call_id: Session(call_id) for call_id in range(calls)}
    with make_bridge(loop_name) as b:
        pairs = [(b.channel(), b.channel()) for _ in groups]
        pump = {"frame": _pump_batches, "frame-per-item": _pump_frame, "tick": _pump_tick}
        pumps = [b.submit(pump[approach], sessions, i, o, timeout=None) for i, o in pairs]
        load = _Load(groups, pairs, params, approach)
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        load.run()
        cpu = cpu_seconds() - cpu_before
        wall = time.perf_counter() - wall_before
        for pump in pumps:
            pump.result()
    received = sum(len(lat) for lat in load.latencies)
    latencies = sorted(x for lat in load.latencies for x in lat)
    lags = sorted(x for lag in load.lags for x in lag)
    return {
        "calls": calls,
        "media_threads": media,
        "duration_s": params["duration"],
        "frames_sent": load.sent,
        "frames_lost": load.sent - received,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "frames_over_tick": len(latencies) - bisect.bisect_right(latencies, params["tick_ms"]),
        "tick_lag_p99_ms": percentile(lags, 99),
        "tick_lag_max_ms": lags[-1] if lags else float("nan"),
        "cpu_percent_of_one_core": 100.0 * cpu / wall,
    }


async def _pump_batches(sessions: dict[int, Session], inbound: Any, outbound: Any) -> None:
    """Takes every frame there, one item each; sends the replies back in one call."""
    get_many, put_many = inbound.aget_many, outbound.aput_many
    while True:
        replies = []
        for item in await get_many():
            if item is _STOP:
                replies.append(_STOP)
                break
            call_id, seq, sent, frame = item
            reply = await sessions[call_id].on_frame(seq, frame)
            replies.append((call_id, seq, sent, reply))
        await put_many(replies)
        if replies and replies[-1] is _STOP:
            return


async def _pump_frame(sessions: dict[int, Session], inbound: Any, outbound: Any) -> None:
    get, put = inbound.async_q.get, outbound.async_q.put
    while (item := await get()) is not _STOP:
        call_id, seq, sent, frame = item
        reply = await sessions[call_id].on_frame(seq, frame)
        await put((call_id, seq, sent, reply))
    await put(_STOP)


async def _pump_tick(sessions: dict[int, Session], inbound: Any, outbound: Any) -> None:
    get, put = inbound.async_q.get, outbound.async_q.put
    while (batch := await get()) is not _STOP:
        replies = []
        for call_id, seq, sent, frame in batch:
            reply = await sessions[call_id].on_frame(seq, frame)
            replies.append((call_id, seq, sent, reply))
        await put(replies)
    await put(_STOP)


class _Load:
    """The media threads and the reply receivers, and what they measured."""

    def __init__(
        self,
        groups: list[list[int]],
        pairs: list[tuple[Any, Any]],
        params: dict[str, Any],
        approach: str,
    ) -> None:
        self.groups = groups
        self.pairs = pairs
        self.duration = params["duration"]
        self.tick = params["tick_ms"] / 1000.0
        self.frame = os.urandom(params["frame_bytes"])
        self.approach = approach
        self.sent = 0
        self.latencies: list[list[float]] = [[] for _ in groups]
        self.lags: list[list[float]] = [[] for _ in groups]
        self._sent = [0] * len(groups)

    def run(self) -> None:
        start = time.perf_counter() + 0.05
        threads = []
        for m in range(len(self.groups)):
            threads.append(threading.Thread(target=self._media, args=(m, start), name=f"media-{m}"))
            threads.append(threading.Thread(target=self._receive, args=(m,), name=f"rx-{m}"))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.sent = sum(self._sent)

    def _media(self, m: int, start: float) -> None:
        """A media thread: every tick, one frame per call it serves."""
        calls, inbound = self.groups[m], self.pairs[m][0]
        put, clock, frame, lags = inbound.sync_q.put, time.perf_counter, self.frame, self.lags[m]
        ticks = int(self.duration / self.tick)
        sent = 0
        for seq in range(ticks):
            due = start + seq * self.tick
            delay = due - clock()
            if delay > 0:
                time.sleep(delay)
            now = clock()
            lags.append((now - due) * 1000.0)
            if self.approach == "frame":
                inbound.put_many([(call_id, seq, now, frame) for call_id in calls])
            elif self.approach == "tick":
                put([(call_id, seq, now, frame) for call_id in calls])
            else:
                for call_id in calls:
                    put((call_id, seq, clock(), frame))
            sent += len(calls)
        self._sent[m] = sent
        put(_STOP)

    def _receive(self, m: int) -> None:
        """Takes replies off the outbound channel as they arrive."""
        outbound, clock, latencies = self.pairs[m][1], time.perf_counter, self.latencies[m]
        if self.approach == "frame":
            while True:
                replies = outbound.get_many()
                now = clock()
                for reply in replies:
                    if reply is _STOP:
                        return
                    latencies.append((now - reply[2]) * 1000.0)
        get = outbound.sync_q.get
        while (item := get()) is not _STOP:
            now = clock()
            if self.approach == "tick":
                latencies.extend((now - sent) * 1000.0 for _, _, sent, _ in item)
            else:
                latencies.append((now - item[2]) * 1000.0)
