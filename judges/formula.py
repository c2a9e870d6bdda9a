"""The offline judges' earlier hand-weighted formulas and plain word overlap, kept as baselines.

Nothing in the product scores with these any more: `scripts/validate_judges` prints them beside the
learned support model, so every figure of the model card says what it improved on.

- `word_overlap`: the share of the claim's content words found anywhere in the passages;
- `grounded_formula`: 0.5 x MiniLM similarity to the closest passage unit + 0.5 x word share,
  minus 0.15 per number absent from the passages, averaged over sentences by content words
  (the `grounded` judge up to version 1);
- `citation_formula`: the mean of MiniLM token-alignment precision, closest-unit similarity and
  best-unit word coverage, minus 0.1 x the share of missing numbers (the `citations` judge up to
  version 1).
"""

from __future__ import annotations

import numpy as np

from .embed import Embedder
from .text import numbers, plain_words, sentences, strip_citations


def passage_units(texts: list[str]) -> list[str]:
    units: list[str] = []
    for t in texts:
        ss = sentences(t)
        units += ss + [a + " " + b for a, b in zip(ss, ss[1:], strict=False)]
    return units


def word_overlap(claim: str, texts: list[str]) -> float | None:
    ws = plain_words(strip_citations(claim))
    if not ws:
        return None
    vocabulary = set(plain_words(" ".join(texts)))
    return sum(w in vocabulary for w in ws) / len(ws)


def grounded_formula(answer: str, texts: list[str], embedder: Embedder) -> float | None:
    claims = [strip_citations(s) for s in sentences(answer)]
    claims = [c for c in claims if plain_words(c)]
    units = passage_units(texts)
    if not claims or not units:
        return None
    all_text = " ".join(texts)
    vocabulary = set(plain_words(all_text))
    known = set(numbers(all_text))
    vectors = embedder.encode(claims + units)
    sims = vectors[: len(claims)] @ vectors[len(claims):].T
    total = weight = 0.0
    for i, c in enumerate(claims):
        ws = plain_words(c)
        share = sum(w in vocabulary for w in ws) / len(ws)
        missing = sum(n not in known for n in dict.fromkeys(numbers(c)))
        s = min(1.0, max(0.0, 0.5 * float(sims[i].max()) + 0.5 * share - 0.15 * missing))
        total += s * len(ws)
        weight += len(ws)
    return total / weight


def citation_formula(claim: str, texts: list[str], embedder: Embedder) -> float | None:
    claim = strip_citations(claim)
    units = passage_units(texts)
    if not units or not plain_words(claim):
        return None
    claim_tokens, *passage_tokens = embedder.token_vectors([claim, *texts])
    pool = np.concatenate([t for t in passage_tokens if len(t)] or [np.zeros((0, claim_tokens.shape[1]))])
    alignment = float((claim_tokens @ pool.T).max(axis=1).mean()) if len(claim_tokens) and len(pool) else 0.0
    vectors = embedder.encode([claim, *units])
    similarity = float((vectors[1:] @ vectors[0]).max())
    ws = plain_words(claim)
    coverage = max(sum(w in v for w in ws) / len(ws) for v in map(set, map(plain_words, units)))
    nums = numbers(claim)
    known = set(numbers(" ".join(texts)))
    missing = sum(n not in known for n in nums) / len(nums) if nums else 0.0
    return min(1.0, max(0.0, (alignment + similarity + coverage) / 3 - 0.1 * missing))
