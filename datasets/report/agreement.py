"""How far the judges agree with human graders, how far graders agree with each other, and whether
graders favour the answer shown on the left.

A judge is worth trusting once it agrees with people about as well as people agree with each other,
so this report puts both side by side, per slice, each figure with the count behind it: a kappa from
six grades must not read like one from six hundred. Pure functions over project types; the CLI reads
the store and passes items, grades and verdicts in.

Decisions, made once here so every caller gets the same figures:
- Skipped grades are dropped everywhere. A person who graded an item twice counts once (the latest
  grade, as the store keeps it). Grades on items not passed in are ignored, so a report is scoped to a
  batch by passing that batch's items.
- Verdicts with an error are skipped. When one judge name has several keys (versions or arguments),
  the key with the most verdicts on the graded outputs is reported (ties: the first in sort order) and
  the rest are counted in `other_keys`, so a re-calibrated threshold never mixes two rules in a figure.
- Each (grade, verdict) pair is one observation: an output graded by three people counts three times,
  weighting it by how much human evidence there is.
- A binary judge decides by `Verdict.passes` (score against its threshold, a failing label such as
  citations' "unsupported" failing whatever the score), else by its label (pass / fail, or the
  judge's own words: grounded, aligned, ok...); a verdict with neither (citations'
  "uncited") is skipped. ROC AUC uses the observations that have a score (`auc_n`), and so does the
  expected calibration error (ECE) of the scores read as probabilities, when they all lie in 0..1.
- Human "partly" grounded is negative: the grounded judges pass only fully supported answers.
- Pairwise: 3-class agreement on production / candidate / tie, and binary figures (positive =
  candidate wins) on the observations where neither the human nor the judge said tie. The offline
  preference (`offline-preference`: which answer the offline judges score higher, the outcome the
  report's offline win rate counts) is checked the same way; `from_store` and the report derive it
  from the verdicts stored on both answers (`preference.derived_verdicts`), so it needs no run.
- Inter-rater units are items (for the winner) and (item, output) pairs (for the answer labels);
  percent agreement is the share of agreeing pairs of grades within a unit, pooled over units.
- A figure whose denominator is empty is None, never 0 (kappa too when chance agreement is 1).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

from scipy.stats import binomtest

from shadoweval.core.settings import ReportSettings
from shadoweval.core.store import Store
from shadoweval.core.types import FAIL_LABELS, AnswerLabels, Grade, GradingItem, Verdict
from shadoweval.judges.metrics import BinaryMetrics, calibration, multiclass_metrics, roc_auc
from shadoweval.judges.preference import derived_verdicts

# The human label each binary judge is compared with; the preference judges are compared with the winner.
HUMAN_FIELD: dict[str, str] = {"grounded": "grounded", "grounded-llm": "grounded", "citations": "citations_correct",
                               "citations-llm": "citations_correct", "intent": "meets_intent"}
LABEL_FIELDS = ("grounded", "citations_correct", "meets_intent")
PREFERENCE_JUDGES = ("pairwise", "offline-preference")
WINNERS = ("candidate", "production", "tie")
OVERALL = "(all)"
# Judges' own label words, read alone when a verdict has no threshold to decide with (intent, citations-llm).
_PASS_LABELS = frozenset({"pass", "grounded", "supported", "aligned", "ok"})


@dataclass(frozen=True, slots=True)
class BinaryAgreement:
    """Judge decisions against human yes/no labels. Each ratio is None when its denominator is empty:
    accuracy over `n`, precision over `predicted`, recall over `positives`, specificity over the rest."""

    n: int
    positives: int  # human positives
    predicted: int  # judge positives
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    specificity: float | None
    f1: float | None
    kappa: float | None
    roc_auc: float | None
    auc_n: int  # observations with a score: what the AUC and the ECE are computed on
    ece: float | None = None  # the scores read as probabilities (`metrics.calibration`); None unless all in 0..1

    @classmethod
    def of(cls, observations: Sequence[tuple[bool, bool, float | None]]) -> BinaryAgreement:
        """From (human, judge, score) triples."""
        tp = sum(1 for h, j, _ in observations if h and j)
        fp = sum(1 for h, j, _ in observations if not h and j)
        tn = sum(1 for h, j, _ in observations if not h and not j)
        fn = sum(1 for h, j, _ in observations if h and not j)
        n, pos, pred = tp + fp + tn + fn, tp + fn, tp + fp
        scored = [(s, h) for h, _, s in observations if s is not None]
        auc = roc_auc([s for s, _ in scored], [h for _, h in scored]) if scored else None
        reliability = calibration([s for s, _ in scored], [h for _, h in scored])
        m = BinaryMetrics.from_counts(tp, fp, tn, fn, threshold=0.5, roc_auc=auc)
        chance_is_one = pred * pos + (n - pred) * (n - pos) == n * n  # both raters always said one same class
        return cls(n=n, positives=pos, predicted=pred, tp=tp, fp=fp, tn=tn, fn=fn,
                   accuracy=m.accuracy if n else None, precision=m.precision if pred else None,
                   recall=m.recall if pos else None, specificity=m.specificity if n - pos else None,
                   f1=m.f1 if 2 * tp + fp + fn else None, kappa=None if chance_is_one else m.kappa,
                   roc_auc=auc, auc_n=len(scored), ece=reliability.ece if reliability else None)


@dataclass(frozen=True, slots=True)
class PairwiseAgreement:
    """The pairwise judge's production / candidate / tie against the human winner."""

    n: int
    accuracy: float | None
    kappa: float | None
    confusion: dict[str, dict[str, int]]  # confusion[human][judge]
    decisive: BinaryAgreement  # positive = candidate wins, where neither human nor judge said tie


@dataclass(frozen=True, slots=True)
class JudgeReport:
    judge: str
    judge_key: str | None  # None when every verdict of this judge was an error
    human_field: str  # grounded, citations_correct, meets_intent or winner
    overall: BinaryAgreement | PairwiseAgreement
    slices: dict[str, BinaryAgreement | PairwiseAgreement]
    errors: int  # verdicts that could not judge, skipped
    other_keys: int  # verdicts under this judge's other versions or arguments, not reported


@dataclass(frozen=True, slots=True)
class RaterPair:
    a: str
    b: str
    n: int  # units both graded with a value
    agreement: float | None
    kappa: float | None


@dataclass(frozen=True, slots=True)
class RaterAgreement:
    """Agreement among graders on one field, over units with two or more values."""

    field: str  # winner, grounded, citations_correct, meets_intent
    units: int
    values: int  # pairable values, Krippendorff's n
    percent_agreement: float | None
    alpha: float | None  # Krippendorff's alpha, nominal
    pairs: tuple[RaterPair, ...]


@dataclass(frozen=True, slots=True)
class PositionBias:
    evaluator: str  # OVERALL for everyone together
    n: int  # grades with a preference
    left: int
    right: int
    ties: int
    left_share: float | None  # among non-ties
    p_value: float | None  # exact two-sided binomial test of left_share = 1/2


@dataclass(frozen=True, slots=True)
class AgreementReport:
    items: int
    grades: int  # counted grades: not skipped, one per person and item
    skipped: int
    judges: tuple[JudgeReport, ...]
    raters: tuple[RaterAgreement, ...]
    position_bias: tuple[PositionBias, ...]  # OVERALL first, then per evaluator

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_store(store: Store, batch: str | None = None, settings: ReportSettings | None = None) -> AgreementReport:
    """The report over the store's grading items (one `grade queue` batch's, or all) and their grades;
    the offline preference read as the report reads it (`settings`: its `judges` and `preference_margin`)."""
    settings = settings or ReportSettings()
    items = store.grading_items(batch=batch)
    outputs = {o for i in items for o in (i.candidate_output_id, i.production_output_id) if o is not None}
    return agreement(items, store.grades(), with_offline_preference(
        items, store.verdicts_on(outputs), judges=settings.judges, margin=settings.preference_margin))


def with_offline_preference(items: Sequence[GradingItem], verdicts: Mapping[str, Sequence[Verdict]], *,
                            judges: Sequence[str], margin: float) -> dict[str, list[Verdict]]:
    """`verdicts` with the offline preference of each graded pair added on its candidate's output."""
    pairs = [(i.exchange_id, i.production_output_id, i.candidate_output_id) for i in items
             if i.candidate_output_id is not None]
    out = {o: list(vs) for o, vs in verdicts.items()}
    for o, v in derived_verdicts(pairs, verdicts, judges=judges, margin=margin).items():
        out.setdefault(o, []).append(v)
    return out


def agreement(items: Sequence[GradingItem], grades: Sequence[Grade],
              verdicts: Mapping[str, Sequence[Verdict]]) -> AgreementReport:
    """Judge-vs-human, inter-rater and position-bias figures; `verdicts` maps output id -> verdicts."""
    by_id = {item.id: item for item in items}
    latest: dict[tuple[str, str], Grade] = {}
    skipped = 0
    for g in sorted(grades, key=lambda g: g.created_at):
        if g.item_id not in by_id:
            continue
        if g.skipped:
            skipped += 1
        else:
            latest[(g.item_id, g.evaluator)] = g
    graded: list[tuple[GradingItem, Grade]] = [(by_id[i], g) for (i, _), g in sorted(latest.items())]
    outputs = {o for item in by_id.values() for o in item.output_ids() if o is not None}
    names = sorted({v.judge for o in outputs for v in verdicts.get(o, ())
                    if v.judge in HUMAN_FIELD or v.judge in PREFERENCE_JUDGES})
    return AgreementReport(
        items=len(by_id), grades=len(graded), skipped=skipped,
        judges=tuple(_judge(name, graded, outputs, verdicts) for name in names),
        raters=_raters(graded), position_bias=_position_bias([g for _, g in graded]),
    )


def _judge(name: str, graded: list[tuple[GradingItem, Grade]], outputs: set[str],
           verdicts: Mapping[str, Sequence[Verdict]]) -> JudgeReport:
    found = [v for o in sorted(outputs) for v in verdicts.get(o, ()) if v.judge == name]
    ok = [v for v in found if v.error is None]
    counts = Counter(v.judge_key for v in ok)
    key = min(counts, key=lambda k: (-counts[k], k)) if counts else None
    # latest wins; looked up by optional ids (a lone answer has no candidate output)
    chosen: dict[str | None, Verdict] = {
        v.output_id: v for v in sorted(ok, key=lambda v: v.created_at) if v.judge_key == key}
    by_slice: dict[str, list[Any]] = defaultdict(list)
    for item, g in graded:
        if name in PREFERENCE_JUDGES:
            v = chosen.get(item.candidate_output_id)
            winner, picked = _winner(item, g), v.label if v else None
            if winner is not None and picked in WINNERS:
                by_slice[item.slice].append((winner, picked, v.score if v else None))
            continue
        for output_id, labels in item.labels_by_output(g).items():
            v = chosen.get(output_id)
            human, judged = _human(labels, HUMAN_FIELD[name]), _decision(v) if v else None
            if human is not None and judged is not None:
                by_slice[item.slice].append((human, judged, v.score if v else None))
    preference = name in PREFERENCE_JUDGES
    figures = _pairwise if preference else BinaryAgreement.of
    return JudgeReport(judge=name, judge_key=key, human_field="winner" if preference else HUMAN_FIELD[name],
                       overall=figures([o for obs in by_slice.values() for o in obs]),
                       slices={s: figures(obs) for s, obs in sorted(by_slice.items())},
                       errors=len(found) - len(ok), other_keys=len(ok) - (counts[key] if key is not None else 0))


def _pairwise(observations: Sequence[tuple[str, str, float | None]]) -> PairwiseAgreement:
    m = multiclass_metrics([h for h, _, _ in observations], [j for _, j, _ in observations], classes=WINNERS)
    decisive = [(h == "candidate", j == "candidate", s) for h, j, s in observations if "tie" not in (h, j)]
    n = len(observations)
    return PairwiseAgreement(n=n, accuracy=m.accuracy if n else None, kappa=_kappa_or_none(m.kappa, m.confusion),
                             confusion=m.confusion, decisive=BinaryAgreement.of(decisive))


def _kappa_or_none(kappa: float, confusion: dict[str, dict[str, int]]) -> float | None:
    """None when chance agreement is 1 (or nothing was rated): both raters used one same class throughout."""
    used = {c for c, row in confusion.items() if sum(row.values())} | {
        c for row in confusion.values() for c, k in row.items() if k}
    return None if len(used) < 2 else kappa


def _winner(item: GradingItem, g: Grade) -> str | None:
    # The preference is what the grader clicked; resolving it against the item is the one source of truth.
    return item.winner(g.preference) if g.preference is not None else g.winner


def _human(labels: AnswerLabels, field: str) -> bool | None:
    value = getattr(labels, field)
    return None if value is None else value == "yes" if field == "grounded" else bool(value)


def _decision(v: Verdict) -> bool | None:
    if v.passes is not None:
        return v.passes
    label = (v.label or "").lower()
    return True if label in _PASS_LABELS else False if label in FAIL_LABELS else None


def _raters(graded: list[tuple[GradingItem, Grade]]) -> tuple[RaterAgreement, ...]:
    by_item: dict[str, list[tuple[GradingItem, Grade]]] = defaultdict(list)
    for item, g in graded:
        by_item[item.id].append((item, g))
    units: dict[str, list[dict[str, Hashable]]] = {f: [] for f in ("winner", *LABEL_FIELDS)}
    for pairs in by_item.values():
        if len(pairs) < 2:
            continue
        item = pairs[0][0]
        if item.candidate_output_id is not None:  # a single answer graded alone has no winner
            units["winner"].append({g.evaluator: _winner(item, g) for _, g in pairs})
        for output_id in (o for o in item.output_ids() if o is not None):
            for f in LABEL_FIELDS:
                units[f].append({g.evaluator: getattr(item.labels_by_output(g)[output_id], f) for _, g in pairs})
    return tuple(_rater_agreement(f, u) for f, u in units.items())


def _rater_agreement(field: str, units: list[dict[str, Hashable]]) -> RaterAgreement:
    units = [u for u in ({e: v for e, v in unit.items() if v is not None} for unit in units) if len(u) >= 2]
    pairs = sum(math.comb(len(u), 2) for u in units)
    agreeing = sum(math.comb(k, 2) for u in units for k in Counter(u.values()).values())
    raters = []
    for a, b in combinations(sorted({e for u in units for e in u}), 2):
        shared = [(u[a], u[b]) for u in units if a in u and b in u]
        if shared:
            m = multiclass_metrics([x for x, _ in shared], [y for _, y in shared])
            raters.append(RaterPair(a, b, len(shared), m.accuracy, _kappa_or_none(m.kappa, m.confusion)))
    return RaterAgreement(field=field, units=len(units), values=sum(len(u) for u in units),
                          percent_agreement=agreeing / pairs if pairs else None,
                          alpha=krippendorff_alpha(list(u.values()) for u in units), pairs=tuple(raters))


def krippendorff_alpha(units: Iterable[Iterable[Hashable | None]]) -> float | None:
    """Krippendorff's alpha for nominal data, from the coincidence matrix: 1 - D_o / D_e. Each unit lists
    the values its raters gave (None = missing, dropped); units with fewer than two values are not
    pairable. None when nothing is pairable or a single value occurs (no disagreement is expected)."""
    coincidence: defaultdict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        counts = Counter(v for v in unit if v is not None)
        m = sum(counts.values())
        if m < 2:
            continue
        for c, nc in counts.items():
            for k, nk in counts.items():
                coincidence[(c, k)] += nc * (nk - (c == k)) / (m - 1)
    totals: defaultdict[Hashable, float] = defaultdict(float)
    for (c, _), o in coincidence.items():
        totals[c] += o
    n = sum(totals.values())
    observed = sum(o for (c, k), o in coincidence.items() if c != k)  # n * D_o
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n - 1) if n > 1 else 0.0
    return 1 - observed / expected if expected else None


def binomial_p_value(k: int, n: int) -> float | None:
    """Exact two-sided binomial test of k successes in n trials against p = 1/2 (scipy's binomtest:
    the chance of an outcome no likelier than k); None when there were no trials."""
    if n == 0:
        return None
    return float(binomtest(k, n).pvalue)


def _position_bias(grades: list[Grade]) -> tuple[PositionBias, ...]:
    def bias(evaluator: str, gs: list[Grade]) -> PositionBias:
        said = Counter(g.preference for g in gs if g.preference is not None)
        left, right = said["left"], said["right"]
        return PositionBias(evaluator, left + right + said["tie"], left, right, said["tie"],
                            left / (left + right) if left + right else None, binomial_p_value(left, left + right))

    evaluators = sorted({g.evaluator for g in grades})
    return (bias(OVERALL, grades), *(bias(e, [g for g in grades if g.evaluator == e]) for e in evaluators))
