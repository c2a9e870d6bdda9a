"""Claim support: the probability that some passages support a claim, from a learned model.

Both offline judges ask the same question, "do these passages support this sentence?":
groundedness asks it of every sentence of an answer against all the retrieved passages, citations
of every cited sentence against the passages it cites. This module answers it once for both.

How: a small learned model (`SupportModel`, weights in `support_model.json` beside this module,
rebuilt by `scripts/train_judges` from public human labels; see docs/judges-model-card.md) reads
signals that are each known to carry support, computed with all-MiniLM-L6-v2 and plain text rules:

- token alignment (BERTScore-style precision): how close each of the claim's meaningful tokens
  comes to some token of the passages, as a mean, a low percentile and a minimum (one swapped name
  or figure leaves one token without a counterpart);
- sentence similarity of the claim to its closest passage unit (a sentence or two adjacent ones);
- word coverage: the share of the claim's content words found in the passages, in the closest
  unit, and as adjacent pairs;
- mismatches that embeddings barely see: numbers and names absent from the passages, a negation
  on one side only;
- the passages' size (long passages make every token find a neighbour). The claim's length is
  computed too, but the model does not read it (`training.MODEL_FEATURES`).

Passages are read once (`Evidence`, cached by text), so the judges can ask about any set of them
(all passages, the cited ones, each one alone, all but one) for the price of a few matrix maxima.
Text the model cannot read (no words in a script it knows, nothing in the passages) gets no
probability and a reason, never a guess.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .embed import Embedder, Reading, SizedLRU, reading_bytes
from .text import (
    ABSENT_REASON,
    APOSTROPHES,
    QUESTION_REASON,
    STOPWORDS,
    asks_only,
    claim_words,
    content_words,
    numbers,
    says_what_is_absent,
    sentences,
    states_fact,
    strip_citations,
)

MODEL_PATH = Path(__file__).with_name("support_model.json")
# Passages longer than this are cut before they are read: a 100 KB page costs no more than ~40 kB.
MAX_PASSAGE_CHARS = 40_000
MAX_CLAIM_CHARS = 2_000
# memory for passages' readings per reader (both judges share one): ~500 typical passages (100
# exchanges' worth), or 8 of the longest pages
CACHE_MB = 128
# how far after a negation word the words it governs are looked for (within its clause)
NEGATION_REACH = 200

FEATURES = (
    "align_mean", "align_p10", "align_min", "unaligned_share", "align_local", "sent_sim", "word_cov",
    "word_cov_local", "bigram_cov", "num_missing", "ent_missing", "neg_mismatch", "neg_local", "claim_len",
    "evidence_len",
)
# Markup that is not part of what a sentence claims: list markers, markdown emphasis and headings.
_MARKUP = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+|\*\*|__|`|^\s*#+\s*|\s\d{1,2}\.$")
# "High Upfront Costs:" at the start of a list item is a label, not a name.
_LABEL = re.compile(r"^\s*[A-Z][\w'-]*(?:\s+[\w'-]+){0,6}:\s")
_NEGATION = re.compile(r"\b(?:not|no\s+longer|no|never|none|nobody|nothing|nowhere|neither|nor|without|cannot|n't)\b|n't\b",
                       re.I)
# negations said in other words ("out of direct sunlight" for "not in direct sunlight", "failed to get
# the balance right" for "did not get it right"): they govern words as a negation does, so a claim
# and a passage that both deny the same thing, one of them in these words, agree; but they deny no
# word of their own, so they never make a conflict (signals v15)
_LEXICAL_NEGATION = re.compile(r"\b(?:out\s+of|away\s+from|free\s+(?:of|from)|instead\s+of|rather\s+than"
                               r"|unable\s+to|(?:fail|refus)(?:e|es|s|ed|ing)?\s+to|lack(?:s|ed|ing)?|avoid(?:s|ed|ing)?)\b",
                               re.I)
# phrases with a negation word that deny nothing: "whether or not you buy", "not only X but Y", "not just X"
_NOT_NEGATING = re.compile(r"\bwhether\s+or\s+not\b|\bnot\s+(?:only|just)\b", re.I)
# how many words after a negation the word it denies may be: "is not in Paris" denies Paris, but in
# "cannot do this with an FHA loan" and "don't have to pay" the verb it denies is a stop word, and
# the first content word after it ("FHA", "pay") is not what is denied
HEAD_REACH = 2
# where a negation's reach ends: punctuation, a conjunction, or a word that opens a clause of its own
# ("this doesn't benefit you unless you buy a cheaper home": the negation does not reach "buy")
_CLAUSE_END = re.compile(r"[,;:.!?()]|\s(?:but|and|or|while|whereas|although|though|unless|because|since|if|until"
                         r"|so|which|who|when|where|than)\s")
_CAPITALIZED = re.compile(r"\b[A-Z][a-zA-Z]+\b")
_LATIN = re.compile(r"[A-Za-z]")


def entities(text: str) -> list[str]:
    """Capitalized words that do not start a sentence, lowercased: names, places, products."""
    text = _LABEL.sub("", text)
    out = []
    for m in _CAPITALIZED.finditer(text):
        before = text[:m.start()].rstrip()
        if before and before[-1] not in ".!?:\"'(\n" and m.group(0).lower() not in STOPWORDS:
            out.append(m.group(0).lower())
    return out


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass(slots=True)
class Evidence:
    """One passage as the support model reads it; built once per distinct text."""

    text: str
    tokens: np.ndarray  # meaningful token vectors, unit length (n x d)
    token_starts: np.ndarray  # each token's first character in `text`
    units: list[str]
    unit_spans: list[tuple[int, int]]
    unit_vectors: np.ndarray  # (m x d)
    unit_words: list[frozenset[str]]
    vocabulary: frozenset[str]
    bigrams: frozenset[tuple[str, str]]
    numbers: frozenset[str]
    words: frozenset[str]  # lowercased raw words, for names
    negated_units: list[frozenset[str]]  # per unit, the words a negation in it governs (see negated_words)
    negated_heads: list[frozenset[str]]  # per unit, the word each negation denies (see negations)
    n_words: int


@dataclass(slots=True)
class Claim:
    text: str
    tokens: np.ndarray
    vector: np.ndarray
    words: list[str]
    numbers: list[str]
    entities: list[str]
    negated: frozenset[str]  # the words a negation in the claim governs
    denied: frozenset[str]  # the word each of its negations denies (see negations)
    readable: bool = True
    why_not: str | None = None
    _cache: dict[Any, Any] = field(default_factory=dict)


def negated_words(text: str, scope: int = 3) -> frozenset[str]:
    """The content words a negation governs: the first `scope` after each negation word, within its
    clause ("you cannot find it, wait 48 hours" -> {find}; "can no longer be changed" -> {chang}). A
    negation elsewhere in a sentence then does not make an unrelated claim look contradicted."""
    return negations(text, scope)[0]


def negations(text: str, scope: int = 3) -> tuple[frozenset[str], frozenset[str]]:
    """In one pass: the words negations govern (`negated_words`), and the word each denies, its
    first content word when it comes within HEAD_REACH words of the negation (what
    `negation_conflict` reads on either side). "whether or not", "not only" and "not just" negate
    nothing; negations said in other words ("out of", "failed to", `_LEXICAL_NEGATION`) govern words
    but deny none."""
    out: set[str] = set()
    heads: set[str] = set()
    text = text.translate(APOSTROPHES)  # "isn’t" negates as "isn't" does
    text = _NOT_NEGATING.sub(lambda m: " " * len(m.group(0)), text)
    for m in _NEGATION.finditer(text):
        clause = _clause_after(text, m.end())
        out.update(content_words(clause)[:scope])
        heads.update(content_words(" ".join(clause.split()[:HEAD_REACH]))[:1])
    for m in _LEXICAL_NEGATION.finditer(text):  # they govern words but deny none (see above)
        out.update(content_words(_clause_after(text, m.end()))[:scope])
    return frozenset(out), frozenset(heads)


def _clause_after(text: str, start: int) -> str:
    """The rest of the clause after a negation ending at `start`, NEGATION_REACH characters at most:
    the whole rest of the text each time made a page of "no no no ..." quadratic (16 s for 40,000
    characters)."""
    window = text[start:start + NEGATION_REACH]
    clause = _CLAUSE_END.split(window, maxsplit=1)[0]
    if len(clause) == len(window) and start + NEGATION_REACH < len(text):
        clause = clause.rsplit(None, 1)[0] if clause.strip() else ""  # not the word the window cuts
    return clause


def negation_conflict(claim: Claim, unit_words: frozenset[str], unit_negated: frozenset[str],
                      unit_heads: frozenset[str]) -> bool:
    """The word a negation of the claim denies (`claim.denied`: its first content word, within
    HEAD_REACH words) stated plainly in the passage unit, or the word a negation of the unit denies
    (`unit_heads`) stated plainly in the claim. On either side only the denied word counts, not the
    words after it: "you're not getting a true FICO score" denies getting one, not FICO, so "FICO and
    VantageScore differ" does not contradict it; "They have not won a Super Bowl since then" denies
    winning, so a page naming a Super Bowl does not contradict it (until signals v14 the claim's side
    read the three words after its negation). Whether both sides deny the same thing, which rules a
    conflict out, is `features`' check, over every unit it checks."""
    said = frozenset(claim.words)
    return (any(w in unit_words and w not in unit_negated for w in claim.denied)
            or any(w in said and w not in claim.negated for w in unit_heads))


def unreadable(text: str) -> str | None:
    """Why an answer cannot be judged at all (no text, no Latin-script words), or None."""
    if not text.strip():
        return "the answer is empty"
    text = strip_citations(text)
    if not content_words(text):
        return ("the text is not in a script the offline judge reads (Latin)" if not _LATIN.search(text)
                else "the answer has no content words to judge")
    return None


def why_not_read(claim: str) -> str | None:
    """Why a cleaned claim sentence is not read (None: it is)."""
    if not claim.strip():
        return "no words to judge"
    if not _LATIN.search(claim):
        return "the text is not in a script the offline judge reads (Latin)"
    if not content_words(claim):
        return "no content words to judge"
    if not states_fact(claim):
        return "it states no fact of its own (only words such as 'Yes' or 'However')"
    if says_what_is_absent(claim):
        return ABSENT_REASON
    if asks_only(claim):
        return QUESTION_REASON
    return None


def leading_reason(reasons: Sequence[str]) -> str:
    """The reason a judge gives when none of an answer's sentences could be read: that one says what
    the documents lack (`ABSENT_REASON`) if any does, since the cascade sends such an answer to the
    LLM tier ("Yes. The documents do not mention it." is a refusal, not a bare "Yes."), else the
    first."""
    return ABSENT_REASON if ABSENT_REASON in reasons else reasons[0]


def clean(sentence: str) -> str:
    """What a sentence claims: without citation markers, list markers or markdown."""
    return " ".join(_MARKUP.sub(" ", strip_citations(sentence)[:MAX_CLAIM_CHARS]).split())


def units_of(text: str) -> list[tuple[int, int]]:
    """Character spans of a passage's sentences and of adjacent sentence pairs (a claim often joins
    two sentences)."""
    spans: list[tuple[int, int]] = []
    at = 0
    for sent in sentences(text):
        lo = text.find(sent, at)
        if lo < 0:
            continue
        spans.append((lo, lo + len(sent)))
        at = lo + len(sent)
    if not spans and text.strip():
        spans = [(0, len(text))]
    return spans + [(a[0], b[1]) for a, b in zip(spans, spans[1:], strict=False)]


class Reader:
    """Turns passages and claims into what the model reads, with an LRU cache of passages (the same
    passages come back for every output of an exchange, and the same documents across exchanges)."""

    def __init__(self, embedder: Embedder, *, cache_size: int = 2_000, cache_mb: int = CACHE_MB,
                 layers: int = 0) -> None:
        self.embedder = embedder
        self.layers = layers  # read the output of this layer of the embedder (0: its last)
        # bounded in bytes too: a long page's reading is 50x a short passage's (see SizedLRU)
        self._cache: SizedLRU[Evidence] = SizedLRU(cache_size, cache_mb << 20, evidence_bytes)
        self._lock = threading.Lock()
        # readings of claim sentences: both offline judges read the same sentences of an answer
        self._claims: SizedLRU[Reading] = SizedLRU(cache_size, max(1, cache_mb // 4) << 20, reading_bytes)

    def evidence(self, texts: Sequence[str]) -> list[Evidence]:
        return self._cache.get_many([t[:MAX_PASSAGE_CHARS] for t in texts], self._build, self._lock)

    def _build(self, texts: list[str]) -> list[Evidence]:
        spans = [units_of(t) for t in texts]
        out = []
        for t, sp, (toks, uv, starts) in zip(texts, spans, self.embedder.read(texts, spans, self.layers), strict=True):
            us = [t[lo:hi] for lo, hi in sp]
            cw = content_words(t)
            negs = [negations(u) for u in us]
            out.append(Evidence(
                text=t, tokens=toks, token_starts=starts, units=us, unit_spans=list(sp), unit_vectors=uv,
                unit_words=[frozenset(content_words(u)) for u in us], vocabulary=frozenset(cw),
                bigrams=frozenset(zip(cw, cw[1:], strict=False)), numbers=frozenset(numbers(t)),
                words=frozenset(_words(t)), negated_units=[n for n, _ in negs], negated_heads=[h for _, h in negs],
                n_words=len(t.split())))
        return out

    def claims(self, texts: Sequence[str]) -> list[Claim]:
        cleaned = [clean(t) for t in texts]
        whys = [why_not_read(c) for c in cleaned]
        readings = iter(self._read_claims([c for c, why in zip(cleaned, whys, strict=True) if why is None]))
        out = []
        for c, why in zip(cleaned, whys, strict=True):
            if why is not None:
                out.append(Claim(c, np.zeros((0, 1)), np.zeros(1), [], [], [], frozenset(), frozenset(), readable=False,
                                 why_not=why))
                continue
            toks, vec, _ = next(readings)
            governed, denied = negations(c)
            out.append(Claim(c, toks, vec[0], claim_words(c), numbers(c), entities(c), governed, denied))
        return out


    def _read_claims(self, texts: list[str]) -> list[Reading]:
        return self._claims.get_many(
            texts, lambda todo: self.embedder.read(todo, [[(0, len(t))] for t in todo], self.layers), self._lock)


def evidence_bytes(e: Evidence) -> int:
    """About what a passage's reading holds: its arrays, plus its text and word sets (~8 bytes a character)."""
    return e.tokens.nbytes + e.unit_vectors.nbytes + e.token_starts.nbytes + 8 * len(e.text)


def known_from(said: str) -> frozenset[str]:
    """Words and numbers the user has said (the question, and since grounded/citations version 3
    every earlier user turn too): an answer may repeat them without inventing them."""
    return frozenset(numbers(said)) | frozenset(_words(said))


def _token_max(claim: Claim, ev: Evidence) -> np.ndarray:
    """For each claim token, its best cosine to a token of `ev` (cached per claim and passage)."""
    key = ("tok", id(ev))
    hit = claim._cache.get(key)
    if hit is None:
        if len(claim.tokens) and len(ev.tokens):
            hit = (claim.tokens @ ev.tokens.T).max(axis=1)
        else:
            hit = np.zeros(len(claim.tokens), dtype=np.float32)
        claim._cache[key] = hit
    return hit


def features(claim: Claim, evidence: Sequence[Evidence], *, known: frozenset[str] = frozenset()
             ) -> dict[str, float] | None:
    """The signals the model reads for `claim` against the union of `evidence`; None when there is
    nothing to compare. `known`: lowercased words and numbers the user has said (`known_from`), which an
    answer may repeat without inventing them (they count as found for numbers and names)."""
    evidence = [e for e in evidence if e.units]
    if not claim.readable or not evidence:
        return None
    tm = np.max(np.stack([_token_max(claim, e) for e in evidence]), axis=0) if len(claim.tokens) else np.zeros(1)
    sims = [(claim.vector @ e.unit_vectors.T) if len(e.unit_vectors) else np.zeros(0) for e in evidence]
    best_sim, best_e, best_u = -1.0, 0, 0
    for i, s in enumerate(sims):
        if len(s):
            j = int(np.argmax(s))
            if s[j] > best_sim:
                best_sim, best_e, best_u = float(s[j]), i, j
    ws = claim.words
    vocab = frozenset().union(*(e.vocabulary for e in evidence))
    word_cov = sum(w in vocab for w in ws) / len(ws)
    # local coverage: the best single unit by words among the ten closest by meaning
    local, wordiest = 0.0, None
    for i, s in enumerate(sims):
        for j in np.argsort(-s)[:10]:
            uw = evidence[i].unit_words[j]
            cov = sum(w in uw for w in ws) / len(ws)
            if cov > local:
                local, wordiest = cov, (i, int(j))
    pairs = list(zip(ws, ws[1:], strict=False))
    known_pairs = frozenset().union(*(e.bigrams for e in evidence))
    bigram_cov = sum(p in known_pairs for p in pairs) / len(pairs) if pairs else word_cov
    nums = list(dict.fromkeys(claim.numbers))
    known_nums = frozenset().union(*(e.numbers for e in evidence)) | known
    num_missing = sum(n not in known_nums for n in nums) / len(nums) if nums else 0.0
    ents = list(dict.fromkeys(claim.entities))
    known_words = frozenset().union(*(e.words for e in evidence)) | known
    ent_missing = sum(x not in known_words for x in ents) / len(ents) if ents else 0.0
    # a negation is checked against the unit closest in meaning and the one holding most of the
    # claim's words ("The tower was not completed in 1889" against "It was completed in 1889": the
    # closest in meaning can be a sentence that names the tower but says nothing of 1889)
    checked = [(best_e, best_u)] + ([wordiest] if wordiest and wordiest != (best_e, best_u) else [])
    # no conflict when either unit denies some of what the claim denies (the words each negation
    # governs): "the warranty covers defects only and does not cover drops" agrees with "It does not
    # cover drops", though the unit holding most of its words says "covers" plainly; and "mop pads
    # are not covered by the standard warranty" agrees with "... mop pads ... are not covered. The
    # warranty does not cover drops", though that unit also names the warranty plainly
    denied = frozenset().union(*(evidence[i].negated_units[j] for i, j in checked))
    neg = best_sim > -1 and not (claim.negated & denied) and any(
        negation_conflict(claim, evidence[i].unit_words[j], evidence[i].negated_units[j], evidence[i].negated_heads[j])
        for i, j in checked)
    align_local = 0.0
    if best_sim > -1 and len(claim.tokens):
        e = evidence[best_e]
        lo, hi = e.unit_spans[best_u]
        inside = (e.token_starts >= lo) & (e.token_starts < hi)
        if inside.any():
            align_local = float((claim.tokens @ e.tokens[inside].T).max(axis=1).mean())
    return {
        "align_mean": float(tm.mean()),
        "align_p10": float(np.percentile(tm, 10)),
        "align_min": float(tm.min()),
        "unaligned_share": float((tm < 0.6).mean()),
        "align_local": align_local,
        "sent_sim": max(best_sim, 0.0),
        "word_cov": word_cov,
        "word_cov_local": local,
        "bigram_cov": bigram_cov,
        "num_missing": num_missing,
        "ent_missing": ent_missing,
        "neg_mismatch": float(neg),
        # the conflict again, as strong as the claim's wording is close to one passage unit: a
        # sentence copied from the passage and negated is a contradiction, not a near miss
        "neg_local": float(neg) * local,
        "claim_len": math.log1p(len(ws)),
        "evidence_len": math.log1p(sum(e.n_words for e in evidence)),
    }


def closest(claim: Claim, evidence: Sequence[Evidence]) -> tuple[int, str] | None:
    """The index of the passage holding the unit closest in meaning to the claim, and that unit."""
    best = None
    for i, e in enumerate(evidence):
        if claim.readable and len(e.unit_vectors):
            s = claim.vector @ e.unit_vectors.T
            j = int(np.argmax(s))
            if best is None or s[j] > best[0]:
                best = (float(s[j]), i, e.units[j])
    return (best[1], best[2]) if best else None


@dataclass(frozen=True)
class SupportModel:
    """A logistic model over the standardized signals, with the thresholds chosen at training time."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    meta: dict[str, Any]

    def probability(self, feats: dict[str, float]) -> float:
        x = (np.array([feats[f] for f in self.features]) - self.mean) / self.scale
        z = float(x @ self.coef + self.intercept)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """For rows of all the signals (`FEATURES`, in order) or of the model's own."""
        if rows.shape[-1] != len(self.features):
            rows = rows[..., [FEATURES.index(f) for f in self.features]]
        z = ((rows - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    @property
    def reader_layers(self) -> int:
        """Which layer of MiniLM the signals were computed from (0: the last, as models before this
        field were trained)."""
        return int(self.meta.get("reader_layers", 0))

    def threshold(self, judge: str) -> float:
        return float(self.meta.get("thresholds", {}).get(judge, 0.5))

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept, "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SupportModel:
        unknown = set(d["features"]) - set(FEATURES)
        if unknown:
            raise ValueError(f"the support model reads signals this version does not compute: {sorted(unknown)}")
        return cls(tuple(d["features"]), np.array(d["mean"]), np.array(d["scale"]), np.array(d["coef"]),
                   float(d["intercept"]), d.get("meta", {}))

    def save(self, path: str | Path) -> None:
        """Write the model; its id is a hash of everything but the id itself."""
        body = self.to_json()
        body["meta"] = {k: v for k, v in body["meta"].items() if k != "id"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        body["meta"] = {"id": f"support-{digest}", **body["meta"]}
        Path(path).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


@lru_cache(maxsize=4)
def load_model(path: str | None = None) -> SupportModel:
    """The shipped model (or the one at `path`)."""
    p = Path(path) if path else MODEL_PATH
    if not p.is_file():
        raise FileNotFoundError(f"no support model at {p}: rebuild it with scripts/train_judges")
    return SupportModel.from_json(json.loads(p.read_text(encoding="utf-8")))


def model_id(model: SupportModel) -> str:
    """A short content hash that names the model in every verdict it produced."""
    return str(model.meta.get("id") or "unversioned")


_READERS: dict[tuple[int, int], Reader] = {}
_READERS_LOCK = threading.Lock()


def reader_for(embedder: Embedder, layers: int = 0) -> Reader:
    """One reader (and one passage cache) per embedder and layer, shared by both judges: the citation
    judge then reads the passages the groundedness judge has just read for free."""
    with _READERS_LOCK:
        r = _READERS.get((id(embedder), layers))
        if r is None:
            r = _READERS[(id(embedder), layers)] = Reader(embedder, layers=layers)
        return r
