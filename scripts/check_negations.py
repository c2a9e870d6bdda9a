"""How often the support model's negation conflict (`neg_mismatch`) fires where it should and where it should not.

On each training source (../shared/train, seeded sample): synthetic negation flips of supported
claims (a "not" added or removed: the conflict should fire), supported claims holding a negation
and supported claims holding none (it should not). This is the check the negation rules of signals
v6, v10, v12, v13, v14 and v15 were chosen on (docs/judges-model-card.md); it reads MiniLM, so it takes a minute or two.

    .venv/bin/python scripts/check_negations.py [--flips 60] [--negated 80] [--plain 150]
    .venv/bin/python scripts/check_negations.py --demo   # the demo's answer sentences it fires on
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from shadoweval.judges import training  # noqa: E402
from shadoweval.judges.embed import get_embedder  # noqa: E402
from shadoweval.judges.support import Reader, features, load_model, negated_words, reader_for  # noqa: E402
from shadoweval.judges.text import sentences  # noqa: E402

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "train"
DEMO = Path(__file__).resolve().parents[1] / "cli" / "demo" / "northwind.json"


def fires(reader: Reader, items: list[tuple[str, tuple[str, ...]]]) -> tuple[int, int]:
    """How many of the (claim, passages) pairs get a negation conflict, of those the model reads."""
    hit = read = 0
    for claim, passages in items:
        c = reader.claims([claim])[0]
        f = features(c, reader.evidence(list(passages))) if c.readable else None
        if f is not None:
            read += 1
            hit += f["neg_mismatch"] > 0
    return hit, read


def demo(reader: Reader) -> None:
    """Each demo answer sentence (cli/demo/northwind.json, our own data) read against its question's
    documents: the ones with a conflict, with the shipped model's probability. The demo's answers are
    faithful to their documents unless a candidate is designed otherwise, so most hits are false."""
    data = json.loads(DEMO.read_text(encoding="utf-8"))
    docs = {d["id"]: d["text"] for d in data["documents"]}
    model = load_model()
    read = hit = 0
    for q in data["questions"]:
        evidence = reader.evidence([docs[i] for i in q["doc_ids"]])
        for name, answer in q["answers"].items():
            for c in reader.claims(sentences(answer)):  # read as the judges read them
                if c.readable:
                    f = features(c, evidence)
                    read += 1
                    if f["neg_mismatch"]:
                        hit += 1
                        print(f"{q['id']} {name:10} {model.probability(f):.3f}  {c.text}")
    print(f"negation conflicts in {hit} of {read} demo answer sentences")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=TRAIN)
    ap.add_argument("--flips", type=int, default=60)
    ap.add_argument("--negated", type=int, default=80)
    ap.add_argument("--plain", type=int, default=150)
    ap.add_argument("--demo", action="store_true", help="list the demo's answer sentences it fires on instead")
    args = ap.parse_args()
    reader = reader_for(get_embedder("minilm"), 0)
    if args.demo:
        demo(reader)
        return
    rng = random.Random(7)
    totals = [0] * 6
    print(f"{'source':22} {'flips caught':>14} {'false, negated':>15} {'false, plain':>13}")

    def row(name: str, c: list[int]) -> str:
        return f"{name:22} {c[0]:>7} of {c[1]:<4} {c[2]:>8} of {c[3]:<4} {c[4]:>6} of {c[5]:<4}"

    for source in training.TRAIN_SOURCES:
        supported = [e for e in training.examples_of(args.train / f"{source}.jsonl.gz") if e.label and len(e.claim) < 600]
        rng.shuffle(supported)
        flips, negated, plain = [], [], []
        for e in supported:
            if len(flips) < args.flips and (f := training.flip_negation(e.claim, random.Random(1))):
                flips.append((f, e.passages))
            if negated_words(e.claim):
                if len(negated) < args.negated:
                    negated.append((e.claim, e.passages))
            elif len(plain) < args.plain:
                plain.append((e.claim, e.passages))
        counts = [*fires(reader, flips), *fires(reader, negated), *fires(reader, plain)]
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
        print(row(source, counts))
    print(row("all", totals))


if __name__ == "__main__":
    main()
