"""Training and validating the support model from human-labeled records (for maintainers).

`scripts/train_judges` calls `train()`: it reads the labeled sources (by default the three in
`../shared/train`: SummEdits, Factcheck-GPT, WiCE), adds synthetic hard negatives made from their
supported claims (a number, a name or a negation changed), computes the signals of
`support.features` for every record, and fits a class- and source-balanced logistic regression.
Thresholds are chosen on the training sources only, from out-of-fold probabilities (each source
scored by a model fitted on the others), so nothing is tuned on the data it is reported on.

`scripts/validate_judges` uses the same pieces to score each judge, source by source.

Reading passages is the slow part (one pass of MiniLM over every passage), so the signals of each
record are cached on disk, keyed by the record's text and the signals' version.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import calibration
from .support import FEATURES, Reader, SupportModel, entities, features
from .text import content_words, numbers, sentences, strip_citations

# Bump whenever what `support.features` reads changes (the cache is keyed by it). Never reuse a
# number: 17 to 21 were tries of signals that were not adopted (docs/judges-model-card.md), and a
# maintainer's cache may hold their rows, of other signals; the next version is 22.
SIGNALS_VERSION = "16"
SEED = 20261204
TRAIN_SOURCES = ("summedits", "factcheckgpt_claims", "wice_claims")
# Chosen by the mean AUC of the training sources held out in turn (docs/judges-model-card.md).
C = 0.001
PRIOR = 1.0
SYNTHETIC_SHARE = 0.5
LABEL_KEYS = ("grounded", "citation_supported")


@dataclass(frozen=True, slots=True)
class Example:
    """One labeled claim (or answer) and the passages it should be supported by."""

    id: str
    source: str
    claim: str
    passages: tuple[str, ...]
    label: bool
    synthetic: str | None = None  # which edit made it, for synthetic negatives


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def source_name(path: str | Path) -> str:
    return Path(path).name.removesuffix(".gz").removesuffix(".jsonl")


def label_of(record: dict[str, Any]) -> bool | None:
    labels = record.get("labels") or {}
    for k in LABEL_KEYS:
        if isinstance(labels.get(k), bool):
            return labels[k]
    return None


def examples_of(path: str | Path, *, limit: int | None = None) -> list[Example]:
    """A labeled-response file as examples (records without a yes/no label or passages are skipped)."""
    source = source_name(path)
    out = []
    for r in read_jsonl(path):
        label = label_of(r)
        passages = tuple(c.get("text") or "" for c in r.get("contexts") or [] if (c.get("text") or "").strip())
        if label is None or not passages or not (r.get("response") or "").strip():
            continue
        out.append(Example(str(r["id"]), source, r["response"], passages, label))
        if limit and len(out) >= limit:
            break
    return out


# --- synthetic hard negatives ---------------------------------------------------------------------

_VERB_NEG = re.compile(r"\b(is|was|are|were|has|have|had|can|will|does|did|could|would|should)\b(?! not)")
_NOT = re.compile(r"\b(is|was|are|were|has|have|had|can|will|does|did|could|would|should) not\b")


def swap_number(claim: str, passages_text: str, rng: random.Random) -> str | None:
    nums = [m for m in re.finditer(r"\b\d+(?:\.\d+)?\b", claim)]
    if not nums:
        return None
    m = rng.choice(nums)
    value = m.group(0)
    known = set(numbers(passages_text))
    for _ in range(10):
        if "." in value:
            new = f"{float(value) * rng.choice([0.5, 1.5, 2, 3]):.{len(value.split('.')[1])}f}"
        elif len(value) == 4 and value[:2] in ("19", "20"):
            new = str(int(value) + rng.choice([-11, -7, -3, -2, 2, 3, 5, 9]))
        else:
            new = str(max(0, int(value) + rng.choice([-1, 1]) * rng.randint(1, max(2, int(value)))))
        if new != value and new not in known:
            return claim[:m.start()] + new + claim[m.end():]
    return None


def swap_name(claim: str, passages_text: str, rng: random.Random) -> str | None:
    mine = [e for e in dict.fromkeys(entities(claim)) if len(e) > 2]
    theirs = [e for e in dict.fromkeys(entities(passages_text)) if len(e) > 2 and e not in mine
              and e not in claim.lower()]
    if not mine or not theirs:
        return None
    old = rng.choice(mine)
    new = rng.choice(theirs)
    pattern = re.compile(r"\b" + re.escape(old) + r"\b", re.IGNORECASE)
    out = pattern.sub(new.capitalize(), claim, count=1)
    return out if out != claim else None


def flip_negation(claim: str, rng: random.Random) -> str | None:
    m = _NOT.search(claim)
    if m:
        return claim[:m.start()] + m.group(1) + claim[m.end():]
    ms = list(_VERB_NEG.finditer(claim))
    if not ms:
        return None
    m = rng.choice(ms)
    return claim[:m.end()] + " not" + claim[m.end():]


def synthetic_negatives(examples: Iterable[Example], *, per_example: int = 1, seed: int = SEED) -> list[Example]:
    """Hard negatives from supported claims: one number, name or negation changed, so the claim stays
    close to its passages in wording but the passages no longer support it."""
    rng = random.Random(seed)
    out = []
    for ex in examples:
        if not ex.label:
            continue
        text = " ".join(ex.passages)
        edits: list[tuple[str, Callable[[], str | None]]] = [
            ("number", partial(swap_number, ex.claim, text, rng)),
            ("name", partial(swap_name, ex.claim, text, rng)),
            ("negation", partial(flip_negation, ex.claim, rng)),
        ]
        rng.shuffle(edits)
        made = 0
        for kind, edit in edits:
            new = edit()
            if new and new != ex.claim:
                out.append(Example(f"{ex.id}~{kind}", ex.source, new, ex.passages, False, synthetic=kind))
                made += 1
                if made >= per_example:
                    break
    return out


# --- signals, cached -------------------------------------------------------------------------------

def _key(ex: Example, mode: str, layers: int = 0) -> str:
    h = hashlib.sha256()
    version = f"{SIGNALS_VERSION}/layer{layers}" if layers else SIGNALS_VERSION
    for part in (version, mode, ex.claim, *ex.passages):
        h.update(part.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()[:32]


class SignalCache:
    """Signals per (record text, mode) in one JSON-lines file, appended as they are computed."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.rows: dict[str, Any] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    k, v = json.loads(line)
                    self.rows[k] = v
        self._pending: list[tuple[str, Any]] = []

    def get(self, key: str) -> Any:
        return self.rows.get(key)

    def put(self, key: str, value: Any) -> None:
        self.rows[key] = value
        self._pending.append((key, value))
        if len(self._pending) >= 200:
            self.flush()

    def flush(self) -> None:
        if self.path and self._pending:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                for k, v in self._pending:
                    f.write(json.dumps([k, v]) + "\n")
        self._pending.clear()


def _vector(f: dict[str, float] | None) -> list[float] | None:
    return [round(float(f[k]), 5) for k in FEATURES] if f is not None else None


def signals(examples: list[Example], reader: Reader, cache: SignalCache, *, mode: str = "whole",
            progress: Callable[[str], None] = print, every: int = 250) -> list[Any]:
    """Signals for each example. mode "whole": the claim as one row against all its passages;
    "sentences": one row per sentence of the claim (how the groundedness judge reads an answer), each
    with its content-word weight."""
    out: list[Any] = []
    t0 = time.perf_counter()
    done = 0
    for i, ex in enumerate(examples):
        key = _key(ex, mode, reader.layers)
        value = cache.get(key)
        if value is None:
            sents = sentences(ex.claim) or [ex.claim]
            if mode == "whole":
                value = _vector(features(reader.claims([ex.claim])[0], reader.evidence(list(ex.passages))))
            elif len(sents) == 1 and cache.get(_key(ex, "whole", reader.layers)) is not None:
                # one sentence: the same row as the whole claim
                value = [[cache.get(_key(ex, "whole", reader.layers)), len(content_words(strip_citations(sents[0])))]]
            else:
                evidence = reader.evidence(list(ex.passages))
                value = [[_vector(features(c, evidence)), len(content_words(c.text))] for c in reader.claims(sents)]
            cache.put(key, value)
            done += 1
        out.append(value)
        if (i + 1) % every == 0 or i + 1 == len(examples):
            rate = done / max(time.perf_counter() - t0, 1e-9)
            progress(f"  signals ({mode}) {i + 1}/{len(examples)} ({done} computed, {rate:.1f}/s)")
    cache.flush()
    return out


# --- fitting ----------------------------------------------------------------------------------------

def balanced_weights(sources: list[str], labels: np.ndarray, *, synthetic: np.ndarray | None = None,
                     synthetic_share: float = 0.25) -> np.ndarray:
    """Every source weighs the same in total, and within a source both classes weigh the same; the
    synthetic negatives of all sources together weigh `synthetic_share` of one source."""
    w = np.zeros(len(labels))
    synthetic = synthetic if synthetic is not None else np.zeros(len(labels), dtype=bool)
    real = ~synthetic
    names = sorted({s for s, r in zip(sources, real, strict=True) if r})
    src = np.array(sources)
    for s in names:
        for y in (True, False):
            m = real & (src == s) & (labels == y)
            if m.any():
                w[m] = 0.5 / m.sum()
    if synthetic.any():
        w[synthetic] = synthetic_share / synthetic.sum()
    return w / w.mean()


# Which way each signal may push the probability: more alignment, similarity or coverage can only
# raise it, a mismatch can only lower it; the passages' size is free. Signs keep a model fitted on a few sources
# from leaning on their quirks (a signal that happens to anti-correlate with support in one source).
SIGNS = {"align_mean": 1, "align_p10": 1, "align_min": 1, "unaligned_share": -1, "align_local": 1, "sent_sim": 1,
         "word_cov": 1,
         "word_cov_local": 1, "bigram_cov": 1, "num_missing": -1, "ent_missing": -1, "neg_mismatch": -1,
         "neg_local": -1, "evidence_len": 0}
# The signals the model reads: all but the claim's length. Its weight would be free (longer claims
# are not less true), so a fit learned each source's labeling habits from it (long claims were more
# often unsupported in the training sources); without it, held out in turn: 0.549 / 0.790 / 0.751,
# mean 0.6967, against 0.548 / 0.790 / 0.736, 0.6912 with it (docs/judges-model-card.md).
MODEL_FEATURES = tuple(f for f in FEATURES if f != "claim_len")


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, c: float = C, prior: float = PRIOR, signs: bool = True,
        meta: dict[str, Any] | None = None) -> SupportModel:
    """Weighted logistic regression on standardized signals with each coefficient's sign bounded as
    `SIGNS` says (when `signs`), and an L2 penalty (1 / c) that shrinks the coefficients toward
    equal weights (`prior` x the sign), not toward zero: on the training sources held out in turn,
    leaning on every signal a little transfers better than leaning on the few that one source
    happens to favour."""
    from scipy.optimize import minimize

    x = x[:, [FEATURES.index(f) for f in MODEL_FEATURES]]
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    t = y.astype(float)
    n = w.sum()

    centre = np.array([prior * SIGNS[f] for f in MODEL_FEATURES], dtype=float)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, b = theta[:-1], theta[-1]
        m = z @ coef + b
        p = 1.0 / (1.0 + np.exp(-m))
        d = coef - centre
        value = float((w * (np.logaddexp(0, m) - t * m)).sum() / n + (d @ d) / (2 * c * n))
        g = w * (p - t) / n
        return value, np.concatenate([z.T @ g + d / (c * n), [g.sum()]])

    bounds = [((0, None) if SIGNS[f] > 0 else (None, 0) if SIGNS[f] < 0 else (None, None)) if signs else (None, None)
              for f in MODEL_FEATURES] + [(None, None)]
    res = minimize(loss, np.concatenate([centre, [0.0]]), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 5000})
    return SupportModel(MODEL_FEATURES, mean, scale, res.x[:-1].copy(), float(res.x[-1]), meta or {})


# --- metrics ----------------------------------------------------------------------------------------

def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """The mean recall of both classes, an absent class counting 0 (`balanced_accuracy_score` would
    instead average over the classes present, with a warning)."""
    from sklearn.metrics import recall_score

    return float(recall_score(y, pred, labels=[False, True], average="macro", zero_division=0))


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", zero_division=0))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins (`metrics.calibration`'s)."""
    c = calibration([float(x) for x in p], [bool(x) for x in y], bins=bins)
    if c is None:
        raise ValueError("ECE needs scores, all within 0..1")
    return c.ece


def best_threshold(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The threshold with the best (weighted) balanced accuracy, midway between distinct scores."""
    w = weights if weights is not None else np.ones(len(y))
    order = np.argsort(p)
    ps, ys, ws = p[order], y[order], w[order]
    pos, neg = (ws * ys).sum(), (ws * ~ys).sum()
    best, best_t = -1.0, 0.5
    below_pos = below_neg = 0.0
    for i in range(len(ps)):
        below_pos += ws[i] * ys[i]
        below_neg += ws[i] * (not ys[i])
        if i + 1 < len(ps) and ps[i + 1] == ps[i]:
            continue
        t = (ps[i] + ps[i + 1]) / 2 if i + 1 < len(ps) else ps[i] + 1e-6
        score = ((pos - below_pos) / max(pos, 1e-12) + below_neg / max(neg, 1e-12)) / 2
        if score > best:
            best, best_t = score, float(t)
    return best_t


# --- the whole pipeline -------------------------------------------------------------------------------

@dataclass
class SourceData:
    name: str
    examples: list[Example]
    synthetic: list[Example]
    x: np.ndarray  # whole-claim signals, one row per example
    xs: np.ndarray  # signals of the synthetic negatives
    sentences: list[list[tuple[list[float], int]]]  # per example: (signals, weight) of each readable sentence

    @property
    def y(self) -> np.ndarray:
        return np.array([e.label for e in self.examples], dtype=bool)


def load_source(path: str | Path, reader: Reader, cache: SignalCache, *, limit: int | None = None,
                synthetic: bool = True, seed: int = SEED, progress: Callable[[str], None] = print) -> SourceData:
    """A labeled file with its signals (whole claims, synthetic negatives, sentence by sentence); records
    whose signals cannot be computed (nothing readable) are dropped and counted."""
    examples = examples_of(path, limit=limit)
    syn = synthetic_negatives(examples, seed=seed) if synthetic else []
    progress(f"{source_name(path)}: {len(examples)} labeled records, {len(syn)} synthetic negatives")
    # each synthetic negative right after the record it was made from, so its passages are still cached
    made_from: dict[str, list[int]] = {}
    for k, e in enumerate(syn):
        made_from.setdefault(e.id.split("~")[0], []).append(k)
    order = [x for i, e in enumerate(examples) for x in [("real", i)] + [("syn", k) for k in made_from.get(e.id, [])]]
    rows = signals([examples[i] if kind == "real" else syn[i] for kind, i in order], reader, cache, progress=progress)
    whole: list[Any] = [None] * len(examples)
    syn_rows: list[Any] = [None] * len(syn)
    for (kind, i), r in zip(order, rows, strict=True):
        (whole if kind == "real" else syn_rows)[i] = r
    sents = signals(examples, reader, cache, mode="sentences", progress=progress)
    keep = [i for i, (w, s) in enumerate(zip(whole, sents, strict=True))
            if w is not None and any(r[0] is not None for r in s)]
    if len(keep) < len(examples):
        progress(f"  {len(examples) - len(keep)} records with nothing readable left out")
    return SourceData(
        source_name(path), [examples[i] for i in keep],
        [e for e, r in zip(syn, syn_rows, strict=True) if r is not None],
        np.array([whole[i] for i in keep], dtype=float).reshape(-1, len(FEATURES)),
        np.array([r for r in syn_rows if r is not None], dtype=float).reshape(-1, len(FEATURES)),
        [[(r[0], r[1]) for r in sents[i] if r[0] is not None] for i in keep])


def design(sources: list[SourceData], *, synthetic_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, names, syn = [], [], [], []
    for s in sources:
        xs += [s.x, s.xs]
        ys += [s.y, np.zeros(len(s.xs), dtype=bool)]
        names += [s.name] * (len(s.x) + len(s.xs))
        syn += [np.zeros(len(s.x), dtype=bool), np.ones(len(s.xs), dtype=bool)]
    x, y, is_syn = np.vstack(xs), np.concatenate(ys), np.concatenate(syn)
    if synthetic_share <= 0:
        keep = ~is_syn
        x, y, is_syn = x[keep], y[keep], is_syn[keep]
        names = [n for n, k in zip(names, keep, strict=True) if k]
    return x, y, balanced_weights(names, y, synthetic=is_syn, synthetic_share=synthetic_share)


def answer_scores(model: SupportModel, source: SourceData, aggregate: Callable[[list[float], list[int]], float]
                  ) -> np.ndarray:
    """The groundedness judge's answer score for each example (sentence by sentence, then combined)."""
    out = []
    for rows in source.sentences:
        p = model.probabilities(np.array([r[0] for r in rows], dtype=float))
        out.append(aggregate(list(p), [max(r[1], 1) for r in rows]))
    return np.array(out)


def citation_scores(model: SupportModel, source: SourceData) -> np.ndarray:
    """The citation judge's score when each sentence cites all the passages: the mean support."""
    return np.array([float(np.mean(model.probabilities(np.array([r[0] for r in rows], dtype=float))))
                     for rows in source.sentences])


def held_out_folds(sources: list[SourceData], *, c: float, prior: float, synthetic_share: float
                   ) -> Iterator[tuple[SourceData, list[SourceData], SupportModel]]:
    """Each source held out in turn: (held-out source, the others, a model fitted on the others)."""
    if len(sources) < 2:
        return
    for held in sources:
        rest = [s for s in sources if s is not held]
        x, y, w = design(rest, synthetic_share=synthetic_share)
        yield held, rest, fit(x, y, w, c=c, prior=prior)


def train(paths: list[str | Path], *, out: str | Path, cache_path: str | Path | None, limit: int | None = None,
          c: float = C, prior: float = PRIOR, synthetic_share: float = SYNTHETIC_SHARE, seed: int = SEED, threads: int = 0,
          layers: int = 0, progress: Callable[[str], None] = print) -> SupportModel:
    """Rebuild the support model from labeled files; thresholds from out-of-source predictions."""
    from .embed import get_embedder, limit_threads
    from .grounded import answer_score

    t0 = time.perf_counter()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    limit_threads(threads)
    reader = Reader(get_embedder("minilm"), cache_size=500, layers=layers)
    cache = SignalCache(cache_path)
    sources = [load_source(p, reader, cache, limit=limit, seed=seed, progress=progress) for p in paths]
    progress(f"signals ready in {time.perf_counter() - t0:.0f} s; fitting")
    folds: dict[str, dict[str, float]] = {}
    oof_g, oof_c, oof_y, oof_w = [], [], [], []
    for held, _, m in held_out_folds(sources, c=c, prior=prior, synthetic_share=synthetic_share):
        g = answer_scores(m, held, answer_score)
        ct = citation_scores(m, held)
        yh = held.y
        folds[held.name] = {"n": len(yh), "positive": int(yh.sum()), "claim_auc": round(roc_auc(yh, m.probabilities(held.x)), 4),
                            "grounded_auc": round(roc_auc(yh, g), 4), "citations_auc": round(roc_auc(yh, ct), 4)}
        progress(f"  held out {held.name}: " + ", ".join(f"{k} {v}" for k, v in folds[held.name].items()))
        oof_g.append(g)
        oof_c.append(ct)
        oof_y.append(yh)
        oof_w.append(np.full(len(yh), 1.0 / len(yh)))
    x, y, w = design(sources, synthetic_share=synthetic_share)
    final = fit(x, y, w, c=c, prior=prior)
    if oof_y:
        ys, ws = np.concatenate(oof_y), np.concatenate(oof_w)
        thresholds = {"grounded": round(best_threshold(ys, np.concatenate(oof_g), ws), 4),
                      "citations": round(best_threshold(ys, np.concatenate(oof_c), ws), 4)}
    else:
        thresholds = {"grounded": 0.5, "citations": 0.5}
    model = SupportModel(final.features, final.mean, final.scale, final.coef, final.intercept, {
        "trained_on": {s.name: {"records": len(s.examples), "positive": int(s.y.sum()), "synthetic": len(s.synthetic)}
                       for s in sources},
        "method": "logistic regression on MiniLM and text signals, class- and source-balanced",
        "c": c, "prior": prior, "synthetic_share": synthetic_share, "seed": seed, "limit": limit,
        "thresholds": thresholds, "held_out": folds, "signals_version": SIGNALS_VERSION,
        **({"reader_layers": layers} if layers else {}),
        "seconds": round(time.perf_counter() - t0, 1),
    })
    model.save(out)
    progress(f"wrote {out} ({Path(out).stat().st_size / 1024:.1f} KB) in {time.perf_counter() - t0:.0f} s; "
             f"thresholds {thresholds}")
    return model
