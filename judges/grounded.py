"""Groundedness, offline tier: is each sentence of the answer supported by the retrieved passages?

No LLM. Each sentence of the answer gets a support score from three signals:

- meaning: the cosine similarity (all-MiniLM-L6-v2) of the sentence to its closest passage unit,
  where units are the passages' sentences and pairs of adjacent sentences;
- wording: the share of the sentence's content words (stemmed, stop words dropped) that occur
  anywhere in the passages;
- numbers: every number in the sentence that appears nowhere in the passages costs a penalty
  (invented figures are the most harmful kind of unsupported claim, and embeddings barely see them).

support = 0.5 * meaning + 0.5 * wording - 0.15 * unsupported numbers, clipped to 0..1. The answer's
score is the mean support of its sentences weighted by their content words, so a long
unsupported sentence weighs more than a short aside. Evidence lists the sentences whose support is
below `sentence_cut`, with their closest passage, the missing words and the missing numbers.

The weights were chosen on `mtrag_responses.jsonl` for robustness, not fitted (0.5/0.5 and any
number penalty from 0.1 to 0.2 give ROC AUC 0.961-0.962; see README "Judges" for the figures per
collection), and `threshold` comes from `shadoweval calibrate` on the same file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from shadoweval.proxy.context import contexts_of
from shadoweval.proxy.types import Verdict

from .base import Subject, register, verdict
from .embed import Embedder, get_embedder
from .text import content_words, numbers, sentences, strip_citations

# Decision threshold on the answer score, from
#   shadoweval calibrate --labels ../shared/data/mtrag_responses.jsonl --judge grounded --label grounded
# (best balanced accuracy on the dev file; see README).
THRESHOLD = 0.53


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    sentence: str
    support: float
    similarity: float
    word_share: float
    missing_numbers: list[str]
    missing_words: list[str]
    passage_id: str | None
    weight: int

    def as_evidence(self) -> dict[str, Any]:
        return {"sentence": self.sentence, "support": round(self.support, 3),
                "similarity": round(self.similarity, 3), "word_share": round(self.word_share, 3),
                "missing_numbers": self.missing_numbers, "missing_words": self.missing_words[:12],
                "closest_passage": self.passage_id}


def passage_units(passages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Each passage's sentences and adjacent sentence pairs, with the id of the passage they came from."""
    units: list[str] = []
    owners: list[str] = []
    for p in passages:
        ss = sentences(p.get("text") or "")
        for i, s in enumerate(ss):
            units.append(s)
            owners.append(str(p.get("id")))
            if i + 1 < len(ss):
                units.append(s + " " + ss[i + 1])
                owners.append(str(p.get("id")))
    return units, owners


def support(answer: str, passages: list[dict[str, Any]], embedder: Embedder, *,
            number_penalty: float = 0.15) -> list[SentenceSupport]:
    """The support of each sentence of `answer` in `passages` (blocking: runs the embedding model)."""
    claims = [(s, strip_citations(s)) for s in sentences(answer)]
    claims = [(s, c) for s, c in claims if content_words(c)]
    units, owners = passage_units(passages)
    if not claims or not units:
        return []
    all_text = " ".join(p.get("text") or "" for p in passages)
    vocabulary = set(content_words(all_text))
    known_numbers = set(numbers(all_text))
    vectors = embedder.encode([c for _, c in claims] + units)
    sims = vectors[: len(claims)] @ vectors[len(claims):].T
    out = []
    for i, (raw, claim) in enumerate(claims):
        best = int(np.argmax(sims[i]))
        ws = content_words(claim)
        missing_words = [w for w in dict.fromkeys(ws) if w not in vocabulary]
        word_share = 1 - sum(w not in vocabulary for w in ws) / len(ws)
        missing_numbers = [n for n in dict.fromkeys(numbers(claim)) if n not in known_numbers]
        similarity = float(sims[i, best])
        score = 0.5 * similarity + 0.5 * word_share - number_penalty * len(missing_numbers)
        out.append(SentenceSupport(raw, min(1.0, max(0.0, score)), similarity, word_share, missing_numbers,
                                   missing_words, owners[best], len(ws)))
    return out


def answer_score(parts: list[SentenceSupport]) -> float:
    total = sum(p.weight for p in parts)
    return sum(p.support * p.weight for p in parts) / total


@register("grounded")
class Groundedness:
    """Offline groundedness: the share of the answer the passages support (MiniLM, words, numbers).

    Score = weighted mean support of the answer's sentences in the passages; label grounded or
    ungrounded at `threshold`; evidence = the sentences below `sentence_cut`."""

    name = "grounded"
    version = "1"

    def __init__(self, *, threshold: float = THRESHOLD, sentence_cut: float = 0.6, number_penalty: float = 0.15,
                 embedder: str = "minilm") -> None:
        self.args: dict[str, Any] = {"threshold": threshold, "sentence_cut": sentence_cut,
                                     "number_penalty": number_penalty, "embedder": embedder}
        self.threshold = threshold
        self.sentence_cut = sentence_cut
        self.number_penalty = number_penalty
        self.embedder = get_embedder(embedder)

    async def judge(self, s: Subject) -> Verdict:
        passages = [p for p in contexts_of(s.exchange) if (p.get("text") or "").strip()]
        if not passages:
            return verdict(self, s, error="no context found: the request carries no retrieved passages")
        text = s.output.text or ""
        parts = await asyncio.to_thread(support, text, passages, self.embedder, number_penalty=self.number_penalty)
        if not parts:
            return verdict(self, s, error="nothing to judge: the answer has no sentences")
        score = answer_score(parts)
        weak = [p for p in parts if p.support < self.sentence_cut]
        label = "grounded" if score >= self.threshold else "ungrounded"
        explanation = (f"{len(parts) - len(weak)} of {len(parts)} sentences supported by the passages"
                       + (f"; weakest: {min(parts, key=lambda p: p.support).sentence[:160]!r}" if weak else ""))
        return verdict(self, s, score=round(score, 4), label=label, explanation=explanation, evidence={
            "sentences": len(parts), "supported": len(parts) - len(weak),
            "unsupported": [p.as_evidence() for p in weak],
            "passages": len(passages),
        })
