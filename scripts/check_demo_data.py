#!/usr/bin/env python3
"""Check the built-in demo data (cli/demo/northwind.json).

Validates the schema the demo relies on and prints a summary of the scripted answers:

* schema: top-level keys, unique document and question ids, every ``doc_ids`` entry exists,
  12-16 documents of 60-160 words, 36-40 questions with 2-4 retrieved documents each, and
  three non-empty answers per question ("production", "careful", "drifting");
* citations: every ``[n]`` in the "production" and "careful" answers must lie in
  ``1..len(doc_ids)`` (the app numbers the retrieved documents [1]..[n] in the system prompt);
  out-of-range citations in "drifting" answers are expected and only counted;
* a crude grounding heuristic, reported but never fatal: every number in a cited stretch of an
  answer should appear in one of the documents it cites (or in the question itself).

Stdlib only. Usage: ``python scripts/check_demo_data.py [path/to/demo.json] [-v]``.
Exits 1 on schema errors, 0 otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "cli" / "demo" / "northwind.json"

PERSONAS = ("production", "careful", "drifting")
STRICT_PERSONAS = ("production", "careful")  # out-of-range citations are errors for these
TOP_KEYS = ("company", "system_prompt", "documents", "questions")
DOC_KEYS = ("id", "title", "text")
QUESTION_KEYS = ("id", "route", "tenant", "question", "doc_ids", "answers")

N_DOCS = (12, 16)
DOC_WORDS = (60, 160)
N_QUESTIONS = (36, 40)
DOCS_PER_QUESTION = (2, 4)

CITATION = re.compile(r"\[(\d+)\]")
CITATION_GROUP = re.compile(r"(?:\s*\[\d+\])+")
# Anything bracketed that looks like a citation attempt but is not a plain [n]: [1,2], [1-2], [ 1 ].
MALFORMED_CITATION = re.compile(r"\[\s*\d+\s*[,\-–;]\s*\d+\s*\]|\[\s+\d+\s*\]|\[\d+\s+\]")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers_in(text: str) -> set[str]:
    """Numbers in ``text``, thousands separators removed ("1,899" -> "1899")."""
    out = set()
    for match in NUMBER.finditer(text):
        token = match.group(0)
        # "1,899" is one number; "2.4" keeps its decimal point.
        out.add(token.replace(",", ""))
    return out


def cited_segments(answer: str) -> tuple[list[tuple[str, list[int]]], str]:
    """Split an answer into (text, [citation numbers]) stretches plus the uncited tail."""
    segments: list[tuple[str, list[int]]] = []
    pos = 0
    for match in CITATION_GROUP.finditer(answer):
        text = answer[pos:match.start()]
        nums = [int(n) for n in CITATION.findall(match.group(0))]
        segments.append((text, nums))
        pos = match.end()
    return segments, answer[pos:]


def has_words(text: str) -> bool:
    return bool(re.search(r"[A-Za-z]{2,}", text))


def main(argv: list[str]) -> int:
    verbose = "-v" in argv or "--verbose" in argv
    args = [a for a in argv if a not in ("-v", "--verbose")]
    path = Path(args[0]) if args else DEFAULT_PATH

    errors: list[str] = []
    warnings: list[str] = []

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"ERROR: cannot load {path}: {exc}")
        return 1

    # ---- top level -------------------------------------------------------------------------
    if not isinstance(data, dict):
        print("ERROR: top level must be a JSON object")
        return 1
    for key in TOP_KEYS:
        if key not in data:
            errors.append(f"missing top-level key {key!r}")
    extra = set(data) - set(TOP_KEYS)
    if extra:
        warnings.append(f"unexpected top-level keys: {sorted(extra)}")
    if errors:
        return report_errors(errors)

    if not isinstance(data["company"], str) or not data["company"].strip():
        errors.append("'company' must be a non-empty string")
    system_prompt = data["system_prompt"]
    if not isinstance(system_prompt, str) or "{documents}" not in system_prompt:
        errors.append("'system_prompt' must be a string containing the '{documents}' placeholder")
    if not isinstance(data["documents"], list) or not isinstance(data["questions"], list):
        errors.append("'documents' and 'questions' must be lists")
        return report_errors(errors)

    # ---- documents -------------------------------------------------------------------------
    docs: dict[str, dict] = {}
    for i, doc in enumerate(data["documents"]):
        where = f"documents[{i}]"
        if not isinstance(doc, dict):
            errors.append(f"{where}: must be an object")
            continue
        for key in DOC_KEYS:
            if not isinstance(doc.get(key), str) or not doc.get(key, "").strip():
                errors.append(f"{where}: {key!r} must be a non-empty string")
        if any(not isinstance(doc.get(k), str) for k in DOC_KEYS):
            continue
        where = f"document {doc['id']}"
        if doc["id"] in docs:
            errors.append(f"{where}: duplicate id")
        docs[doc["id"]] = doc
        words = len(doc["text"].split())
        if not DOC_WORDS[0] <= words <= DOC_WORDS[1]:
            errors.append(f"{where}: {words} words, expected {DOC_WORDS[0]}-{DOC_WORDS[1]}")
    if not N_DOCS[0] <= len(data["documents"]) <= N_DOCS[1]:
        errors.append(f"{len(data['documents'])} documents, expected {N_DOCS[0]}-{N_DOCS[1]}")

    # ---- questions -------------------------------------------------------------------------
    questions = data["questions"]
    if not N_QUESTIONS[0] <= len(questions) <= N_QUESTIONS[1]:
        errors.append(f"{len(questions)} questions, expected {N_QUESTIONS[0]}-{N_QUESTIONS[1]}")

    seen_qids: set[str] = set()
    valid: list[dict] = []
    for i, q in enumerate(questions):
        where = f"questions[{i}]"
        if not isinstance(q, dict):
            errors.append(f"{where}: must be an object")
            continue
        missing = [k for k in QUESTION_KEYS if k not in q]
        if missing:
            errors.append(f"{where}: missing keys {missing}")
            continue
        ok = True
        for key in ("id", "route", "tenant", "question"):
            if not isinstance(q[key], str) or not q[key].strip():
                errors.append(f"{where}: {key!r} must be a non-empty string")
                ok = False
        if not ok:
            continue
        where = f"question {q['id']}"
        if q["id"] in seen_qids:
            errors.append(f"{where}: duplicate id")
        seen_qids.add(q["id"])

        doc_ids = q["doc_ids"]
        if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
            errors.append(f"{where}: 'doc_ids' must be a list of strings")
            continue
        if not DOCS_PER_QUESTION[0] <= len(doc_ids) <= DOCS_PER_QUESTION[1]:
            errors.append(f"{where}: {len(doc_ids)} doc_ids, expected "
                          f"{DOCS_PER_QUESTION[0]}-{DOCS_PER_QUESTION[1]}")
        if len(set(doc_ids)) != len(doc_ids):
            errors.append(f"{where}: duplicate entries in doc_ids")
        unknown = [d for d in doc_ids if d not in docs]
        if unknown:
            errors.append(f"{where}: unknown doc_ids {unknown}")
            ok = False

        answers = q["answers"]
        if not isinstance(answers, dict):
            errors.append(f"{where}: 'answers' must be an object")
            continue
        for persona in PERSONAS:
            if not isinstance(answers.get(persona), str) or not answers[persona].strip():
                errors.append(f"{where}: answer {persona!r} missing or empty")
                ok = False
        extra = set(answers) - set(PERSONAS)
        if extra:
            warnings.append(f"{where}: unexpected answer keys {sorted(extra)}")
        if ok:
            valid.append(q)

    # ---- citations -------------------------------------------------------------------------
    stats = {p: Counter() for p in PERSONAS}
    flagged: dict[str, list[str]] = {p: [] for p in PERSONAS}
    for q in valid:
        n_docs = len(q["doc_ids"])
        question_numbers = numbers_in(q["question"])
        for persona in PERSONAS:
            answer = q["answers"][persona]
            s = stats[persona]
            cites = [int(n) for n in CITATION.findall(answer)]
            out_of_range = [n for n in cites if not 1 <= n <= n_docs]
            s["citations"] += len(cites)
            s["out_of_range"] += len(out_of_range)
            if out_of_range:
                s["answers_out_of_range"] += 1
            if not cites:
                s["answers_without_citation"] += 1
            if MALFORMED_CITATION.search(answer):
                msg = f"question {q['id']}: {persona} has a malformed citation"
                (errors if persona in STRICT_PERSONAS else warnings).append(msg)
            if out_of_range and persona in STRICT_PERSONAS:
                errors.append(f"question {q['id']}: {persona} cites {out_of_range} "
                              f"but only {n_docs} documents were retrieved")
            if "#" in answer.split("\n", 1)[0][:2] or "**" in answer:
                warnings.append(f"question {q['id']}: {persona} looks like markdown")

            segments, tail = cited_segments(answer)
            if has_words(tail):
                s["answers_with_uncited_tail"] += 1
            for text, nums in segments:
                cited_text = " ".join(
                    docs[q["doc_ids"][n - 1]]["text"] for n in nums if 1 <= n <= n_docs
                )
                missing = numbers_in(text) - numbers_in(cited_text) - question_numbers
                if missing:
                    s["ungrounded_numbers"] += len(missing)
                    flagged[persona].append(
                        f"{q['id']}: {sorted(missing)} not in cited "
                        f"{nums} -> {text.strip().lstrip('.!? ')[:90]!r}"
                    )

    n_valid = len(valid)
    differs_prod = sum(q["answers"]["drifting"].strip() != q["answers"]["production"].strip()
                       for q in valid)
    differs_careful = sum(q["answers"]["drifting"].strip() != q["answers"]["careful"].strip()
                          for q in valid)
    drifting_suspect = {
        q["id"] for q in valid
        if any(not 1 <= int(n) <= len(q["doc_ids"]) for n in CITATION.findall(q["answers"]["drifting"]))
    } | {line.split(":", 1)[0] for line in flagged["drifting"]}

    # ---- summary ---------------------------------------------------------------------------
    print(f"Demo data: {path}")
    print(f"Company: {data['company']}")
    print(f"Documents: {len(docs)} "
          f"(words min {min(len(d['text'].split()) for d in docs.values())}, "
          f"max {max(len(d['text'].split()) for d in docs.values())})" if docs else "Documents: 0")
    print(f"Questions: {len(questions)} ({n_valid} valid)")
    print()
    routes = Counter(q["route"] for q in valid)
    tenants = Counter(q["tenant"] for q in valid)
    print("Per route:  " + ", ".join(f"{k}={v}" for k, v in sorted(routes.items())))
    print("Per tenant: " + ", ".join(f"{k}={v}" for k, v in sorted(tenants.items())))
    sizes = Counter(len(q["doc_ids"]) for q in valid)
    print("Retrieved docs per question: " + ", ".join(f"{k} docs={v}" for k, v in sorted(sizes.items())))
    print()
    header = f"{'persona':<11} {'cites':>5} {'out-of-range':>12} {'answers w/ OOR':>14} " \
             f"{'no-cite answers':>15} {'uncited tail':>12} {'ungrounded nums':>15}"
    print(header)
    print("-" * len(header))
    for persona in PERSONAS:
        s = stats[persona]
        print(f"{persona:<11} {s['citations']:>5} {s['out_of_range']:>12} "
              f"{s['answers_out_of_range']:>14} {s['answers_without_citation']:>15} "
              f"{s['answers_with_uncited_tail']:>12} {s['ungrounded_numbers']:>15}")
    print()
    print(f"Drifting answers that differ from production: {differs_prod}/{n_valid}; "
          f"from careful: {differs_careful}/{n_valid}")
    print(f"Drifting answers caught by the cheap checks (out-of-range citation or ungrounded "
          f"number): {len(drifting_suspect)}/{n_valid}")
    print("(the heuristics are a lower bound: wrong citations of in-range documents and invented "
          "non-numeric facts need a judge)")

    if verbose:
        for persona in PERSONAS:
            if flagged[persona]:
                print(f"\nUngrounded numbers, {persona}:")
                for line in flagged[persona]:
                    print("  " + line)

    for w in warnings:
        print(f"WARNING: {w}")
    if errors:
        return report_errors(errors)
    print("\nOK: schema valid, production/careful citations in range.")
    return 0


def report_errors(errors: list[str]) -> int:
    for e in errors:
        print(f"ERROR: {e}")
    print(f"\nFAILED: {len(errors)} schema error(s)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
