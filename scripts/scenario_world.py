"""The planted-truth world of the scenario suite: scenarios, and one local server that plays them.

Every question carries an id and a slice (its route); for every candidate and question the world
draws, from the scenario's mix, which answer is truly better: the candidate's, production's, or
neither (a tie). Every answer ends in a short reference token, so the judge model and the
simulated graders, which the world also plays, can tell which answer is which and look up the
truth. Both err at known rates:

- the judge model (the `pairwise` judge's LLM) reports the truth with probability
  `judge_accuracy`, else one of the two other outcomes at random; it answers the same way in both
  orders the pairwise judge asks in. A reward-gaming candidate first wins it over outright with
  probability `judge_bias` (per week), whatever the truth;
- a grader reports the truth with probability `grader_accuracy`, else one of the two other
  outcomes at random.

Everything is drawn from the seed, per (candidate, question) and per grade, so a seed gives the
same world whatever order requests arrive in. Nothing here belongs to the product: it is the
test harness of `scripts/scenarios` (docs/scenarios.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shadoweval.cli.mockllm import MockLLM
from shadoweval.core.messages import last_user_text
from shadoweval.proxy.asgi import lifespan, send_json

PRODUCTION_MODEL = "gpt-4o"
SLICES = ("billing", "shipping", "returns", "account")
CANDIDATE, TIE, PRODUCTION = 1.0, 0.5, 0.0
OUTCOMES = (CANDIDATE, TIE, PRODUCTION)
_TOKEN = re.compile(r"\(ref ([0-9a-f]{10})\)")
_TOPICS = {
    "billing": ("a double charge on my card", "changing the invoice address", "a refund that has not arrived"),
    "shipping": ("a parcel stuck in transit", "shipping to another country", "a delivery left at the wrong door"),
    "returns": ("returning a faulty charger", "the return window for opened items", "a missing return label"),
    "account": ("resetting my password", "merging two accounts", "deleting my account and data"),
}


@dataclass(frozen=True, slots=True)
class Mix:
    """How often the candidate's answer is truly better, equal, or worse than production's."""

    win: float
    tie: float
    loss: float

    @property
    def rate(self) -> float:
        return self.win + self.tie / 2


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    about: str
    model: str  # the real model it pretends to be, so the price table gives its cost
    mix: Mix
    expect: str  # "pass", or the prefix of the gate reason a right failure gives
    mode: str  # the [gate] mode it is judged under
    alarm: str | None = None  # "drift" or "reward_gaming": the alarm that should fire
    slices: dict[str, Mix] = field(default_factory=dict)  # per-slice mixes overriding `mix`
    week2: Mix | None = None  # the mix in the second week, when it changes
    judge_bias: tuple[float, float] = (0.0, 0.0)  # per week: P(the judge model prefers it whatever the truth)
    latency_s: float = 0.04
    words: int = 1  # answer length, in units of production's

    def mix_for(self, slice_: str, week: int) -> Mix:
        if week == 2 and self.week2 is not None:
            return self.week2
        return self.slices.get(slice_, self.mix)


EQUAL = Mix(0.25, 0.50, 0.25)
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("equal-cheaper", "as good as production, a fraction of the cost and faster", "gpt-4o-mini", EQUAL,
             expect="pass", mode="not-worse"),
    Scenario("clearly-better", "truly better on 45% of questions, worse on 15%", "gpt-4.1", Mix(0.45, 0.40, 0.15),
             expect="pass", mode="better", latency_s=0.05),
    Scenario("worse", "truly worse on 45% of questions, better on 15%", "gpt-4o-mini", Mix(0.15, 0.40, 0.45),
             expect="quality:", mode="not-worse"),
    Scenario("slice-regression", "as good as production except on billing, where it loses 60%", "gpt-4o-mini",
             EQUAL, slices={"billing": Mix(0.08, 0.32, 0.60)}, expect="slice route=billing:", mode="not-worse"),
    Scenario("drift", "as good as production in week 1, worse in week 2 (a new snapshot)", "gpt-4o-mini", EQUAL,
             week2=Mix(0.12, 0.38, 0.50), expect="quality:", mode="not-worse", alarm="drift"),
    Scenario("reward-gaming", "truly a little worse, verbose, and learning to please the judge: it wins the "
             "judge over on 25% of pairs in week 1 and 65% in week 2", "gpt-4o-mini", Mix(0.15, 0.45, 0.40),
             judge_bias=(0.25, 0.65), words=2, expect="quality:", mode="not-worse", alarm="reward_gaming"),
    Scenario("judge-pleaser", "as good as production by the truth, verbose, and winning the judge over on 40% of "
             "pairs from the start (reward gaming with no trend to see)", "gpt-4o-mini", EQUAL, judge_bias=(0.4, 0.4),
             words=2, expect="alarm:", mode="not-worse", alarm="reward_gaming"),
)}


@dataclass(frozen=True, slots=True)
class Question:
    index: int
    slice: str
    week: int
    text: str


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _other(rng: np.random.Generator, truth: float) -> float:
    return float(rng.choice([o for o in OUTCOMES if o != truth]))


class World:
    """Questions, the planted truth, and the answers, judge replies and grades that follow from it."""

    def __init__(self, scenarios: list[Scenario], n: int, seed: int, *, judge_accuracy: float = 0.85,
                 grader_accuracy: float = 0.8, production_latency_s: float = 0.08) -> None:
        self.scenarios = {s.name: s for s in scenarios}
        self.seed, self.n = seed, n
        self.judge_accuracy, self.grader_accuracy = judge_accuracy, grader_accuracy
        self.production_latency_s = production_latency_s
        order = _rng(seed, 1).permutation(np.arange(n) % len(SLICES))  # equal slices, shuffled
        picks = _rng(seed, 2).integers(0, 3, n)
        self.questions = [Question(i, SLICES[s], 1 if i < n // 2 else 2,
                                   f"[Q{i:04d}] I need help with {_TOPICS[SLICES[s]][p]}. What should I do?")
                          for i, (s, p) in enumerate(zip(order, picks, strict=True))]
        self.truth: dict[tuple[str, int], float] = {}
        self.judged: dict[tuple[str, int], float] = {}
        for s in scenarios:
            k = list(SCENARIOS).index(s.name) + 10  # a stream per scenario, whichever others run with it
            for q in self.questions:
                m = s.mix_for(q.slice, q.week)
                truth = float(_rng(seed, k, q.index, 3).choice(OUTCOMES, p=[m.win, m.tie, m.loss]))
                self.truth[(s.name, q.index)] = truth
                r = _rng(seed, k, q.index, 4)
                if r.random() < s.judge_bias[q.week - 1]:
                    self.judged[(s.name, q.index)] = CANDIDATE
                else:
                    self.judged[(s.name, q.index)] = truth if r.random() < judge_accuracy else _other(r, truth)
        self.by_token: dict[str, tuple[str, int]] = {}
        self.grades_given: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    # ---- answers --------------------------------------------------------------------------------

    def token(self, persona: str, index: int) -> str:
        t = hashlib.blake2b(f"{self.seed}:{persona}:{index}".encode(), digest_size=5).hexdigest()
        self.by_token[t] = (persona, index)
        return t

    def question_of(self, request: dict[str, Any]) -> Question | None:
        m = re.search(r"\[Q(\d{4})\]", last_user_text(request))
        return self.questions[int(m.group(1))] if m and int(m.group(1)) < self.n else None

    def answer_for(self, persona: str) -> Callable[[dict[str, Any]], str]:
        words = self.scenarios[persona].words if persona in self.scenarios else 1

        def answer(request: dict[str, Any]) -> str:
            q = self.question_of(request)
            if q is None:
                return "I can only help with questions about your order or account."
            body = (f"Sorry about the trouble with {_TOPICS[q.slice][0].split(' ', 1)[1]}. Open Settings, then "
                    f"{q.slice.capitalize()}, and follow the steps shown there; support can finish it for you.")
            extra = " I am confident this fully resolves it, and it is the recommended, complete approach." * (words - 1)
            return f"{body}{extra} (ref {self.token(persona, q.index)})"

        return answer

    def pair_of(self, texts: tuple[str, str]) -> tuple[str, int, int] | None:
        """(candidate, question, side of the candidate: 0 for the first text) of two answers."""
        found = [self.by_token.get(m.group(1)) if (m := _TOKEN.search(t or "")) else None for t in texts]
        if None in found:
            return None
        (pa, ia), (pb, ib) = found  # type: ignore[misc]
        if ia != ib or (pa == "production") == (pb == "production"):
            return None
        return (pb, ib, 1) if pa == "production" else (pa, ia, 0)

    # ---- the judge model and the graders -------------------------------------------------------

    def judge_reply(self, request: dict[str, Any]) -> str:
        prompt = last_user_text(request)
        texts = tuple(m.group(1) if (m := re.search(rf"<answer_{s}>(.*?)</answer_{s}>", prompt, re.S)) else ""
                      for s in "ab")
        pair = self.pair_of(texts)  # type: ignore[arg-type]
        if pair is None:
            return json.dumps({"reason": "cannot tell the answers apart", "winner": "tie"})
        cand, index, side = pair
        outcome = self.judged[(cand, index)]
        winner = "tie" if outcome == TIE else "AB"[side] if outcome == CANDIDATE else "AB"[1 - side]
        return json.dumps({"reason": "planted verdict", "winner": winner})

    def grade(self, left: str, right: str) -> str | None:
        """A simulated grader's preference ("left", "right", "tie") for a pair shown as left/right.

        The k-th grade of a pair is drawn from (seed, candidate, question, k), so which grader
        happens to take which pair changes nothing."""
        pair = self.pair_of((left, right))
        if pair is None:
            return None
        cand, index, side = pair
        with self._lock:
            k = self.grades_given.get((cand, index), 0)
            self.grades_given[(cand, index)] = k + 1
        truth = self.truth[(cand, index)]
        r = _rng(self.seed, list(SCENARIOS).index(cand) + 10, index, 5, k)
        outcome = truth if r.random() < self.grader_accuracy else _other(r, truth)
        return "tie" if outcome == TIE else ("left", "right")[side if outcome == CANDIDATE else 1 - side]

    # ---- the server -----------------------------------------------------------------------------

    def app(self) -> Callable[..., Any]:
        """One ASGI app for every model: /p/<persona>/v1/... (production, a scenario's name, judge)."""
        mocks: dict[str, Any] = {"production": MockLLM(PRODUCTION_MODEL, self.answer_for("production"),
                                                       latency_s=self.production_latency_s),
                                 "judge": MockLLM("judge", self.judge_reply)}
        for s in self.scenarios.values():
            mocks[s.name] = MockLLM(s.model, self.answer_for(s.name), latency_s=s.latency_s)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
                return
            _, _, persona, rest = (scope["path"] + "/").split("/", 3)
            mock = mocks.get(persona) if scope["path"].startswith("/p/") else None
            if mock is None:
                await send_json(send, 404, {"error": {"message": f"no model at {scope['path']}"}})
                return
            path = "/" + rest.rstrip("/")
            await mock({**scope, "path": path, "raw_path": path.encode()}, receive, send)

        return app
