"""The supervisor: owns every long-lived component in one TaskGroup.

Each component runs in its own child task. When a component raises, the
supervisor records the error, waits with exponential backoff and jitter, and
runs it again; one component failing never takes the others (or the daemon)
down. A component may be stopped or replaced alone (reload).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatewayd.errors import GatewayError

log = logging.getLogger(__name__)


class Component(Protocol):
    """Anything the supervisor can run: a name, a run() and a health() view."""

    name: str

    async def run(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


@dataclass
class ComponentStatus:
    """What the supervisor knows of one component (shown in status)."""

    state: str = "starting"  # starting | running | backoff | finished | stopped
    since: float = field(default_factory=time.time)
    started_at: float | None = None
    restarts: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    next_retry_at: float | None = None

    def set(self, state: str) -> None:
        self.state = state
        self.since = time.time()

    def as_dict(self) -> dict[str, Any]:
        now = time.time()
        return {
            "state": self.state,
            "since": self.since,
            "restarts": self.restarts,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "next_retry_in_s": (round(max(0.0, self.next_retry_at - now), 3)
                                if self.next_retry_at and self.state == "backoff" else None),
        }


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: delay n is uniform in [d/2, d], d = initial*2^n."""

    initial: float = 1.0
    maximum: float = 60.0
    stable_after: float = 30.0  # a run this long resets the backoff

    def delay(self, attempt: int) -> float:
        d: float = min(self.maximum, self.initial * 2.0 ** min(attempt, 32))
        return d / 2 + random.uniform(0, d / 2)  # noqa: S311 - jitter, not cryptography


def describe(err: BaseException) -> str:
    """A one-line description of an error for status and logs."""
    if isinstance(err, GatewayError):
        return str(err) or type(err).__name__
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Supervisor:
    """Runs components, restarts failed ones, and reports their state.

    Use as an async context manager; leaving it cancels every component.
    """

    def __init__(self, *, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._components: dict[str, Component] = {}
        self._status: dict[str, ComponentStatus] = {}

    async def __aenter__(self) -> Supervisor:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks.values():
            task.cancel()
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    def start(self, component: Component) -> None:
        """Start supervising ``component`` (its name must be unique)."""
        if self._tg is None:
            raise RuntimeError("supervisor is not running")
        if component.name in self._tasks:
            raise ValueError(f"component {component.name!r} is already running")
        self._components[component.name] = component
        self._status[component.name] = ComponentStatus()
        self._tasks[component.name] = self._tg.create_task(
            self._supervise(component), name=component.name)

    async def stop(self, name: str) -> None:
        """Cancel the component ``name`` and wait until it has stopped."""
        task = self._tasks.pop(name, None)
        self._components.pop(name, None)
        self._status.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])

    async def stop_all(self) -> None:
        """Stop every component, in the reverse order of their start."""
        for name in reversed(list(self._tasks)):
            await self.stop(name)

    def names(self) -> list[str]:
        return list(self._components)

    def component(self, name: str) -> Component | None:
        return self._components.get(name)

    def status(self, name: str) -> ComponentStatus | None:
        return self._status.get(name)

    def alive(self) -> bool:
        """True when every component's supervising task is still running (or finished
        on purpose): the condition for the systemd watchdog."""
        for name, task in self._tasks.items():
            if task.done() and self._status[name].state != "finished":
                return False
        return True

    def report(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, comp in self._components.items():
            entry = self._status[name].as_dict()
            try:
                entry["health"] = comp.health()
            except Exception as err:  # noqa: BLE001 - a broken health() must not break status
                entry["health"] = {"error": describe(err)}
            out[name] = entry
        return out

    async def _supervise(self, component: Component) -> None:
        status = self._status[component.name]
        attempt = 0
        while True:
            status.set("running")
            started = time.monotonic()
            status.started_at = time.time()
            try:
                await component.run()
            except asyncio.CancelledError:
                status.set("stopped")
                raise
            except Exception as err:
                if time.monotonic() - started >= self.backoff.stable_after:
                    attempt = 0
                delay = self.backoff.delay(attempt)
                attempt += 1
                status.errors += 1
                status.restarts += 1
                status.last_error = describe(err)
                status.last_error_at = time.time()
                status.next_retry_at = time.time() + delay
                status.set("backoff")
                if isinstance(err, GatewayError):
                    log.warning("%s failed: %s; restarting in %.1fs",
                                component.name, status.last_error, delay)
                else:
                    log.error("%s crashed; restarting in %.1fs", component.name, delay,
                              exc_info=err)
                await asyncio.sleep(delay)
            else:
                status.set("finished")
                log.info("%s finished", component.name)
                return
