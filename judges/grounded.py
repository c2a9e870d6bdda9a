"""Groundedness, offline tier: is each sentence of the answer supported by the retrieved passages?

No LLM. Each sentence of the answer gets a probability of being supported by the passages from the
learned support model (`support.py`; how it was trained and how well it does on sources it never
saw: docs/judges-model-card.md). The answer's score combines them (`answer_score`): the content-
word-weighted mean of the sentences' probabilities, pulled a quarter of the way toward the weakest
sentence, because one invented sentence makes an answer ungrounded however good the rest is.

Evidence names the sentences below `sentence_cut`, each with its closest passage and unit, and the
numbers, names and words the passages do not contain. Sentences the model cannot read (another
script, no content words) are listed as skipped; an answer with none it can read gets no score and
says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shadoweval.core.context import contexts_of
from shadoweval.core.messages import user_texts
from shadoweval.core.types import Verdict

from .base import Subject, register, verdict
from .embed import get_embedder
from .scale import Scale
from .support import (
    Claim,
    Evidence,
    Reader,
    SupportModel,
    closest,
    features,
    known_from,
    leading_reason,
    load_model,
    model_id,
    reader_for,
    unreadable,
)
from .text import content_words, sentences

# The weakest sentence's share of the answer score (chosen on the training sources; docs/judges-model-card.md).
WEAKEST_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    sentence: str
    support: float
    weight: int
    passage_id: str | None
    closest_unit: str | None
    missing_numbers: list[str]
    missing_names: list[str]
    missing_words: list[str]

    def as_evidence(self) -> dict[str, Any]:
        return {"sentence": self.sentence, "support": round(self.support, 3),
                "closest_passage": self.passage_id, "closest_text": (self.closest_unit or "")[:300],
                "missing_numbers": self.missing_numbers, "missing_names": self.missing_names,
                "missing_words": self.missing_words[:12]}


def answer_score(probabilities: list[float], weights: list[int], *, weakest_share: float = WEAKEST_SHARE) -> float:
    """Weighted mean of the sentences' support, pulled toward the least supported sentence."""
    total = sum(weights)
    mean = sum(p * w for p, w in zip(probabilities, weights, strict=True)) / total
    return (1 - weakest_share) * mean + weakest_share * min(probabilities)


def sentence_support(claim: Claim, evidence: list[Evidence], ids: list[str], model: SupportModel, *,
                     known: frozenset[str] = frozenset()) -> SentenceSupport | None:
    f = features(claim, evidence, known=known)
    if f is None:
        return None
    near = closest(claim, evidence)
    vocabulary = frozenset().union(*(e.vocabulary for e in evidence))
    known_numbers = frozenset().union(*(e.numbers for e in evidence)) | known
    known_words = frozenset().union(*(e.words for e in evidence)) | known
    return SentenceSupport(
        claim.text, model.probability(f), len(claim.words),
        ids[near[0]] if near else None, near[1] if near else None,
        [n for n in dict.fromkeys(claim.numbers) if n not in known_numbers],
        [n for n in dict.fromkeys(claim.entities) if n not in known_words],
        [w for w in dict.fromkeys(claim.words) if w not in vocabulary])


def support(answer: str, passages: list[dict[str, Any]], reader: Reader, model: SupportModel, *,
            said: str = "") -> tuple[list[SentenceSupport], list[tuple[str, str]]]:
    """Each readable sentence's support, and the sentences skipped with the reason (blocking).
    `said`: what the user has said (every user turn, `core.messages.user_texts`)."""
    known = known_from(said)
    sents = [s for s in sentences(answer) if content_words(s)]
    if not sents:
        return [], []
    evidence = reader.evidence([p.get("text") or "" for p in passages])
    ids = [str(p.get("id")) for p in passages]
    parts, skipped = [], []
    for c, raw in zip(reader.claims(sents), sents, strict=True):
        s = sentence_support(c, evidence, ids, model, known=known) if c.readable else None
        if s is None:
            skipped.append((raw, c.why_not or "nothing in the passages to compare with"))
        else:
            parts.append(SentenceSupport(raw, s.support, s.weight, s.passage_id, s.closest_unit,
                                         s.missing_numbers, s.missing_names, s.missing_words))
    return parts, skipped


@register("grounded")
class Groundedness:
    """Offline groundedness: how well the passages support each sentence (learned support model).

    Score = the answer's support (0-1, a probability from the support model); label grounded or
    ungrounded at `threshold`; evidence = the sentences below `sentence_cut`."""

    name = "grounded"
    version = "3"

    def __init__(self, *, threshold: float | None = None, sentence_cut: float = 0.5, model: str | None = None,
                 embedder: str = "minilm", calibration: Sequence[float] | None = None) -> None:
        self.model = load_model(model)
        # `threshold` is on the support model's scale; a team's rescaling (`judges.scale`) moves it along
        self.scale = Scale.of(calibration)
        raw = self.model.threshold("grounded") if threshold is None else threshold
        self.threshold = round(self.scale(raw), 4) if self.scale else raw
        self.sentence_cut = sentence_cut
        self.args: dict[str, Any] = {"threshold": self.threshold, "sentence_cut": sentence_cut,
                                     "model": model_id(self.model), "embedder": embedder}
        if self.scale:
            self.args["calibration"] = self.scale.as_list()
        self.reader = reader_for(get_embedder(embedder), self.model.reader_layers)

    async def judge(self, s: Subject) -> Verdict:
        passages = [p for p in contexts_of(s.exchange) if (p.get("text") or "").strip()]
        if not passages:
            return verdict(self, s, error="could not judge: the request carries no retrieved passages")
        text = s.output.text or ""
        why = unreadable(text)
        if why:
            return verdict(self, s, error=f"could not judge: {why}")
        parts, skipped = await asyncio.to_thread(support, text, passages, self.reader, self.model,
                                                 said=user_texts(s.exchange.request or {}))
        if not parts:
            why = leading_reason([r for _, r in skipped]) if skipped else "the answer has no sentences with content words"
            return verdict(self, s, error=f"could not judge: {why}")
        raw = answer_score([p.support for p in parts], [p.weight for p in parts])
        score = self.scale(raw) if self.scale else raw
        weak = [p for p in parts if p.support < self.sentence_cut]
        weakest = min(parts, key=lambda p: p.support)
        label = "grounded" if score >= self.threshold else "ungrounded"
        explanation = (f"{len(parts) - len(weak)} of {len(parts)} sentences supported by the passages"
                       + (f"; weakest: {weakest.sentence[:160]!r}" if weak else "")
                       + (f"; {len(skipped)} sentences not judged ({skipped[0][1]})" if skipped else ""))
        return verdict(self, s, score=round(score, 4), label=label, explanation=explanation, evidence={
            "sentences": len(parts), "supported": len(parts) - len(weak),
            "unsupported": [p.as_evidence() for p in weak],
            "least_supported": weakest.as_evidence(),
            "skipped": [{"sentence": t[:200], "reason": r} for t, r in skipped],
            "passages": len(passages),
            **({"support_model_score": round(raw, 4)} if self.scale else {}),
        })
