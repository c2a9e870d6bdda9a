"""One stored exchange as an eval set item: what people and judges said about its answers, summed
up per answer, and the answer it should get.

The target is the strongest human signal there is: a grader's corrected answer first, then the
answer graders preferred, then a human reference answer; production's own answer only as a last
resort, and always labelled with where it came from (`target_source`), so a set can keep or drop
those.

Answers are named by their output names throughout (outputs, preferred, rejected, per-answer labels).
Captured production answers are named "production"; imported ones by their model, which
`meta["production"]` records. An imported request whose pairs were stored as several exchanges
(one per production answer, imports.py) becomes one item again (`merged`): votes on pairs of its
first exchange's production answer are in `pairs`, the others in `other_pairs`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from shadoweval.core.context import contexts_of
from shadoweval.core.settings import ContextSettings
from shadoweval.core.types import EvalItem, ExchangeBundle, Output

from .keys import request_key

TARGET_SOURCES = ("human-corrected", "human-preferred", "reference", "production")


def usable_outputs(bundle: ExchangeBundle, candidates: tuple[str, ...] = ()) -> dict[str, Output]:
    """The answered outputs by name (the production twin left out: it is production again)."""
    out = {}
    for o in bundle.outputs:
        if o.status != "ok" or o.role == "twin" or o.text is None:
            continue
        if o.role == "candidate" and candidates and o.name not in candidates:
            continue
        out[o.name] = o
    return out


def merged(bundles: Sequence[ExchangeBundle]) -> ExchangeBundle:
    """One request's exchanges as one bundle: the first exchange, joined by the answers of the others
    (the same name and text is the same answer; a production answer of a later exchange joins as a
    candidate, another text under a taken name as `name#2`), and by their grades and verdicts, which
    are pointed at the joined answers. One bundle is returned as it is."""
    first, *rest = bundles
    if not rest:
        return first
    outputs = list(first.outputs)
    by_answer = {(o.name, o.text): o.id for o in outputs}
    taken = {o.name for o in outputs}
    same: dict[str, str] = {}  # output id -> the id of the joined answer it repeats
    for o in (o for b in rest for o in b.outputs):
        if (o.name, o.text) in by_answer:
            same[o.id] = by_answer[(o.name, o.text)]
            continue
        name = next(n for n in (o.name, *(f"{o.name}#{i}" for i in range(2, len(taken) + 3))) if n not in taken)
        joined = replace(o, name=name, role="candidate" if o.role == "production" else o.role)
        taken.add(name)
        by_answer[(o.name, o.text)] = joined.id
        outputs.append(joined)

    def to(output_id: str) -> str:
        return same.get(output_id, output_id)

    graded = [*first.graded, *((replace(i, production_output_id=to(i.production_output_id), candidate_output_id=(
        None if i.candidate_output_id is None else to(i.candidate_output_id))), g) for b in rest for i, g in b.graded)]
    verdicts = [*first.verdicts, *(replace(v, output_id=to(v.output_id)) for b in rest for v in b.verdicts)]
    return ExchangeBundle(exchange=first.exchange, outputs=tuple(outputs), verdicts=tuple(verdicts),
                          feedback=tuple(f for b in bundles for f in b.feedback), graded=tuple(graded))


def production_name(bundle: ExchangeBundle, names: dict[str, str]) -> str | None:
    """The name of the exchange's production answer among `names` (output id -> name), if usable."""
    return next((names[o.id] for o in bundle.outputs if o.role == "production" and o.id in names), None)


def human_labels(bundle: ExchangeBundle, names: dict[str, str]) -> dict[str, Any]:
    """Grades summed up: votes on the pair graded most, the majority's preferred and rejected answer
    (by name), per-answer majorities of grounded / citations / intent, keep, notes, the latest
    correction. `names` maps output id -> output name."""
    if not bundle.graded:
        return {}
    pairs: dict[str, Counter[str]] = {}
    others: dict[tuple[str, str], Counter[str]] = {}  # (a, b) -> a / b / tie: pairs of a merged exchange
    per_answer: dict[str, dict[str, Counter[Any]]] = {}
    notes, corrected, keep = [], None, False
    production = production_name(bundle, names) or "production"
    for item, grade in sorted(bundle.graded, key=lambda ig: ig[1].created_at):
        if item.candidate_output_id is not None and grade.winner is not None:
            cand = names.get(item.candidate_output_id)
            if item.exchange_id == bundle.exchange.id:
                pairs.setdefault(cand or "candidate", Counter())[grade.winner] += 1
            elif cand is not None and (a := names.get(item.production_output_id)) not in (None, cand):
                side = {"production": "a", "candidate": "b"}.get(grade.winner, "tie")
                others.setdefault((str(a), cand), Counter())[side] += 1
        for output_id, labels in item.labels_by_output(grade).items():
            name = names.get(output_id)
            if name is None:
                continue
            for field in ("grounded", "citations_correct", "meets_intent"):
                value = getattr(labels, field)
                if value is not None:
                    per_answer.setdefault(field, {}).setdefault(name, Counter())[value] += 1
        keep = keep or grade.keep
        if grade.note:
            notes.append(grade.note)
        if grade.corrected_answer:
            corrected = grade.corrected_answer
    out: dict[str, Any] = {"grades": len(bundle.graded), "keep": keep, "notes": notes}
    if corrected:
        out["corrected_answer"] = corrected
    if pairs:
        cand, votes = max(pairs.items(), key=lambda kv: (sum(kv[1].values()), kv[0]))
        out["pairs"] = {c: dict(v) for c, v in pairs.items()}
        out["winner_votes"] = {k: votes.get(k, 0) for k in ("production", "candidate", "tie")}
        out["candidate"] = cand
        top = max(votes.values())
        winners = [k for k in ("production", "candidate", "tie") if votes.get(k, 0) == top]
        if winners in (["production"], ["candidate"]):  # a strict plurality, as the pair formats count it
            won = winners[0]
            out["preferred"] = production if won == "production" else cand
            out["rejected"] = cand if won == "production" else production
    if others:
        out["other_pairs"] = [{"a": a, "b": b, "votes": {k: v.get(k, 0) for k in ("a", "b", "tie")}}
                              for (a, b), v in sorted(others.items())]
    for field, by_name in per_answer.items():
        out[field] = {name: _majority(c) for name, c in by_name.items()}
    return out


def judge_labels(bundle: ExchangeBundle, names: dict[str, str]) -> dict[str, Any]:
    """The latest verdict of each judge on each answer: score, label, pass."""
    out: dict[str, dict[str, Any]] = {}
    for v in sorted(bundle.verdicts, key=lambda v: v.created_at):
        name = names.get(v.output_id)
        if name is None or v.error:
            continue
        out.setdefault(v.judge, {})[name] = {"score": v.score, "label": v.label, "passes": v.passes}
    return out


def to_item(bundle: ExchangeBundle, *, candidates: tuple[str, ...] = (),
            context: ContextSettings | None = None) -> EvalItem:
    ex = bundle.exchange
    outputs = usable_outputs(bundle, candidates)
    names = {o.id: name for name, o in outputs.items()}
    human = human_labels(bundle, names)
    labels: dict[str, Any] = {}
    if human:
        labels["human"] = human
    judges = judge_labels(bundle, names)
    if judges:
        labels["judges"] = judges
    complaints = [f for f in bundle.feedback if f.is_complaint]
    if bundle.feedback:
        labels["feedback"] = {"complaints": len(complaints), "comments": [f.comment for f in complaints if f.comment]}
    target, source = choose_target(human, outputs)
    passages = ex.contexts if ex.contexts is not None else contexts_of(ex, settings=context)
    production = production_name(bundle, names)
    return EvalItem(
        key=request_key(ex.request), request=ex.request or {}, target=target, target_source=source,
        contexts=[{k: p.get(k) for k in ("id", "title", "text")} for p in passages] or None,
        outputs={name: o.text or "" for name, o in outputs.items()},
        labels=labels,
        meta={"exchange_id": ex.id, "route": ex.tags.get("route") or ex.route, "tags": ex.tags,
              "created_at": ex.created_at, **({"production": production} if production else {})},
        exchange_id=ex.id,
    )


def choose_target(human: dict[str, Any], outputs: dict[str, Output]) -> tuple[str | None, str | None]:
    if human.get("corrected_answer"):
        return human["corrected_answer"], "human-corrected"
    preferred = human.get("preferred")
    if preferred in outputs:
        return outputs[preferred].text, "human-preferred"
    reference = next((o for o in outputs.values() if o.role == "reference"), None)
    if reference is not None:
        return reference.text, "reference"
    production = next((o for o in outputs.values() if o.role == "production"), None)
    if production is not None:
        return production.text, "production"
    return None, None


def _majority(votes: Counter[Any]) -> Any:
    (top, n), *rest = votes.most_common()
    return top if not rest or rest[0][1] < n else None  # a split vote says nothing
