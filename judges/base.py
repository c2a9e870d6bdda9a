"""What a judge is: a registered factory whose arguments are recorded, returning one Verdict type.

A judge is a plain object with `name`, `version`, `args` and an async `judge(subject)`; it never
raises into the runner: `judge_safely` turns any exception into a verdict with `error` set, which
aggregates skip. Factories are registered by name, so `shadoweval judge run --judge NAME` and a
configuration file can build any judge, fake ones in tests included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shadoweval.core.types import Exchange, Output, Verdict, judge_key, new_id


@dataclass(frozen=True, slots=True)
class Subject:
    """What a judge sees: the exchange, the output to judge, and production's output beside it
    (None when the output is production's own)."""

    exchange: Exchange
    output: Output
    production: Output | None = None


class Judge(Protocol):
    name: str
    version: str
    args: dict[str, Any]

    async def judge(self, subject: Subject) -> Verdict: ...


_FACTORIES: dict[str, Callable[..., Judge]] = {}
EMBEDDING_JUDGES = ("grounded", "citations")  # the judges that take an `embedder` argument


def register(name: str) -> Callable[[Callable[..., Judge]], Callable[..., Judge]]:
    """Register a judge factory under `name` (a class or a function taking keyword arguments)."""

    def deco(factory: Callable[..., Judge]) -> Callable[..., Judge]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"a judge named {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return deco


def create(name: str, **args: Any) -> Judge:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(f"no judge named {name!r}; known: {', '.join(sorted(_FACTORIES))}") from None
    return factory(**args)


def registered() -> list[str]:
    return sorted(_FACTORIES)


def key_of(j: Judge) -> str:
    return judge_key(j.name, j.version, j.args)


def verdict(j: Judge, s: Subject, **fields: Any) -> Verdict:
    """A verdict for `s` stamped with the judge's name, version and arguments."""
    return Verdict(id=new_id(), output_id=s.output.id, exchange_id=s.exchange.id, judge=j.name,
                   version=j.version, args=dict(j.args), created_at=time.time(), **fields)


def production_to_compare(s: Subject) -> Output | str:
    """Production's answer to compare `s`'s output with, for a judge that needs one (`needs_production`),
    or why there is none: `s` is production's own answer, or production did not answer."""
    prod = s.production
    if s.output.role == "production" or prod is None or prod.id == s.output.id:
        return "no production output to compare with"
    if prod.status != "ok":
        return f"production did not answer ({prod.status})"
    return prod


async def judge_safely(j: Judge, s: Subject) -> Verdict:
    try:
        return await j.judge(s)
    except Exception as exc:  # "could not judge" is a value, never an exception in the runner
        return verdict(j, s, error=f"{type(exc).__name__}: {exc}")
