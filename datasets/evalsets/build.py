"""Eval sets built from production traffic: `shadoweval evalset build NAME [filters]`.

The build reads stored exchanges, keeps the ones the filters select, turns each into an item
(`items.py`: per-answer labels, a target; an imported request stored as several exchanges is
one item), removes near-duplicate questions, spreads the set over clusters of similar questions so
one frequent question cannot fill it, redacts, and stores an immutable version whose id is the hash
of its name and content. Building again from unchanged traffic gives the same id, so it adds no
version; `diff` says what changed between two.

Filters narrow in two ways. Where and when (time window, routes, tags, candidates) always restrict.
The signals (graded by people, kept by a grader, an end-user complaint, a judge that disagrees with
people, an answer failing a judge) add up: with several, an exchange with any of them is in.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from shadoweval.core.messages import last_user_text
from shadoweval.core.redact import Redactor
from shadoweval.core.settings import ContextSettings
from shadoweval.core.store import Store
from shadoweval.core.types import EvalItem, EvalSet, ExchangeBundle

from .items import human_labels, judge_labels, merged, to_item, usable_outputs
from .keys import request_key

__all__ = ["Filters", "BuildResult", "build", "diff", "request_key", "set_id"]

_HUMAN_FIELDS = {"grounded": "grounded", "grounded-llm": "grounded", "citations": "citations_correct",
                 "citations-llm": "citations_correct", "intent": "meets_intent"}


@dataclass(frozen=True, slots=True)
class Filters:
    since: float | None = None
    until: float | None = None
    routes: tuple[str, ...] = ()  # route tags or API paths, globs allowed
    tags: dict[str, str] = field(default_factory=dict)  # every one must match
    candidates: tuple[str, ...] = ()  # only these candidates' answers (default: all)
    # signals: an exchange with any of those asked for is in
    graded: bool = False
    kept: bool = False
    complaints: bool = False
    disagreement: bool = False
    failed: tuple[str, ...] = ()  # judge names: some answer fails one of them
    human_targets_only: bool = False  # drop items whose target is not from people

    def signals(self) -> list[str]:
        return [s for s in ("graded", "kept", "complaints", "disagreement") if getattr(self, s)] + \
            [f"failed:{j}" for j in self.failed]


@dataclass(frozen=True, slots=True)
class BuildResult:
    evalset: EvalSet
    created: bool  # False: an identical version existed already


def build(store: Store, name: str, filters: Filters, *, limit: int | None = None, dedup: float = 0.95,
          cluster_threshold: float = 0.8, redactor: Redactor | None = None,
          embed: Callable[[Sequence[str]], np.ndarray] | None = None,
          context: ContextSettings | None = None, now: float | None = None,
          progress: Callable[[int, int], None] | None = None) -> BuildResult:
    """Build and store a version of eval set `name` (the store must be started). `progress` is
    called with (questions embedded in this slice, questions in all), slice by slice."""
    counts: dict[str, int] = {"exchanges": 0}
    why: dict[str, int] = {}
    items: list[EvalItem] = []
    for bundle in _requests(store.exchange_bundles(since=filters.since, until=filters.until), counts):
        reason = _rejected(bundle, filters)
        if reason is None:
            item = to_item(bundle, candidates=filters.candidates, context=context)
            if filters.human_targets_only and item.target_source not in ("human-corrected", "human-preferred"):
                reason = "no human target"
            else:
                items.append(item)
        if reason is not None:
            why[reason] = why.get(reason, 0) + 1
    counts["selected"] = len(items)
    items.sort(key=_priority)
    if items and embed is not None:
        # the opening of a question says which question it is (and long prompts cost the most)
        texts = [_question(i)[:400] for i in items]
        parts = []
        for start in range(0, len(texts), 256):  # in slices, so a long build can show progress
            parts.append(embed(texts[start:start + 256]))
            if progress:
                progress(len(parts[-1]), len(texts))
        vectors = np.concatenate(parts)
        keep = _dedup(vectors, dedup) if 0 < dedup < 1 else list(range(len(items)))
        counts["near_duplicates"] = len(items) - len(keep)
        clusters = _clusters(vectors[keep], cluster_threshold)
        items = [replace(items[i], meta={**items[i].meta, "cluster": c}) for i, c in zip(keep, clusters, strict=True)]
    else:
        exact: dict[str, EvalItem] = {}
        for it in items:
            exact.setdefault(it.key, it)
        counts["near_duplicates"] = len(items) - len(exact)  # exact repeats only without embeddings
        items = list(exact.values())
    if limit is not None and len(items) > limit:
        items = _spread(items, limit)
    items.sort(key=lambda i: (i.meta.get("created_at") or 0, i.key))
    if redactor is not None:
        items = [_redacted(i, redactor) for i in items]
    by_source: dict[str, int] = {}
    for it in items:
        by_source[it.target_source or "none"] = by_source.get(it.target_source or "none", 0) + 1
    times = [i.meta["created_at"] for i in items if i.meta.get("created_at")]
    manifest = {
        "filters": {k: v for k, v in asdict(filters).items() if v not in (None, (), {}, False)},
        "limit": limit, "dedup": dedup, "cluster_threshold": cluster_threshold,
        "embedder": getattr(embed, "__self__", None).__class__.__name__ if embed is not None else None,
        "counts": {**counts, "excluded": why, "items": len(items),
                   "clusters": len({i.meta.get("cluster") for i in items if "cluster" in i.meta}),
                   "targets": by_source},
        "source_window": {"first": min(times), "last": max(times)} if times else None,
    }
    previous = store.evalsets(name)
    if previous:
        manifest["parent"] = {"id": previous[-1].id, "version": previous[-1].version}
    es = EvalSet(id=set_id(name, items), name=name, version=0, created_at=now or time.time(), manifest=manifest,
                 items=tuple(items))
    existing = store.evalset(es.id)
    if existing is not None:
        return BuildResult(existing, created=False)
    if not store.submit(es) or not store.flush(60):
        raise RuntimeError("the store did not confirm the eval set was written")
    stored = store.evalset(es.id)
    if stored is None:
        raise RuntimeError("the eval set could not be written (see the log)")
    return BuildResult(stored, created=True)


def _requests(bundles: Iterable[ExchangeBundle], counts: dict[str, int]) -> Iterator[ExchangeBundle]:
    """The bundles, counted, with an imported request's exchanges (one per production answer, all
    with the request's `import_key`) joined into one: one question is one item, with every answer
    and every vote between them. Imported ones come last; the build sorts items afterwards."""
    imported: dict[str, list[ExchangeBundle]] = {}
    for bundle in bundles:
        counts["exchanges"] += 1
        key = bundle.exchange.tags.get("import_key")
        if key is None:
            yield bundle
        else:
            imported.setdefault(key, []).append(bundle)
    for group in imported.values():
        yield merged(group)


def set_id(name: str, items: Sequence[EvalItem]) -> str:
    """The hash of a version's name and content (request, target, answers and labels of each item)."""
    h = hashlib.sha256(name.encode())
    for it in items:
        h.update(json.dumps([it.key, it.request, it.target, it.target_source, it.outputs, it.labels],
                            sort_keys=True, ensure_ascii=False, default=str).encode())
    return "es-" + h.hexdigest()[:16]


def diff(a: EvalSet, b: EvalSet) -> dict[str, Any]:
    """What changed from version `a` to `b`, item by item (matched by request key)."""
    old = {i.key: i for i in a.items}
    new = {i.key: i for i in b.items}
    changed = []
    for key in sorted(old.keys() & new.keys()):
        x, y = old[key], new[key]
        fields = [f for f in ("target", "target_source", "outputs", "labels", "contexts")
                  if getattr(x, f) != getattr(y, f)]
        if fields:
            changed.append({"key": key, "fields": fields, "question": _question(y)[:120]})
    return {
        "from": {"ref": a.ref, "id": a.id, "items": len(a.items)},
        "to": {"ref": b.ref, "id": b.id, "items": len(b.items)},
        "added": [{"key": k, "question": _question(new[k])[:120]} for k in sorted(new.keys() - old.keys())],
        "removed": [{"key": k, "question": _question(old[k])[:120]} for k in sorted(old.keys() - new.keys())],
        "changed": changed,
        "filters": {"from": a.manifest.get("filters"), "to": b.manifest.get("filters")},
    }


def _rejected(bundle: ExchangeBundle, f: Filters) -> str | None:
    """Why the filters leave this exchange out, or None when it is in."""
    ex = bundle.exchange
    if ex.request is None:
        return "no request stored"
    route = ex.tags.get("route")
    if f.routes and not any(fnmatch.fnmatchcase(r, g) for g in f.routes for r in (route, ex.route) if r):
        return "route"
    if any(ex.tags.get(k) != v for k, v in f.tags.items()):
        return "tags"
    signals = f.signals()
    if not signals:
        return None
    names = {o.id: n for n, o in usable_outputs(bundle, f.candidates).items()}
    human = human_labels(bundle, names)
    judges = judge_labels(bundle, names)
    hit = ((f.graded and bool(bundle.graded))
           or (f.kept and bool(human.get("keep")))
           or (f.complaints and any(fb.is_complaint for fb in bundle.feedback))
           or (f.disagreement and _disagrees(human, judges))
           or any(v.get("passes") is False for j in f.failed for v in judges.get(j, {}).values()))
    return None if hit else "no selected signal"


def _disagrees(human: dict[str, Any], judges: dict[str, Any]) -> bool:
    """A judge's pass/fail on an answer differs from what people said about it (grounded counts
    only "yes" as grounded), or the pairwise judge picked another winner than people did."""
    for judge, field_ in _HUMAN_FIELDS.items():
        for name, verdict in judges.get(judge, {}).items():
            said = human.get(field_, {}).get(name)
            if said is None or verdict.get("passes") is None:
                continue
            if verdict["passes"] != (said == "yes" if field_ == "grounded" else bool(said)):
                return True
    votes = human.get("winner_votes")
    pairwise = judges.get("pairwise", {}).get(human.get("candidate", ""))
    if votes and pairwise and pairwise.get("label") in ("production", "candidate", "tie"):
        majority = max(votes, key=lambda k: votes[k])
        return list(votes.values()).count(votes[majority]) == 1 and majority != pairwise["label"]
    return False


def _priority(item: EvalItem) -> tuple[int, float]:
    """Kept first when thinning the set: human targets, then graded, then complaints, newest first."""
    rank = {"human-corrected": 0, "human-preferred": 1}.get(item.target_source or "", 3)
    if rank == 3 and "human" in item.labels:
        rank = 2
    if rank == 3 and item.labels.get("feedback", {}).get("complaints"):
        rank = 2
    return rank, -(item.meta.get("created_at") or 0)


def _question(item: EvalItem) -> str:
    """The last user turn: what near-duplicate questions share. A Responses API `input` that is not
    plain text is taken whole (as JSON), since it need not hold a user turn of its own."""
    inp = item.request.get("input")
    if item.request.get("messages") is None and not isinstance(inp, str):
        return json.dumps(inp, ensure_ascii=False)[:2000]
    return last_user_text(item.request)


def _dedup(vectors: np.ndarray, threshold: float) -> list[int]:
    """Indexes to keep, in order: an item goes when one kept before it is at least this similar."""
    kept = np.empty_like(vectors)  # rows of the kept items, filled in place (slicing, not copying)
    out: list[int] = []
    for i, v in enumerate(vectors):
        if not out or float(np.max(kept[:len(out)] @ v)) < threshold:
            kept[len(out)] = v
            out.append(i)
    return out


def _clusters(vectors: np.ndarray, threshold: float) -> list[int]:
    """Leader clustering in priority order: join the first cluster whose leader is this similar."""
    leaders = np.empty_like(vectors)
    n = 0
    out = []
    for v in vectors:
        sims = leaders[:n] @ v
        best = int(np.argmax(sims)) if n else -1
        if best < 0 or float(sims[best]) < threshold:
            leaders[n] = v
            best, n = n, n + 1
        out.append(best)
    return out


def _spread(items: list[EvalItem], limit: int) -> list[EvalItem]:
    """Round-robin over clusters, best first within each, so no cluster crowds out the others."""
    by_cluster: dict[int, list[EvalItem]] = {}
    for it in items:  # items come in priority order
        by_cluster.setdefault(it.meta.get("cluster", id(it)), []).append(it)
    queues = list(by_cluster.values())
    out: list[EvalItem] = []
    depth = 0
    while len(out) < limit:
        row = [q[depth] for q in queues if depth < len(q)]
        if not row:
            break
        out.extend(row[:limit - len(out)])
        depth += 1
    return out


def _redacted(item: EvalItem, r: Redactor) -> EvalItem:
    return replace(item, request=r.json(item.request), target=r.text(item.target) if item.target else item.target,
                   contexts=r.json(item.contexts), outputs=r.json(item.outputs), labels=r.json(item.labels))
