"""Text pieces the offline judges share: sentences, citation markers, content words, numbers.

Plain regular expressions, no models. The sentence splitter keeps a citation marker with the
sentence it follows ("... in 1990 [1]. Next" -> "... in 1990 [1]."), and does not split on common
abbreviations or decimals.
"""

from __future__ import annotations

import re

# "[1]", "[1, 2]", "[1][2]", "[doc2]", "[Document 3]", "[source 4]", footnote "^1"
CITATION = re.compile(r"\[(?:(?:doc(?:ument)?|source|passage|ref)\s*)?(\d+(?:\s*[,;-]\s*\d+)*)\]|\^(\d+)", re.IGNORECASE)
URL = re.compile(r"https?://[^\s)\]>\"']+")
_ABBREV = {"e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "inc", "ltd", "co", "jr", "sr", "st", "no",
           "fig", "approx", "u.s", "u.k", "a.m", "p.m", "cf", "al"}
_BOUNDARY = re.compile(r"(?<=[.!?])(?:\s*(?:\[[^\]]{1,20}\]|\^\d+))*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those there here i you he she we they them his her their our your my me not no do does did so than "
    "then too very can could would should will shall may might must have has had which who whom what when where "
    "why how all any both each few more most other some such only own same just also into over under about after "
    "before between through during up down out off again further once".split()
)


def sentences(text: str) -> list[str]:
    """Split an answer into sentences (list items and paragraphs count as sentences)."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        piece = text[start:m.start()]
        if m.group(0).strip() == "" and piece.rstrip().endswith("."):
            # the boundary is whitespace after a period: do not split after an abbreviation or an initial
            last = piece.rstrip()[:-1].rsplit(None, 1)[-1].lower() if piece.strip() else ""
            if last.rstrip(".") in _ABBREV or (len(last) == 1 and last.isalpha()):
                continue
        # markers between the period and the boundary belong to the sentence before
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if len(_WORD.findall(s.lower())) > 0]


def citations(sentence: str) -> list[str]:
    """The passage ids a sentence cites, in order, without repeats ("[1][2]" -> ["1", "2"])."""
    ids: list[str] = []
    for m in CITATION.finditer(sentence):
        if m.group(2):
            parts = [m.group(2)]
        else:
            parts = []
            for chunk in re.split(r"\s*[,;]\s*", m.group(1)):
                if "-" in chunk:
                    lo, _, hi = chunk.partition("-")
                    if lo.strip().isdigit() and hi.strip().isdigit() and 0 <= int(hi) - int(lo) < 20:
                        parts.extend(str(i) for i in range(int(lo), int(hi) + 1))
                        continue
                parts.append(chunk.strip())
        for p in parts:
            if p and p not in ids:
                ids.append(p)
    return ids


def strip_citations(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", CITATION.sub("", URL.sub("", text))).strip()


def stem(word: str) -> str:
    """A crude suffix stripper: enough to match "prices"/"price", "announced"/"announce"."""
    for suffix in ("ing", "edly", "ed", "es", "s", "ly"):
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Stemmed words that carry meaning (stop words dropped)."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def numbers(text: str) -> list[str]:
    """Numbers as written, without thousands separators or a trailing period ("1,200." -> "1200")."""
    out = []
    for m in NUMBER.finditer(text):
        n = m.group(0).rstrip(".,")
        out.append(n.replace(",", "") if re.fullmatch(r"\d{1,3}(?:,\d{3})+", n) else n)
    return out
