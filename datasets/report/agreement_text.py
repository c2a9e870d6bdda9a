"""The agreement report as text for a terminal (`shadoweval agreement`)."""

from __future__ import annotations

from collections.abc import Sequence

from .agreement import OVERALL, AgreementReport, PairwiseAgreement


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(rows: Sequence[tuple[str, ...]], left: int = 1) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]


def format_report(report: AgreementReport) -> str:
    """The report as plain-text tables for a terminal; "-" marks a figure with nothing behind it."""
    out = [f"{report.items} items, {report.grades} grades ({report.skipped} skipped, ignored)", "",
           "Judges vs humans (one observation per grade and verdict)"]
    rows: list[tuple[str, ...]] = [("judge", "slice", "n", "pos", "acc", "prec", "recall", "spec", "f1", "auc", "kappa", "ece")]
    notes = []
    for j in report.judges:
        for where, fig in ((OVERALL, j.overall), *j.slices.items()):
            label = j.judge
            if isinstance(fig, PairwiseAgreement):
                rows.append((f"{j.judge} 3-way", where, str(fig.n), "", _f(fig.accuracy), *[""] * 5, _f(fig.kappa),
                             ""))
                fig, label = fig.decisive, f"{j.judge} non-tie"
            rows.append((label, where, str(fig.n), str(fig.positives), *map(_f, (
                fig.accuracy, fig.precision, fig.recall, fig.specificity, fig.f1, fig.roc_auc, fig.kappa, fig.ece))))
        if j.errors or j.other_keys:
            notes.append(f"  {j.judge}: {j.judge_key}; skipped {j.errors} errors, {j.other_keys} from other keys")
    out += (_table(rows, left=2) + notes) if report.judges else ["  no verdicts on graded outputs"]
    out += ["", "Graders vs each other (alpha: Krippendorff's, nominal; kappa: Cohen's, per pair of graders)"]
    out += _table([("field", "units", "values", "agree", "alpha")] + [
        (r.field, str(r.units), str(r.values), _f(r.percent_agreement), _f(r.alpha)) for r in report.raters])
    pairs = [(r.field, p.a, p.b, str(p.n), _f(p.agreement), _f(p.kappa)) for r in report.raters for p in r.pairs]
    if pairs:
        out += ["", *_table([("field", "grader", "grader", "n", "agree", "kappa"), *pairs], left=3)]
    out += ["", "Position bias (left share among non-ties; p: exact binomial test of 1/2)"]
    out += _table([("grader", "n", "left", "right", "tie", "left share", "p")] + [
        (b.evaluator, str(b.n), str(b.left), str(b.right), str(b.ties), _f(b.left_share), _f(b.p_value))
        for b in report.position_bias])
    return "\n".join(out)
