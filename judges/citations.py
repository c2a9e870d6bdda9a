"""Citation context, offline tier: does each cited sentence say what its sources say?

For answers that cite passages (`[1]`, `[doc2]`, `^3`, a passage's URL), in the spirit of ALCE:

- citation recall: a cited sentence is supported when the union of the passages it cites supports
  it;
- citation precision: a citation is precise when its passage alone supports the sentence, or when
  the sentence is no longer supported without it;
- citations to sources that do not exist, and factual-looking sentences without any citation, are
  flagged (the answer cites elsewhere, so it was expected to cite these too).

Support of a claim by passages, without an LLM, averages three signals (equal weights, nothing
fitted): the share of the claim's meaningful tokens that have a close counterpart among the
passages' tokens (a BERTScore-style precision on all-MiniLM-L6-v2 token vectors), the sentence
embedding similarity to the closest passage unit, and the share of the claim's content words found
in the best-matching passage unit; a share of unsupported numbers is subtracted.

Score = mean support of the cited sentences (0-1); label `supported` when every cited sentence
reaches `threshold`, `unsupported` otherwise, `uncited` when the answer cites nothing (no score).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from shadoweval.proxy.context import contexts_of
from shadoweval.proxy.types import Verdict

from .base import Subject, register, verdict
from .embed import Embedder, get_embedder
from .grounded import passage_units
from .text import Citations, content_words, find_citations, numbers, passage_ref, sentences, strip_citations

# From shadoweval calibrate --labels ../shared/data/attribution_claims.jsonl --judge citations
#   --label citation_supported (best macro-F1 on the dev file; see README).
THRESHOLD = 0.63
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


def support_score(claim: str, passages: list[dict[str, Any]], embedder: Embedder) -> float:
    """How well `passages` together support `claim`, 0..1 (blocking: runs the embedding model)."""
    texts = [p.get("text") or "" for p in passages]
    units, _ = passage_units(passages)
    if not units or not content_words(claim):
        return 0.0
    claim_tokens, *passage_tokens = embedder.token_vectors([claim, *texts])
    pool = np.concatenate([t for t in passage_tokens if len(t)] or [np.zeros((0, claim_tokens.shape[1]))])
    alignment = float((claim_tokens @ pool.T).max(axis=1).mean()) if len(claim_tokens) and len(pool) else 0.0
    vectors = embedder.encode([claim, *units])
    similarity = float((vectors[1:] @ vectors[0]).max())
    ws = content_words(claim)
    coverage = max(sum(w in vocabulary for w in ws) / len(ws) for vocabulary in map(set, map(content_words, units)))
    nums = numbers(claim)
    known = set(numbers(" ".join(texts)))
    missing = sum(n not in known for n in nums) / len(nums) if nums else 0.0
    return min(1.0, max(0.0, (alignment + similarity + coverage) / 3 - 0.1 * missing))


def _is_factual(c: Claim) -> bool:
    return not c.text.rstrip().endswith("?") and (len(content_words(c.text)) >= 6 or bool(_FACTUAL.search(c.text)))


@register("citations")
class CitationContext:
    """Offline citation check: does each cited sentence say what its sources say (ALCE recall, precision)?

    Score = mean support of the cited sentences by the passages they cite; label supported when all
    reach `threshold` and every cited source exists; evidence = recall, precision and the problems."""

    name = "citations"
    version = "1"

    def __init__(self, *, threshold: float = THRESHOLD, embedder: str = "minilm") -> None:
        self.args: dict[str, Any] = {"threshold": threshold, "embedder": embedder}
        self.threshold = threshold
        self.embedder = get_embedder(embedder)

    def _assess(self, answer: str, passages: list[dict[str, Any]]) -> dict[str, Any]:
        claims = claims_of(answer, passages)
        cited = [c for c in claims if c.cites]
        nonexistent: list[dict[str, Any]] = []
        results = []
        for c in cited:
            missing = [u.strip("[^] ") for u in c.cites.unknown]  # "[7]" -> "7"
            if missing:
                nonexistent.append({"sentence": c.sentence, "citations": missing})
            refs = [passage_ref(passages, n) for n in c.cites.passages]
            sources = [passages[n - 1] for n in c.cites.passages]
            union = support_score(c.text, sources, self.embedder) if sources else 0.0
            precise = []
            for ref, p in zip(refs, sources, strict=True):
                alone = union if len(sources) == 1 else support_score(c.text, [p], self.embedder)
                rest = [q for q in sources if q is not p]
                without = support_score(c.text, rest, self.embedder) if rest else 0.0
                precise.append({"citation": ref, "precise": alone >= self.threshold or (
                    union >= self.threshold and without < self.threshold), "support_alone": round(alone, 3)})
            results.append({"sentence": c.sentence, "citations": refs + missing,
                            "support": round(union, 3), "supported": union >= self.threshold,
                            "per_citation": precise})
        uncited = [c.sentence for c in claims if not c.cites and _is_factual(c)] if cited else []
        return {"cited": results, "nonexistent": nonexistent, "uncited": uncited, "sentences": len(claims)}

    async def judge(self, s: Subject) -> Verdict:
        passages = [p for p in contexts_of(s.exchange) if (p.get("text") or "").strip()]
        text = s.output.text or ""
        if not passages:
            return verdict(self, s, error="no context found: the request carries no retrieved passages")
        report = await asyncio.to_thread(self._assess, text, passages)
        cited = report["cited"]
        if not cited:
            return verdict(self, s, label="uncited", explanation="the answer cites no source",
                           evidence={"sentences": report["sentences"]})
        supported = sum(r["supported"] for r in cited)
        per_citation = [pc for r in cited for pc in r["per_citation"]]
        recall = supported / len(cited)
        precision = sum(pc["precise"] for pc in per_citation) / len(per_citation) if per_citation else 0.0
        score = float(np.mean([r["support"] for r in cited]))
        problems = [f"{len(cited) - supported} of {len(cited)} cited sentences not supported by their sources"]
        if report["nonexistent"]:
            problems.append(f"{len(report['nonexistent'])} sentences cite sources that do not exist")
        if report["uncited"]:
            problems.append(f"{len(report['uncited'])} factual sentences without a citation")
        ok = supported == len(cited) and not report["nonexistent"]
        return verdict(self, s, score=round(score, 4), label="supported" if ok else "unsupported",
                       explanation="; ".join(problems), evidence={
                           "citation_recall": round(recall, 3), "citation_precision": round(precision, 3),
                           "unsupported": [r for r in cited if not r["supported"]],
                           "nonexistent": report["nonexistent"], "uncited": report["uncited"],
                           "cited_sentences": len(cited), "sentences": report["sentences"]})
