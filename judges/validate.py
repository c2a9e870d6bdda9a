"""How well the offline judges agree with people on sources they were not fitted on (for maintainers).

`scripts/validate_judges` calls `validate()` and writes the tables of docs/judges-validation.md:

- every training source held out in turn: the support model is refitted on the other sources, its
  thresholds chosen on those other sources, and the held-out source is scored with it;
- every file of `../shared/data` with a yes/no support label, judged by the shipped judges through
  the same code path as `shadoweval calibrate` (nothing was ever fitted on these files);
- beside each figure, two baselines with thresholds chosen on the training sources the same way:
  word overlap (the share of the answer's content words found in the passages) and the formula the
  judges used before the learned model (`formula.py`).

Figures: ROC AUC, balanced accuracy and macro-F1 at the threshold, and the expected calibration error
of the judge's score read as a probability (the cascade and the report read it that way).

And the decision the report rests on without an LLM tier or grades: the offline preference
(`preference.offline_preference`, through the `offline-preference` judge) against people's
preferences on the pair files of `../shared/data`, beside the same rule on word overlap and
beside people against each other.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import formula
from .training import (
    PRIOR,
    SEED,
    SYNTHETIC_SHARE,
    C,
    SourceData,
    answer_scores,
    balanced_accuracy,
    best_threshold,
    citation_scores,
    ece,
    held_out_folds,
    load_source,
    macro_f1,
    read_jsonl,
    roc_auc,
)

JUDGES = ("grounded", "citations")
# the files of ../shared/data a support judge can be checked on, with their yes/no label
SHARED_FILES = {"mtrag_responses.jsonl": "grounded", "attribution_claims.jsonl": "citation_supported"}
# the pair files with people's preferences and the passages the answers were given
PAIR_FILES = ("mtrag_pairs.jsonl",)


@dataclass
class Row:
    source: str
    kind: str  # "held-out training source" or "never trained on"
    n: int
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # method -> figures

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "n": self.n, "metrics": self.metrics}


def figures(y: np.ndarray, scores: np.ndarray, threshold: float, *, probabilities: bool) -> dict[str, float | None]:
    ok = ~np.isnan(scores)
    y, scores = y[ok], scores[ok]
    if not len(y):
        return {"auc": None, "balanced_accuracy": None, "macro_f1": None, "ece": None, "threshold": threshold, "n": 0}
    pred = scores >= threshold
    return {"auc": _r(roc_auc(y, scores)), "balanced_accuracy": _r(balanced_accuracy(y, pred)),
            "macro_f1": _r(macro_f1(y, pred)), "ece": _r(ece(y, np.clip(scores, 0, 1))) if probabilities else None,
            "threshold": round(threshold, 4), "n": int(len(y))}


def _r(x: float | None) -> float | None:
    return None if x is None or x != x else round(float(x), 4)


def _balanced(sources: list[SourceData], values: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores and weights (each source the same total weight) pooled over `sources`."""
    ys, ss, ws = [], [], []
    for s in sources:
        v = values[s.name]
        ok = ~np.isnan(v)
        ys.append(s.y[ok])
        ss.append(v[ok])
        ws.append(np.full(int(ok.sum()), 1.0 / max(int(ok.sum()), 1)))
    return np.concatenate(ys), np.concatenate(ss), np.concatenate(ws)


def baseline_scores(source: SourceData, embedder: Any, *, sample: list[int]) -> dict[str, np.ndarray]:
    """Word overlap on every record, and the two formulas on the sampled records (NaN elsewhere)."""
    n = len(source.examples)
    overlap = np.array([_nan(formula.word_overlap(e.claim, list(e.passages))) for e in source.examples])
    g = np.full(n, np.nan)
    c = np.full(n, np.nan)
    for i in sample:
        e = source.examples[i]
        g[i] = _nan(formula.grounded_formula(e.claim, list(e.passages), embedder))
        c[i] = _nan(formula.citation_formula(e.claim, list(e.passages), embedder))
    return {"word overlap": overlap, "formula grounded": g, "formula citations": c}


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def validate(train_paths: list[Path], shared_dir: Path | None, *, model_path: str | None, cache_path: str | None,
             limit: int | None = None, baseline_sample: int = 300, c: float = C, prior: float = PRIOR,
             synthetic_share: float = SYNTHETIC_SHARE,
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    from .embed import get_embedder
    from .grounded import answer_score
    from .support import Reader, load_model
    from .training import SignalCache

    embedder = get_embedder("minilm")
    reader = Reader(embedder, cache_size=500, layers=load_model(model_path).reader_layers)
    cache = SignalCache(cache_path)
    sources = [load_source(p, reader, cache, limit=limit, progress=progress) for p in train_paths]
    rng = random.Random(SEED)
    progress("baselines on the training sources (word overlap on all, formulas on a sample)")
    base = {s.name: baseline_scores(s, embedder, sample=sorted(rng.sample(range(len(s.examples)),
                                                                         min(baseline_sample, len(s.examples)))))
            for s in sources}
    rows: dict[str, list[Row]] = {j: [] for j in JUDGES}
    for held, rest, m in held_out_folds(sources, c=c, prior=prior, synthetic_share=synthetic_share):
        learned = {"grounded": lambda s, m=m: answer_scores(m, s, answer_score),
                   "citations": lambda s, m=m: citation_scores(m, s)}
        for j in JUDGES:
            row = Row(held.name, "held-out training source", len(held.examples))
            own = {s.name: learned[j](s) for s in sources}
            t = best_threshold(*_balanced(rest, own))
            row.metrics["learned"] = figures(held.y, own[held.name], t, probabilities=True)
            for method in ("word overlap", f"formula {j}"):
                vals = {s.name: base[s.name][method] for s in sources}
                t = best_threshold(*_balanced(rest, vals))
                row.metrics[method] = figures(held.y, vals[held.name], t, probabilities=False)
            rows[j].append(row)
        progress(f"  held out {held.name}: grounded AUC {rows['grounded'][-1].metrics['learned']['auc']}, "
                 f"citations AUC {rows['citations'][-1].metrics['learned']['auc']}")
        # the synthetic negatives of the held-out source against its real supported claims, apart
        if len(held.xs):
            pos = held.x[held.y]
            ys = np.concatenate([np.ones(len(pos), bool), np.zeros(len(held.xs), bool)])
            ps = m.probabilities(np.vstack([pos, held.xs]))
            srow = Row(f"{held.name} (synthetic negatives vs its supported claims)", "synthetic, held out", len(ys))
            srow.metrics["learned"] = figures(ys, ps, 0.5, probabilities=True)
            rows.setdefault("synthetic", []).append(srow)
    # thresholds for the baselines on data never trained on: chosen on all training sources
    pooled = {method: best_threshold(*_balanced(sources, {s.name: base[s.name][method] for s in sources}))
              for method in ("word overlap", "formula grounded", "formula citations")}
    if shared_dir is not None:
        for fname, label in SHARED_FILES.items():
            path = shared_dir / fname
            if not path.is_file():
                continue
            records = read_jsonl(path)
            if limit:
                records = records[:limit]
            progress(f"{fname}: judging {len(records)} records with the shipped judges")
            for j in JUDGES:
                rows[j].append(_shared_row(fname, records, label, j, model_path, embedder, pooled))
    pairs = []
    for fname in PAIR_FILES if shared_dir is not None else ():
        path = shared_dir / fname  # type: ignore[operator]  # not None here
        if path.is_file():
            records = read_jsonl(path)[:limit] if limit else read_jsonl(path)
            progress(f"{fname}: the offline preference on {len(records)} pairs")
            pairs.append(preference_row(fname, records, model_path))
    return {"rows": {k: [r.as_dict() for r in v] for k, v in rows.items()}, "baseline_thresholds": pooled,
            "pairs": pairs, "model": load_model(model_path).meta.get("id") if shared_dir is not None else None}


def preference_row(fname: str, records: list[dict[str, Any]], model_path: str | None) -> dict[str, Any]:
    """The offline preference against people's `labels.preference` (a, b or tie) on one pair file:
    3-way agreement and Cohen's kappa on the pairs it could judge, and response B's win rate (a tie
    counts half) by people and by the judge on those pairs. Beside it, the same rule on word
    overlap, and people against each other (the first two votes of pairs with two or more)."""
    from . import create
    from .base import judge_safely
    from .calibrate import PAIR_VERDICT_LABELS, prepare
    from .metrics import multiclass_metrics
    from .preference import DEFAULT_MARGIN, offline_preference

    _, items, _ = prepare(records, label="preference")
    j = create("offline-preference", **({"model": model_path} if model_path else {}))

    async def run() -> list[Any]:
        return [await judge_safely(j, item.subject) for item in items]

    verdicts = asyncio.run(run())
    people = [str(i.truth) for i in items]
    judged = [PAIR_VERDICT_LABELS.get((v.label or "").lower()) if v.error is None else None for v in verdicts]
    labeled = [r for r in records if _has(r, "preference")]

    def overlap(r: dict[str, Any], side: str) -> float | None:
        return formula.word_overlap(r.get(f"response_{side}") or "", [p.get("text") or "" for p in r.get("contexts") or []])

    words = [{1.0: "b", 0.0: "a", 0.5: "tie"}.get(o) if (o := offline_preference(
        [(overlap(r, "a"), overlap(r, "b"))], DEFAULT_MARGIN)) is not None else None for r in labeled]

    def against_people(predicted: list[str | None]) -> dict[str, Any]:
        both = [(t, p) for t, p in zip(people, predicted, strict=True) if p is not None]
        m = multiclass_metrics([t for t, _ in both], [p for _, p in both], classes=("a", "b", "tie"))
        return {"n": m.n, "not_judged": len(predicted) - m.n, "accuracy": _r(m.accuracy), "kappa": _r(m.kappa),
                "b_win_rate": _r(_b_rate([p for _, p in both])), "people_b_win_rate": _r(_b_rate([t for t, _ in both])),
                "confusion": m.confusion}

    votes = [[str(x).lower() for x in v] for r in labeled if len(v := (r.get("labels") or {}).get("votes") or []) >= 2]
    raters = multiclass_metrics([v[0] for v in votes], [v[1] for v in votes], classes=("a", "b", "tie"))
    return {"source": fname, "n": len(items), "offline preference": against_people(judged),
            "word overlap": against_people(words),
            "people": {"n": raters.n, "accuracy": _r(raters.accuracy), "kappa": _r(raters.kappa)}}


def _b_rate(labels: list[str]) -> float | None:
    return float(np.mean([{"b": 1.0, "a": 0.0}.get(x, 0.5) for x in labels])) if labels else None


def _shared_row(fname: str, records: list[dict[str, Any]], label: str, judge: str, model_path: str | None,
                embedder: Any, pooled: dict[str, float]) -> Row:
    from . import create
    from .base import judge_safely
    from .calibrate import prepare
    from .citations import CitationContext
    from .grounded import Groundedness

    _, items, _ = prepare(records, label=label)
    j = create(judge, **({"model": model_path} if model_path else {}))
    assert isinstance(j, Groundedness | CitationContext)  # JUDGES: both carry their threshold

    async def run() -> list[Any]:
        return [await judge_safely(j, item.subject) for item in items]

    verdicts = asyncio.run(run())
    y = np.array([bool(i.truth) for i in items])
    scores = np.array([v.score if v.error is None and v.score is not None else np.nan for v in verdicts])
    row = Row(fname, "never trained on", len(items))
    row.metrics["learned"] = figures(y, scores, j.threshold, probabilities=True)
    row.metrics["learned"]["not judged"] = int(np.isnan(scores).sum())
    texts = [[p.get("text") or "" for p in r.get("contexts") or []] for r in records if _has(r, label)]
    answers = [r.get("response") or "" for r in records if _has(r, label)]
    overlap = np.array([_nan(formula.word_overlap(a, t)) for a, t in zip(answers, texts, strict=True)])
    fn = formula.grounded_formula if judge == "grounded" else formula.citation_formula
    old = np.array([_nan(fn(a, t, embedder)) if t else np.nan for a, t in zip(answers, texts, strict=True)])
    row.metrics["word overlap"] = figures(y, overlap, pooled["word overlap"], probabilities=False)
    row.metrics[f"formula {judge}"] = figures(y, old, pooled[f"formula {judge}"], probabilities=False)
    return row


def _has(record: dict[str, Any], label: str) -> bool:
    return (record.get("labels") or {}).get(label) is not None


def markdown(result: dict[str, Any]) -> str:
    """The tables of docs/judges-validation.md."""
    out = []
    names = {"grounded": "Groundedness (`grounded`)", "citations": "Citations (`citations`)"}
    for j in JUDGES:
        out += [f"### {names[j]}", "",
                "| source | kind | n | AUC | bal. acc. | macro-F1 | ECE | word overlap AUC / bal. acc. / mF1 "
                "| earlier formula AUC / bal. acc. / mF1 |",
                "|---|---|---:|---:|---:|---:|---:|---|---|"]
        for row in result["rows"].get(j, []):
            m = row["metrics"]["learned"]
            wo, fo = row["metrics"]["word overlap"], row["metrics"][f"formula {j}"]
            out.append(f"| {row['source']} | {row['kind']} | {m['n']} | {_f(m['auc'])} | {_f(m['balanced_accuracy'])} "
                       f"| {_f(m['macro_f1'])} | {_f(m['ece'])} | {_trio(wo)} | {_trio(fo)} (n={fo['n']}) |")
        out.append("")
    if result["rows"].get("synthetic"):
        out += ["### Synthetic hard negatives (reported apart)", "",
                "| held-out source | n | AUC | bal. acc. at 0.5 |", "|---|---:|---:|---:|"]
        for row in result["rows"]["synthetic"]:
            m = row["metrics"]["learned"]
            out.append(f"| {row['source']} | {m['n']} | {_f(m['auc'])} | {_f(m['balanced_accuracy'])} |")
        out.append("")
    if result.get("pairs"):
        out += ["### The offline preference against people (`offline-preference`)", "",
                "| pairs | method | n judged | agreement (a / b / tie) | kappa | B's win rate: method / people |",
                "|---|---|---:|---:|---:|---|"]
        for row in result["pairs"]:
            for method in ("offline preference", "word overlap"):
                m = row[method]
                out.append(f"| {row['source']} | {method} | {m['n']} | {_f(m['accuracy'])} | {_f(m['kappa'])} "
                           f"| {_f(m['b_win_rate'])} / {_f(m['people_b_win_rate'])} |")
            p = row["people"]
            out.append(f"| {row['source']} | one person against another (first two votes) | {p['n']} "
                       f"| {_f(p['accuracy'])} | {_f(p['kappa'])} | |")
        out.append("")
    return "\n".join(out)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _trio(m: dict[str, Any]) -> str:
    return f"{_f(m['auc'])} / {_f(m['balanced_accuracy'])} / {_f(m['macro_f1'])}"
