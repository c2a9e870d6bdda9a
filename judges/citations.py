"""Citation context, offline tier: does each cited sentence say what its sources say?

For answers that cite passages (`[1]`, `[doc2]`, `^3`, a passage's URL), in the spirit of ALCE:

- citation recall: a cited sentence is supported when the union of the passages it cites supports
  it;
- citation precision: a citation is precise when its passage alone supports the sentence, or when
  the sentence is no longer supported without it;
- citations to sources that do not exist, and factual-looking sentences without any citation, are
  flagged (the answer cites elsewhere, so it was expected to cite these too).

Support is the probability from the learned support model (`support.py`, shared with the
groundedness judge; docs/judges-model-card.md). The passages are read once, so the union, each
passage alone and all-but-one cost a few matrix maxima, not another pass of the model.

Score = mean support of the cited sentences (0-1); label `supported` when every cited sentence
reaches `threshold` and every cited source exists, `unsupported` otherwise, `uncited` when the
answer cites nothing (no score).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shadoweval.core.context import contexts_of
from shadoweval.core.messages import user_texts
from shadoweval.core.types import Verdict

from .base import Subject, register, verdict
from .embed import get_embedder
from .scale import Scale
from .support import Claim as Read
from .support import (
    Evidence,
    Reader,
    SupportModel,
    clean,
    features,
    known_from,
    leading_reason,
    load_model,
    model_id,
    reader_for,
    unreadable,
    why_not_read,
)
from .text import Citations, content_words, find_citations, passage_ref, sentences, strip_citations

_FACTUAL = re.compile(r"\d|\b[A-Z][a-z]+\s+[A-Z][a-z]+")


@dataclass(frozen=True, slots=True)
class Claim:
    sentence: str
    text: str
    cites: Citations


def claims_of(answer: str, passages: list[dict[str, Any]]) -> list[Claim]:
    """The answer's sentences that say something, with the passages each one cites."""
    out = []
    for s in sentences(answer):
        text = strip_citations(s)
        if content_words(text):
            out.append(Claim(s, text, find_citations(s, passages)))
    return out


def support_of(read: Read, evidence: list[Evidence], model: SupportModel, *,
               known: frozenset[str] = frozenset()) -> float:
    """How well `evidence` together supports the claim, 0..1 (0 when there is nothing to compare)."""
    f = features(read, evidence, known=known) if evidence else None
    return model.probability(f) if f is not None else 0.0


def cited_scores(claims: list[Claim], reads: list[Read], evidence: list[Evidence], model: SupportModel) -> list[float]:
    """Support of each cited claim by the union of the passages it cites (what the score averages)."""
    return [support_of(r, [evidence[n - 1] for n in c.cites.passages], model)
            for c, r in zip(claims, reads, strict=True) if c.cites]


def _is_factual(c: Claim) -> bool:
    """Whether an uncited sentence states a fact that wants a source: one the support model would read
    as a claim (not a question, a bare "Yes." or a "the documents do not mention it": `why_not_read`)
    with a number, a two-word name or at least six content words."""
    return why_not_read(clean(c.text)) is None and (len(content_words(c.text)) >= 6 or bool(_FACTUAL.search(c.text)))


@register("citations")
class CitationContext:
    """Offline citation check: does each cited sentence say what its sources say (ALCE recall, precision)?

    Score = mean support of the cited sentences by the passages they cite; label supported when all
    reach `threshold` and every cited source exists; evidence = recall, precision and the problems."""

    name = "citations"
    version = "4"

    def __init__(self, *, threshold: float | None = None, model: str | None = None, embedder: str = "minilm",
                 calibration: Sequence[float] | None = None) -> None:
        self.model = load_model(model)
        # each cited sentence is decided on the support model's scale (`support_threshold`); a team's
        # rescaling (`judges.scale`) maps the score, the mean support, and the threshold it is read at
        self.scale = Scale.of(calibration)
        self.support_threshold = self.model.threshold("citations") if threshold is None else threshold
        self.threshold = round(self.scale(self.support_threshold), 4) if self.scale else self.support_threshold
        self.args: dict[str, Any] = {"threshold": self.threshold, "model": model_id(self.model),
                                     "embedder": embedder}
        if self.scale:
            self.args["calibration"] = self.scale.as_list()
        self.reader = reader_for(get_embedder(embedder), self.model.reader_layers)

    def _assess(self, answer: str, passages: list[dict[str, Any]], reader: Reader, said: str = ""
                ) -> dict[str, Any]:
        """`said`: what the user has said (every user turn, `core.messages.user_texts`)."""
        claims = claims_of(answer, passages)
        known = known_from(said)
        cited = [c for c in claims if c.cites]
        nonexistent: list[dict[str, Any]] = []
        results = []
        unreadable: list[dict[str, str]] = []
        if cited:
            evidence = reader.evidence([p.get("text") or "" for p in passages])
            reads = reader.claims([c.text for c in cited])
        for c, r in zip(cited, reads if cited else [], strict=True):
            missing = [u.strip("[^] ") for u in c.cites.unknown]  # "[7]" -> "7"
            if missing:
                nonexistent.append({"sentence": c.sentence, "citations": missing})
            if not r.readable:
                unreadable.append({"sentence": c.sentence[:200], "reason": r.why_not or ""})
                continue
            refs = [passage_ref(passages, n) for n in c.cites.passages]
            sources = [evidence[n - 1] for n in c.cites.passages]
            union = support_of(r, sources, self.model, known=known)
            precise = []
            for ref, k in zip(refs, range(len(sources)), strict=True):
                alone = union if len(sources) == 1 else support_of(r, [sources[k]], self.model, known=known)
                rest = sources[:k] + sources[k + 1:]
                without = support_of(r, rest, self.model, known=known) if rest else 0.0
                cut = self.support_threshold
                precise.append({"citation": ref, "precise": alone >= cut or (union >= cut and without < cut),
                                "support_alone": round(alone, 3)})
            results.append({"sentence": c.sentence, "citations": refs + missing,
                            "support": round(union, 3), "supported": union >= self.support_threshold,
                            "per_citation": precise})
        uncited = [c.sentence for c in claims if not c.cites and _is_factual(c)] if cited else []
        return {"cited": results, "nonexistent": nonexistent, "uncited": uncited, "sentences": len(claims),
                "unreadable": unreadable}

    async def judge(self, s: Subject) -> Verdict:
        passages = [p for p in contexts_of(s.exchange) if (p.get("text") or "").strip()]
        text = s.output.text or ""
        if not passages:
            return verdict(self, s, error="could not judge: the request carries no retrieved passages")
        why = unreadable(text)
        if why:
            return verdict(self, s, error=f"could not judge: {why}")
        report = await asyncio.to_thread(self._assess, text, passages, self.reader,
                                         user_texts(s.exchange.request or {}))
        cited = report["cited"]
        if not cited and report["unreadable"]:
            return verdict(self, s, error=f"could not judge: {leading_reason([u['reason'] for u in report['unreadable']])}")
        if not cited:
            return verdict(self, s, label="uncited", explanation="the answer cites no source",
                           evidence={"sentences": report["sentences"]})
        supported = sum(r["supported"] for r in cited)
        per_citation = [pc for r in cited for pc in r["per_citation"]]
        recall = supported / len(cited)
        precision = sum(pc["precise"] for pc in per_citation) / len(per_citation) if per_citation else 0.0
        raw = float(np.mean([r["support"] for r in cited]))
        score = self.scale(raw) if self.scale else raw
        problems = [f"{len(cited) - supported} of {len(cited)} cited sentences not supported by their sources"]
        if report["nonexistent"]:
            problems.append(f"{len(report['nonexistent'])} sentences cite sources that do not exist")
        if report["uncited"]:
            problems.append(f"{len(report['uncited'])} factual sentences without a citation")
        if report["unreadable"]:
            problems.append(f"{len(report['unreadable'])} cited sentences not judged ({report['unreadable'][0]['reason']})")
        ok = supported == len(cited) and not report["nonexistent"]
        return verdict(self, s, score=round(score, 4), label="supported" if ok else "unsupported",
                       explanation="; ".join(problems), evidence={
                           "citation_recall": round(recall, 3), "citation_precision": round(precision, 3),
                           "unsupported": [r for r in cited if not r["supported"]],
                           "nonexistent": report["nonexistent"], "uncited": report["uncited"],
                           "unreadable": report["unreadable"],
                           "cited_sentences": len(cited), "sentences": report["sentences"],
                           **({"support_model_score": round(raw, 4)} if self.scale else {})})
