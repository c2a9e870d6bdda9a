"""The cascade: offline judges on every output, the LLM tier only where it is worth paying for.

`share` decides which outputs the LLM judges see after the offline pass:

- `all`: every output;
- `sample`: a deterministic share (`sample_rate`) of outputs, chosen by a hash of the output id,
  so the same outputs are chosen on every pass and by every process;
- `risky`: outputs with a reason to doubt the offline verdicts: an offline score within
  `risk_margin` of that judge's calibrated threshold, offline judges that disagree (one passes the
  output, another fails it), a large gap between the candidate's and production's offline scores on
  the same exchange, an end-user complaint (negative rating or a comment), or an answer the offline
  judges could not judge because it only says what the documents do not hold (a refusal: right
  when the documents lack it, wrong when they hold it, which only a reader can tell);
- `none`: no LLM judging.

The reasons an output was chosen are returned with it (and logged by the runner), so a report can
say why an LLM looked at something.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from shadoweval.core.types import Feedback, Output, Verdict

from .text import ABSENT_REASON

Share = Literal["all", "sample", "risky", "none"]


@dataclass(frozen=True, slots=True)
class CascadePolicy:
    share: Share = "risky"
    sample_rate: float = 0.1
    risk_margin: float = 0.1
    gap: float = 0.3

    def __post_init__(self) -> None:
        if self.share not in ("all", "sample", "risky", "none"):
            raise ValueError(f"share must be all, sample, risky or none, not {self.share!r}")


def sampled(output_id: str, rate: float) -> bool:
    """A stable coin flip per output: True for about `rate` of all ids."""
    h = int.from_bytes(hashlib.blake2b(output_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < rate


def risk_reasons(output: Output, verdicts: Iterable[Verdict], *, production: Sequence[Verdict] = (),
                 feedback: Sequence[Feedback] = (), policy: CascadePolicy = CascadePolicy()) -> list[str]:
    """Why the offline verdicts on `output` deserve a second look (empty: they do not)."""
    own = [v for v in verdicts if v.output_id == output.id]
    mine = [v for v in own if v.error is None]
    reasons: list[str] = []
    for v in mine:
        t = v.threshold
        if v.score is not None and t is not None and abs(v.score - t) <= policy.risk_margin:
            reasons.append(f"near_threshold:{v.judge}")
    outcomes = {v.judge: v.passes for v in mine if v.passes is not None}
    if len(set(outcomes.values())) > 1:
        reasons.append("judges_disagree:" + ",".join(sorted(j for j, p in outcomes.items() if not p)))
    theirs = {v.judge: v.score for v in production if v.error is None and v.score is not None}
    for v in mine:
        if v.score is not None and v.judge in theirs and abs(v.score - theirs[v.judge]) >= policy.gap:
            reasons.append(f"gap_vs_production:{v.judge}")
    if any(f.is_complaint for f in feedback):
        reasons.append("complaint")
    reasons += [f"refusal:{v.judge}" for v in own if v.error is not None and ABSENT_REASON in v.error]
    return reasons


def select(output: Output, verdicts: Iterable[Verdict], *, production: Sequence[Verdict] = (),
           feedback: Sequence[Feedback] = (), policy: CascadePolicy = CascadePolicy()) -> list[str] | None:
    """The reasons to send `output` to the LLM tier, or None when it stays offline-only."""
    if policy.share == "none":
        return None
    if policy.share == "all":
        return ["all"]
    if policy.share == "sample":
        return ["sample"] if sampled(output.id, policy.sample_rate) else None
    return risk_reasons(output, verdicts, production=production, feedback=feedback, policy=policy) or None
