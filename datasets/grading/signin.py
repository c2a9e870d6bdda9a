"""Sign-in protection for the grading page: a lockout per client address, one pace for all attempts,
and sessions that signing out revokes.

Guessing a token is the only way in, so the number of guesses is what is limited, not the number of
requests: an attempt is admitted before its token is looked at, so being refused says nothing about
the token. Waiting for a turn is an `asyncio.sleep`, which holds no worker, and turns are handed out
from one schedule for the whole process, so parallel requests queue instead of multiplying the rate.

Everything here is in memory, per process: a restart forgets lockouts and signs everyone out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("shadoweval.grading")

MAX_WAIT_S = 2.0  # longer than this in the queue for a turn: refused at once, with Retry-After
MAX_ADDRESSES = 10_000  # addresses remembered; with the global pace, filling this takes longer than a lockout
MAX_SESSIONS_PER_PERSON = 50  # a person's oldest sessions end first beyond this


@dataclass(frozen=True, slots=True)
class Refusal:
    message: str
    retry_after: int  # seconds, for the Retry-After header


def span(seconds: float) -> str:
    """`15 minutes`, `40 seconds`: how long, in words a person reads."""
    if seconds >= 90:
        n = round(seconds / 60)
        return f"{n} minute{'s' * (n != 1)}"
    n = max(1, math.ceil(seconds))
    return f"{n} second{'s' * (n != 1)}"


class SignInGuard:
    """Admits sign-in attempts: per address (`max_failures` failures within `lockout_s` lock it out
    for `lockout_s`) and for all addresses together (`per_s` attempts a second, a burst of as many)."""

    def __init__(self, *, max_failures: int, lockout_s: float, per_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.lockout_s, self.rate = max_failures, lockout_s, per_s
        self.burst = max(1.0, per_s)
        self.clock = clock
        self._tokens, self._stamp = self.burst, clock()
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # address -> locked until
        self._pending: dict[str, int] = {}  # admitted, not yet decided

    async def admit(self, address: str) -> Refusal | None:
        """Wait for this attempt's turn, or say why it is refused. After None, call `done` with no
        await in between, so every admitted attempt is counted."""
        now = self.clock()
        refusal = self._address_refusal(address, now)
        if refusal is not None:
            return refusal
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        wait = max(0.0, (1 - self._tokens) / self.rate)
        if wait > MAX_WAIT_S:
            return Refusal("Too many sign-in attempts right now: try again in a few seconds.", math.ceil(wait))
        self._tokens -= 1
        self._pending[address] = self._pending.get(address, 0) + 1
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except BaseException:  # the client went away: its turn is spent, its attempt is not counted
                self._settle(address)
                raise
        return None

    def done(self, address: str, *, ok: bool) -> None:
        """Record an admitted attempt's outcome: a success gives its turn back, a failure counts."""
        self._settle(address)
        now = self.clock()
        if ok:
            self._tokens = min(self.burst, self._tokens + 1)
            return
        failures = self._failures.setdefault(address, deque())
        failures.append(now)
        self._expire(failures, now)
        if len(failures) >= self.max_failures:
            self._locked[address] = now + self.lockout_s
            del self._failures[address]
            log.warning("grading sign-in locked out", extra={"client": address, "failures": self.max_failures,
                                                              "lockout_s": self.lockout_s})
        self._bound(now)

    def _address_refusal(self, address: str, now: float) -> Refusal | None:
        until = self._locked.get(address)
        if until is not None:
            if until > now:
                return Refusal(f"Too many failed sign-ins from your address ({self.max_failures} within "
                               f"{span(self.lockout_s)}): try again in {span(until - now)}.", math.ceil(until - now))
            del self._locked[address]
        failures = self._failures.get(address)
        if failures is not None:
            self._expire(failures, now)
        counted = (len(failures) if failures else 0) + self._pending.get(address, 0)
        if counted >= self.max_failures:  # parallel attempts from one address count before they finish
            return Refusal("Too many sign-in attempts at once from your address: try again in a few seconds.",
                           math.ceil(MAX_WAIT_S))
        return None

    def _expire(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.lockout_s:
            failures.popleft()

    def _settle(self, address: str) -> None:
        left = self._pending.get(address, 0) - 1
        if left > 0:
            self._pending[address] = left
        else:
            self._pending.pop(address, None)

    def _bound(self, now: float) -> None:
        if len(self._failures) + len(self._locked) <= MAX_ADDRESSES:
            return
        for address, failures in list(self._failures.items()):
            self._expire(failures, now)
            if not failures:
                del self._failures[address]
        for address, until in list(self._locked.items()):
            if until <= now:
                del self._locked[address]
        while len(self._failures) > MAX_ADDRESSES // 2:  # still full: forget the longest-known addresses
            del self._failures[next(iter(self._failures))]


class Sessions:
    """Signed-in sessions by id; signing out ends one, `session_s` ends them all. Locked: FastAPI runs
    the page's sync dependencies, which look sessions up, in worker threads."""

    def __init__(self, session_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self.session_s = session_s
        self.clock = clock
        self._live: dict[str, tuple[str, float]] = {}  # id -> (evaluator, expires at)
        self._lock = threading.Lock()

    def open(self, name: str) -> tuple[str, int]:
        """A new session for `name`: its id and when it expires (epoch seconds)."""
        now = self.clock()
        sid, expires = secrets.token_urlsafe(24), int(now + self.session_s)
        with self._lock:
            self._live = {s: v for s, v in self._live.items() if v[1] > now}
            theirs = [s for s, (who, _) in self._live.items() if who == name]
            for s in theirs[: max(0, len(theirs) - MAX_SESSIONS_PER_PERSON + 1)]:
                del self._live[s]
            self._live[sid] = (name, expires)
        return sid, expires

    def who(self, sid: str) -> tuple[str, float] | None:
        """The live session's evaluator and expiry; None when it was closed, has expired or never was."""
        with self._lock:
            found = self._live.get(sid)
            if found is not None and found[1] <= self.clock():
                del self._live[sid]
                return None
            return found

    def close(self, sid: str) -> None:
        with self._lock:
            self._live.pop(sid, None)
