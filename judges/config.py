"""Build the configured judges from Settings: the offline tier, the LLM tier and the cascade policy.

One judge model (and one daily budget) is shared by every LLM judge, so the budget holds across
them. The budget left for today is what `[judges] llm_daily_usd` allows minus what verdicts
stored since midnight UTC already cost, so restarting the judge process does not reset it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from shadoweval.core.settings import JudgesSettings, Settings
from shadoweval.core.store import Store

from .base import EMBEDDING_JUDGES, Judge, create
from .cascade import CascadePolicy, Share
from .llm import Budget, JudgeModel


@dataclass(frozen=True, slots=True)
class Configured:
    offline: list[Judge]
    llm: list[Judge]
    policy: CascadePolicy
    skipped: list[str]  # configured judges left out, with why


def midnight_utc(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return now - now % 86400


def _offline_args(name: str, s: JudgesSettings) -> dict[str, object]:
    args: dict[str, object] = {"embedder": s.embedder} if name in EMBEDDING_JUDGES else {}
    if name in s.thresholds:
        args["threshold"] = s.thresholds[name]
    if name in s.calibration:
        args["calibration"] = list(s.calibration[name])
    return args


def build(settings: Settings, *, store: Store | None = None, only: Sequence[str] = ()) -> Configured:
    """The judges `[judges]` configures (or just `only`, by name), ready to run."""
    s = settings.judges
    skipped: list[str] = []
    wanted = set(only)
    offline = [create(n, **_offline_args(n, s)) for n in s.offline if not wanted or n in wanted]
    llm: list[Judge] = []
    names = [n for n in s.llm if not wanted or n in wanted]
    if names and not s.llm_model:
        skipped.extend(f"{n}: no judge model configured ([judges] llm_model)" for n in names)
        names = []
    if names:
        spent = store.judge_spend_since(midnight_utc()) if store is not None else 0.0
        budget = Budget(max(0.0, s.llm_daily_usd - spent)) if s.llm_daily_usd > 0 else None
        model = JudgeModel(model=s.llm_model, api_base=s.llm_api_base, api_key_env=s.llm_api_key_env,
                           api_key=settings.secret(s.llm_api_key_env), timeout_s=s.llm_timeout_s,
                           concurrency=s.llm_concurrency, budget=budget)
        for n in names:
            if n == "intent":
                if not settings.intents:
                    skipped.append("intent: no [[intents]] configured")
                    continue
                llm.append(create(n, judge_model=model,
                                  intents=[i.model_dump() for i in settings.intents]))
            else:
                llm.append(create(n, judge_model=model))
    unknown = wanted - {j.name for j in offline + llm} - {x.split(":")[0] for x in skipped}
    for n in sorted(unknown):  # asked for by name but not configured: build it with its defaults
        j = create(n)
        if hasattr(j, "llm"):
            skipped.append(f"{n}: not in [judges] llm, or no judge model configured")
        else:
            offline.append(j)
    # [judges] llm_share is validated to be one of Share's values
    policy = CascadePolicy(share=cast(Share, s.llm_share), sample_rate=s.llm_sample_rate, risk_margin=s.risk_margin, gap=s.gap)
    return Configured(offline, llm, policy, skipped)
