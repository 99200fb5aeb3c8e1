"""Node power from the BMC, polled on its own thread, and a window's node energy from the polls.

A BMC answers in seconds, not milliseconds: its reading is an average over a second or more and
a request can take long or never return. So the node is not a sampler source read every tick:
`NodePower` polls its `BmcClient` on a thread of its own every `poll_s` (at least 1 s), with the
client's timeout on each request, and keeps the timestamped answers. Nothing on the measuring
side ever waits for the BMC: a window's node energy (`window(t0_s, t1_s)`, monotonic seconds) is
worked out afterwards from the answers kept, so an isolated worker's window (timed in another
process, on the same monotonic clock) is measured the same way as an in-process one.

- From an energy counter: the counter's difference between the window's edges, each edge
  interpolated between the polls around it (the last poll's rate carried past it).
- From watts: the integral of the polled watts, linear between polls, held flat past the last.
- The update period: what the BMC declares (Redfish SensingInterval), else the median time
  between changes of its reading once three have been seen, never less than the poll period.
- A window shorter than NODE_MIN_UPDATES update periods is flagged `node_window_too_short`;
  under one update period its node energy is withheld (None), never split below the BMC's
  resolution. Polls that failed or fell behind (a gap over GAP_FACTOR polls) inside the window
  flag `node_power_gaps`, and with no poll before its start the window has no node energy.
"""

from __future__ import annotations

import bisect
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.device.bmc import BmcClient, BmcError, BmcSample
from bench.record import NODE, Energy

NODE_MIN_UPDATES = 5
GAP_FACTOR = 3.0
MAX_POLLS = 200_000  # about two days at 1 s; older polls are dropped
MAX_TRACE_POINTS = 256
NODE_WINDOW_TOO_SHORT = "node_window_too_short"
NODE_POWER_GAPS = "node_power_gaps"


@dataclass(frozen=True)
class Poll:
    """One answer: at `t_s` (monotonic, the middle of the request), or the error instead."""

    t_s: float
    sample: BmcSample | None
    error: str | None = None


@dataclass(frozen=True)
class NodeWindow:
    """A window's node energy (None where withheld or unmeasured) and its flags."""

    energy: Energy | None
    flags: tuple[str, ...]


class NodePower:
    """Polls one BMC every `poll_s` seconds on a daemon thread while started (module docstring).
    `describe()` is what a result file records of it: no credentials are part of it."""

    def __init__(
        self,
        client: BmcClient,
        poll_s: float,
        url: str,
        clock: Callable[[], float] = time.monotonic,
        reader: str = "this process",
    ) -> None:
        self.client, self.poll_s, self.url, self.reader = client, poll_s, url, reader
        self._clock = clock
        self._polls: deque[Poll] = deque(maxlen=MAX_POLLS)
        self._changes: deque[float] = deque(maxlen=64)
        self._last_value: float | None = None
        self._lock = threading.Lock()
        self._polled = threading.Condition(self._lock)  # notified on every answer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> NodePower:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self.poll()  # the first answer is there before the first window opens
            self._thread = threading.Thread(target=self._loop, name="wattbench-node-power", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and log out. A request still in flight is left to its timeout on the
        daemon thread: stopping never waits longer than one poll for it."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(self.poll_s)
            alive = self._thread.is_alive()
            self._thread = None
            if alive:
                return  # the client is in use; the process's end closes its socket
        self.client.close()

    def _loop(self) -> None:
        next_at = self._clock() + self.poll_s
        while not self._stop.wait(max(0.0, next_at - self._clock())):
            self.poll()
            next_at = max(next_at + self.poll_s, self._clock())  # a slow answer skips polls, never bunches them

    def poll(self) -> None:
        """Ask the BMC once and keep the answer (or the error)."""
        before = self._clock()
        try:
            sample, error = self.client.sample(), None
        except BmcError as exc:
            sample, error = None, str(exc)
        t = (before + self._clock()) / 2
        with self._polled:
            self._polls.append(Poll(t, sample, error))
            self._polled.notify_all()
            value = None if sample is None else sample.energy_j if sample.energy_j is not None else sample.watts
            if value is not None and value != self._last_value:
                if self._last_value is not None:
                    self._changes.append(t)
                self._last_value = value

    def wait_past(self, t_s: float) -> None:
        """Wait for the thread's first answer after `t_s` (monotonic), at most one poll period
        and a half: a window's last stretch is then read rather than held."""
        deadline = self._clock() + 1.5 * self.poll_s
        with self._polled:
            while not (self._polls and self._polls[-1].t_s >= t_s) and self._thread is not None:
                left = deadline - self._clock()
                if left <= 0:
                    return
                self._polled.wait(left)

    @property
    def update_s(self) -> float:
        """The BMC's update period (module docstring), seconds."""
        declared = self.client.declared_update_s
        with self._lock:
            changes = list(self._changes)
        observed = statistics.median(b - a for a, b in zip(changes, changes[1:], strict=False)) if len(changes) >= 4 else None
        return max(self.poll_s, declared or observed or self.poll_s)

    def describe(self) -> dict[str, Any]:
        declared = self.client.declared_update_s
        return {
            "url": self.url,
            "source": self.client.source,
            "resource": self.client.resource,
            "boundary": NODE,
            "poll_s": self.poll_s,
            "update_s": round(self.update_s, 3),
            "update_from": "declared by the BMC" if declared else "observed changes (or the poll period)",
            "averaging_s": self.client.averaging_s,
            "reader": self.reader,
        }

    def window(self, t0_s: float, t1_s: float) -> NodeWindow:
        """The node energy of [t0_s, t1_s] (module docstring)."""
        with self._lock:
            polls = [p for p in self._polls if p.sample is not None]
            errors = [p for p in self._polls if p.error is not None and t0_s <= p.t_s <= t1_s]
        duration, update = t1_s - t0_s, self.update_s
        flags: list[str] = []
        if duration < NODE_MIN_UPDATES * update:
            flags.append(NODE_WINDOW_TOO_SHORT)
        times = [p.t_s for p in polls]
        inside = times[bisect.bisect_left(times, t0_s) : bisect.bisect_right(times, t1_s)]
        edges = [t0_s, *inside, t1_s]
        if errors or max(b - a for a, b in zip(edges, edges[1:], strict=False)) > GAP_FACTOR * self.poll_s:
            flags.append(NODE_POWER_GAPS)
        if duration <= 0 or duration < update or not times or times[0] > t0_s:
            return NodeWindow(None, tuple(flags))
        counter = all(p.sample is not None and p.sample.energy_j is not None for p in polls)
        joules, trace = _from_counter(polls, t0_s, t1_s) if counter else _from_watts(polls, t0_s, t1_s)
        peak = max((w for _, w in trace), default=joules / duration)
        energy = Energy.parse(
            {
                "joules": joules,
                "avg_watts": joules / duration,
                "peak_watts": peak,
                "source": self.client.source,
                "estimate": False,
                "boundary": NODE,
                "samples": len(inside),
                "duration_s": duration,
                "counter_joules": joules if counter else None,
                "integral_joules": None if counter else joules,
                "mismatch": None,
                "sm_clock_mhz": None,
                "trace": [[round(t - t0_s, 4), round(w, 2)] for t, w in trace[:MAX_TRACE_POINTS]],
            }
        )
        return NodeWindow(energy, tuple(flags))


def _from_watts(polls: list[Poll], t0: float, t1: float) -> tuple[float, list[tuple[float, float]]]:
    """The integral of the polled watts over [t0, t1], linear between polls and flat past the
    last; and the polls inside as (t, watts)."""
    points = [(p.t_s, float(p.sample.watts)) for p in polls if p.sample is not None and p.sample.watts is not None]
    times = [t for t, _ in points]

    def watts_at(t: float) -> float:
        i = bisect.bisect_right(times, t)
        if i == 0:
            return points[0][1]
        if i == len(points):
            return points[-1][1]
        (ta, wa), (tb, wb) = points[i - 1], points[i]
        return wa + (wb - wa) * (t - ta) / (tb - ta)

    inside = [(t, w) for t, w in points if t0 < t < t1]
    knots = [(t0, watts_at(t0)), *inside, (t1, watts_at(t1))]
    joules = sum(0.5 * (wa + wb) * (tb - ta) for (ta, wa), (tb, wb) in zip(knots, knots[1:], strict=False))
    return joules, inside


def _from_counter(polls: list[Poll], t0: float, t1: float) -> tuple[float, list[tuple[float, float]]]:
    """The counter's difference over [t0, t1], each edge interpolated between the polls around
    it (the last two polls' rate carried past the last); and the watts between polls inside."""
    points = [(p.t_s, float(p.sample.energy_j)) for p in polls if p.sample is not None and p.sample.energy_j is not None]
    times = [t for t, _ in points]

    def energy_at(t: float) -> float:
        i = bisect.bisect_right(times, t)
        if i >= len(points):
            if len(points) < 2:
                return points[-1][1]
            (ta, ea), (tb, eb) = points[-2], points[-1]
            return eb + (eb - ea) / (tb - ta) * (t - tb) if tb > ta else eb
        (ta, ea), (tb, eb) = points[max(i - 1, 0)], points[i]
        return ea + (eb - ea) * (t - ta) / (tb - ta) if tb > ta else ea

    rates = [
        (tb, (eb - ea) / (tb - ta)) for (ta, ea), (tb, eb) in zip(points, points[1:], strict=False) if t0 < tb < t1 and tb > ta
    ]
    return energy_at(t1) - energy_at(t0), rates


def open_node_power(spec: str | None, reader: str = "this process", env: dict[str, str] | None = None) -> NodePower | None:
    """The node's BMC as `--node-power SPEC` (else $WATTBENCH_NODE_POWER) names it, logged in and
    read once; None where neither names one. UsageError (exit 2, one line, before anything is
    measured) when the spec, the credentials or the BMC is wrong."""
    from bench.device.bmc import connect
    from bench.device.bmc.target import SPEC_ENV, NodeConfigError, parse_spec
    from bench.errors import UsageError

    environ = dict(os.environ) if env is None else env
    spec = spec or environ.get(SPEC_ENV) or None
    if spec is None:
        return None
    try:
        target = parse_spec(spec, environ)
        client = connect(target)
    except (NodeConfigError, BmcError) as exc:
        raise UsageError(f"--node-power: {str(exc).removeprefix('--node-power: ')}") from None
    return NodePower(client, max(target.poll_s, client.declared_update_s or 0.0), target.url, reader=reader)
