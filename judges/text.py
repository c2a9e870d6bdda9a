"""Text pieces every judge shares: sentences, citation markers and the passages they cite, words, numbers.

One home so the offline judges (`grounded`, `citations`) and the judge-model ones (`grounded-llm`,
`citations-llm`) read an answer the same way. Plain regular expressions, no models. The sentence
splitter keeps a citation marker with the sentence it follows ("... in 1990 [1]. Next" -> "... in
1990 [1]."), and does not split on common abbreviations, initials or decimals; the published figures
of the offline judges were measured with it, so a change to it is a change to those figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# --- sentences -----------------------------------------------------------------------------------

# "[1]", "[1, 2]", "[1][2]", "[doc2]", "[Document 3]", "[source 4]", footnote "^1": the markers taken out
# of a claim before it is compared with passages (whichever passages there are).
CITATION = re.compile(r"\[(?:(?:doc(?:ument)?|source|passage|ref)\s*)?(\d+(?:\s*[,;-]\s*\d+)*)\]|\^(\d+)", re.IGNORECASE)
URL = re.compile(r"https?://[^\s)\]>\"']+")
_ABBREV = {"e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "inc", "ltd", "co", "jr", "sr", "st", "no",
           "fig", "approx", "u.s", "u.k", "a.m", "p.m", "cf", "al"}
_BOUNDARY = re.compile(r"(?<=[.!?])(?:\s*(?:\[[^\]]{1,20}\]|\^\d+))*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")  # a word with its clitics: "o'brien's", a name and a possessive


def sentences(text: str) -> list[str]:
    """Split an answer into sentences (list items and paragraphs count as sentences)."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        piece = text[start:m.start()]
        if m.group(0).strip() == "" and piece.rstrip().endswith("."):
            # the boundary is whitespace after a period: do not split after an abbreviation or an initial
            last = (piece.rstrip()[:-1].rsplit(None, 1) or [""])[-1].lower()  # [] when the piece is just "."
            if last.rstrip(".") in _ABBREV or (len(last) == 1 and last.isalpha()):
                continue
        # markers between the period and the boundary belong to the sentence before
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if len(_WORD.findall(s.lower())) > 0]


def strip_citations(text: str) -> str:
    """The text without citation markers and URLs, as compared with passages."""
    return re.sub(r"\s+([.,;:!?])", r"\1", CITATION.sub("", URL.sub("", text))).strip()


# --- citations -----------------------------------------------------------------------------------

_BRACKET = re.compile(r"\[(\^?[^\[\]\n]{1,60})\](?!\()")  # [1], [1, 2], [doc2], [^1]; not [text](url) links
_CARET = re.compile(r"(?<![\w\[\^])\^(\d{1,3})\b")
_RANGE = re.compile(r"(\d{1,4})\s*[-\u2013]\s*(\d{1,4})")
_LABELLED = re.compile(r"[A-Za-z]{1,12}[ _-]?(\d{1,4})")


@dataclass(frozen=True, slots=True)
class Citations:
    """What one sentence cites: passage numbers (1-based) and references to no known passage."""

    passages: tuple[int, ...] = ()
    unknown: tuple[str, ...] = ()  # as written: "[7]", "[kb-nope]", "^9"
    markers: tuple[str, ...] = ()  # as written, to take them out of the sentence

    def __bool__(self) -> bool:
        return bool(self.passages or self.unknown)

    def strip(self, sentence: str) -> str:
        """The sentence without these markers (a prompt lists what it cites by passage number instead)."""
        for marker in self.markers:
            sentence = re.sub(r"\s*" + re.escape(marker), "", sentence)
        return " ".join(sentence.split())


def find_citations(sentence: str, passages: list[dict[str, Any]]) -> Citations:
    """Citation markers in a sentence, resolved against the passages: a passage id ([kb-12]), a number
    ([1], [1, 2], [1-3], [doc2], [Source 2], footnotes ^1 and [^1]), or a URL equal to a passage's
    `url` or `id` or written at the start of its text (other URLs are links, not citations). A marker
    shaped like a citation that names no passage is `unknown`; brackets that are not citations
    ([sic], [link](url)) are left alone."""
    ids = {str(p.get("id")).strip().lower(): i for i, p in enumerate(passages, 1) if p.get("id") is not None}
    urls: dict[str, int] = {}
    for i, p in enumerate(passages, 1):
        for u in [*(str(p[k]) for k in ("url", "id") if p.get(k)), *URL.findall((p.get("text") or "")[:300])]:
            urls.setdefault(_norm_url(u), i)
    nums: list[int] = []
    unknown: list[str] = []
    markers: list[str] = []
    for m in sorted([*_BRACKET.finditer(sentence), *_CARET.finditer(sentence), *URL.finditer(sentence)],
                    key=lambda m: m.start()):  # in the order they are written
        if m.re is URL:
            n = urls.get(_norm_url(m.group()))
            if n:
                markers.append(m.group().rstrip(".,;:"))
                nums.append(n)
            continue
        items = [x.strip() for x in re.split(r"[,;]", m.group(1).lstrip("^"))]
        resolved = [_resolve(x, ids, len(passages)) for x in items]
        if not items or any(r is None for r in resolved):
            continue  # not a citation: [sic], [optional], [link text]
        markers.append(m.group())
        for item, r in zip(items, resolved, strict=True):
            if r:
                nums.extend(r)
            else:
                unknown.append(m.group() if len(items) == 1 else f"[{item}]")
    return Citations(tuple(dict.fromkeys(nums)), tuple(dict.fromkeys(unknown)), tuple(markers))


def passage_ref(passages: list[dict[str, Any]], n: int) -> str:
    """How evidence names passage number `n`: its id, or its number when it has none."""
    return str(passages[n - 1].get("id") or n)


def _resolve(item: str, ids: dict[str, int], n: int) -> list[int] | None:
    """Passage numbers an item names; [] when it looks like a citation to no known passage; None when
    it does not look like a citation at all. Numbers are passage ids when the passages have numeric
    ids (the app numbered them: [3] is passage "3", wherever it sits), positions otherwise."""
    if item.lower() in ids:
        return [ids[item.lower()]]
    by_id = any(k.isdigit() for k in ids)

    def number(i: int) -> list[int]:
        if by_id:
            return [ids[str(i)]] if str(i) in ids else []
        return [i] if 1 <= i <= n else []

    if item.isdigit():
        return number(int(item))
    r = _RANGE.fullmatch(item)
    if r:
        lo, hi = int(r.group(1)), int(r.group(2))
        span = [number(i) for i in range(lo, hi + 1)] if lo <= hi <= lo + 50 else []
        return [x[0] for x in span] if span and all(span) else []
    lab = _LABELLED.fullmatch(item)  # [doc2], [Source 2]
    if lab:
        return number(int(lab.group(1)))
    # shaped like the passages' ids ("kb-..." when they are "kb-refunds", "kb-warranty"): a missing one
    prefixes = {k[:i + 1] for k in ids for i in (min((k.find(c) for c in "-_:" if c in k), default=-1),) if i > 0}
    return [] if any(item.lower().startswith(pre) for pre in prefixes) else None


def _norm_url(url: str) -> str:
    return url.strip().rstrip(".,;:/").lower().removeprefix("https://").removeprefix("http://")


# --- words and numbers ---------------------------------------------------------------------------

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# The baseline's stop words stay as they were measured (`plain_words`); the judges also drop
# negation words and conjunctions that open a clause, which state no fact of their own.
BASELINE_STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those there here i you he she we they them his her their our your my me not no do does did so than "
    "then too very can could would should will shall may might must have has had which who whom what when where "
    "why how all any both each few more most other some such only own same just also into over under about after "
    "before between through during up down out off again further once".split()
)
# Negation words other than "not" and "no" (already stop words): the negation signal reads them
# (`support.negations`); as words a claim must find they made "Neither X nor Y" need a passage
# saying "neither" and "nor", and "cannot" one saying "cannot".
NEGATION_WORDS = frozenset("never none nothing nobody nowhere without cannot neither nor".split())
STOPWORDS = (BASELINE_STOPWORDS | NEGATION_WORDS
             | frozenset("unless whether because although though since until while whereas".split()))


# Words that organize an answer rather than state a fact ("Yes, ...", "However, ...", "Please ...").
# The support model leaves them out of what a claim must find in its passages; word overlap, the
# baseline it is measured against, keeps them (it uses BASELINE_STOPWORDS alone).
DISCOURSE = frozenset(
    "yes yeah please thanks thank sure okay ok certainly absolutely unfortunately fortunately however "
    "moreover furthermore additionally therefore thus hence instead overall indeed actually basically "
    "essentially simply probably maybe perhaps possibly".split()
)
UNCLAIMED = STOPWORDS | DISCOURSE  # words a claim need not find in its passages


def stem(word: str) -> str:
    """A crude suffix stripper: enough to match "prices"/"price", "announced"/"announce"."""
    for suffix in ("ing", "edly", "ed", "es", "s", "ly"):
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


# Typographic apostrophes read as "'" ("isn’t" is "isn't"); one character for one, so offsets hold.
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})
# What follows the apostrophe of a contraction or a possessive ("don't", "it's", "we'll", "Ireland's").
CLITICS = frozenset("t s ll re ve d m".split())
# a clitic with no word before it ("’t" alone, '"Tesla"'s'): not a word "t" or "s"
_STRAY_CLITIC = re.compile(r"(?<![a-z0-9])'(?:t|s|ll|re|ve|d|m)\b")


def words(text: str) -> list[str]:
    """The words of a text, lowercased, a contraction or possessive reduced to the word it is built
    on ("company's" -> "company", "you're" -> "you"); a negative contraction ("don't", "isn't",
    "can't": an auxiliary and a negation) is dropped, like the stop words it is made of."""
    out = []
    for w in WORD.findall(_STRAY_CLITIC.sub(" ", text.lower().translate(APOSTROPHES))):
        head, mark, tail = w.rpartition("'")
        if mark and tail in CLITICS:
            if tail == "t":
                continue
            w = head
        out.append(w)
    return out


def plain_words(text: str) -> list[str]:
    """Stemmed non-stop words as the word-overlap baseline reads them (`formula.py`), unchanged since
    it was first measured: contractions and possessives are words of their own ("don't", "company'")."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in BASELINE_STOPWORDS]


def content_words(text: str) -> list[str]:
    """Stemmed words that carry meaning (stop words dropped)."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def claim_words(text: str) -> list[str]:
    """Content words without discourse words (DISCOURSE); the content words when that leaves none."""
    ws = [stem(w) for w in words(text) if w not in UNCLAIMED]
    return ws or content_words(text)


def states_fact(text: str) -> bool:
    """Whether a sentence has a word beyond stop and discourse words: "Yes." or "Unfortunately
    not." answer the question but state nothing the passages could support; the next sentence does."""
    return any(w not in UNCLAIMED for w in words(text))


# A question mark ends the sentence, perhaps before a closing bracket (not a closing quote: 'He
# asked "why?"' reports a question, and may be supported).
_QUESTION_END = re.compile(r"\?[)\]]*\s*$")


def asks_only(text: str) -> bool:
    """Whether the text is one sentence that asks a question ("Would you like me to help you file a
    claim?", "Which model do you have?"): it states nothing the passages could support, and read as
    a claim it scored low and was shown as the answer's least supported sentence. A text of several
    sentences is not one, even if its last asks something (signals v16)."""
    return bool(_QUESTION_END.search(text)) and len(sentences(text)) <= 1


# A sentence about what the retrieved documents do not hold ("The documents do not mention a student
# discount", "I don't have pricing for it in the documents available to me"): a statement about the
# documents, true when they lack it, which no passage can support; read as a claim, it scored near 0
# and marked an honest "not in the documents" answer ungrounded. First person or the documents as
# subject, a negation, and the documents named; "I don't have to pay" is not one.
_DOCS = r"(?:documents|sources|passages|search\s+results|context|knowledge\s+base)"
_THE_DOCS = r"\b(?:the|these|those|my|your)\s+(?:(?:available|provided|retrieved|given|attached)\s+)?" + _DOCS + r"\b"
_ABSENT = re.compile(
    # "I don't have pricing for it in the documents", "we can't find any information on that"
    r"\b(?:i|we)\s+(?:do|did|can|could)\s*(?:not\s+|n't\s+)(?:have|see|find|know)\b(?!\s+to\b)[^.;]*?"
    r"\b(?:" + _DOCS + r"|information)\b"
    # "the documents (I have) do not mention it"
    r"|" + _THE_DOCS + r"[^.;]*?\b(?:do|does|did)\s*(?:not\s+|n't\s+)(?:mention|say|include|contain|specify|"
    r"provide|list|state|cover|address|discuss|describe|give|indicate)\b"
    # "there is no information about it in the documents"
    r"|\b(?:there\s+is|i\s+found|i\s+see)\s+no\s+(?:information|mention|details?)\b[^.;]*?\b" + _DOCS + r"\b",
    re.I)


# Why the offline judges do not read such a sentence; the cascade sends an answer made only of them
# to the LLM tier, which can tell whether the documents really lack what it says they lack.
ABSENT_REASON = "it says what the documents do not hold, which no passage can support"
QUESTION_REASON = "it asks a question, which states nothing a passage could support"


# how much of a sentence `says_what_is_absent` reads: its lazy scans made it quadratic in the
# length (7 s on a 96 kB "sentence"); a refusal is a short sentence, so its start is enough
ABSENT_READ_CHARS = 2_000


def says_what_is_absent(text: str) -> bool:
    """Whether a sentence says what the documents do not hold (see `_ABSENT`), read from its first
    ABSENT_READ_CHARS characters."""
    return bool(_ABSENT.search(text[:ABSENT_READ_CHARS].translate(APOSTROPHES)))


def numbers(text: str) -> list[str]:
    """Numbers as written, without thousands separators or a trailing period ("1,200." -> "1200")."""
    out = []
    for m in NUMBER.finditer(text):
        n = m.group(0).rstrip(".,")
        out.append(n.replace(",", "") if re.fullmatch(r"\d{1,3}(?:,\d{3})+", n) else n)
    return out
