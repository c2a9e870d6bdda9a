"""Calibration: metrics checked by hand and against scikit-learn, then `shadoweval calibrate` end to end
with fake judges registered through the real registry."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn import metrics as skm

from shadoweval import judges
from shadoweval.cli.main import main
from shadoweval.judges.base import key_of, register, verdict
from shadoweval.judges.calibrate import CalibrationError, calibrate, load_records, parse_judge_args
from shadoweval.judges.metrics import (
    BinaryMetrics,
    best_threshold,
    binary_metrics,
    calibration,
    cuts,
    multiclass_metrics,
    roc_auc,
    sweep,
)

from .conftest import SHARED_DATA

BIN = Path(sys.executable).parent / "shadoweval"

# 8 records with tied scores on both sides of the threshold: hand-computed figures below.
SCORES = [0.9, 0.8, 0.8, 0.6, 0.4, 0.4, 0.2, 0.1]
LABELS = [True, True, False, True, False, True, False, False]


def test_binary_metrics_by_hand():
    m = binary_metrics(SCORES, LABELS, 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 3, 1)
    assert (m.n, m.positives, m.predicted, m.threshold) == (8, 4, 4, 0.5)
    for name in ("base_rate", "accuracy", "precision", "recall", "specificity", "f1", "macro_f1", "balanced_accuracy"):
        assert getattr(m, name) == pytest.approx(0.5 if name == "base_rate" else 0.75), name
    assert m.kappa == pytest.approx(0.5)  # observed 0.75, chance (4*4 + 4*4) / 64 = 0.5
    assert m.roc_auc == pytest.approx(13 / 16)  # two tied pos/neg pairs count half
    assert roc_auc(SCORES, LABELS) == m.roc_auc
    assert m.as_dict()["roc_auc"] == m.roc_auc and set(m.as_dict()) >= {"macro_f1", "balanced_accuracy", "kappa"}


def test_zero_division_is_zero_and_auc_needs_both_classes():
    none_predicted = binary_metrics(SCORES, LABELS, 0.95)
    assert (none_predicted.tp, none_predicted.fp) == (0, 0)
    assert none_predicted.precision == 0.0 and none_predicted.f1 == 0.0 and none_predicted.recall == 0.0
    assert none_predicted.specificity == 1.0 and none_predicted.kappa == 0.0
    one_class = binary_metrics([0.2, 0.7, 0.9], [True, True, True], 0.5)
    assert one_class.roc_auc is None and one_class.specificity == 0.0 and one_class.macro_f1 == pytest.approx(0.4)
    agree_on_one_class = binary_metrics([0.9, 0.9], [True, True], 0.5)
    assert agree_on_one_class.kappa == 0.0 and agree_on_one_class.accuracy == 1.0
    empty = binary_metrics([], [], 0.5)
    assert empty.n == 0 and empty.accuracy == 0.0 and empty.roc_auc is None
    with pytest.raises(ValueError):
        binary_metrics([0.1], [True, False])


@pytest.mark.parametrize("seed", range(20))
def test_binary_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    scores = [float(s) for s in np.round(rng.random(n), 1)]  # 11 values: many ties
    labels = [bool(y) for y in rng.random(n) < rng.uniform(0.1, 0.9)]
    if len(set(labels)) < 2:
        labels[0] = not labels[0]
    threshold = float(rng.choice(scores))
    m = binary_metrics(scores, labels, threshold)
    predicted = [s >= threshold for s in scores]
    assert m.roc_auc == pytest.approx(skm.roc_auc_score(labels, scores))
    assert m.accuracy == pytest.approx(skm.accuracy_score(labels, predicted))
    assert m.precision == pytest.approx(skm.precision_score(labels, predicted, zero_division=0))
    assert m.recall == pytest.approx(skm.recall_score(labels, predicted, zero_division=0))
    assert m.f1 == pytest.approx(skm.f1_score(labels, predicted, zero_division=0))
    if len(set(predicted)) == 2:  # sklearn averages only over the classes present; so do we then
        assert m.macro_f1 == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
        assert m.kappa == pytest.approx(skm.cohen_kappa_score(labels, predicted))
    assert m.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(labels, predicted))
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[False, True]).ravel()
    assert (m.tn, m.fp, m.fn, m.tp) == (tn, fp, fn, tp)


def test_sweep_and_best_threshold():
    assert cuts(SCORES) == [0.1, 0.2, 0.4, 0.6, 0.8, 0.9]
    rows = sweep(SCORES, LABELS)
    assert [r.threshold for r in rows] == cuts(SCORES)
    assert rows[0].predicted == 8 and rows[0].recall == 1.0 and rows[-1].predicted == 1
    assert all(r == binary_metrics(SCORES, LABELS, r.threshold) for r in rows)
    assert [round(r.macro_f1, 4) for r in rows] == [0.3333, 0.5636, 0.7333, 0.75, 0.619, 0.5636]
    best = best_threshold(SCORES, LABELS, "macro_f1")
    assert isinstance(best, BinaryMetrics) and best.threshold == 0.6 and best.macro_f1 == pytest.approx(0.75)
    # 0.4 and 0.6 both reach balanced accuracy 0.75: the lowest wins; Youden's J ranks the same way
    assert best_threshold(SCORES, LABELS, "balanced_accuracy").threshold == 0.4
    assert best_threshold(SCORES, LABELS, "youden").threshold == 0.4
    assert [r.threshold for r in sweep(SCORES, LABELS, max_rows=3)] == [0.1, 0.4, 0.9]
    assert [r.threshold for r in sweep(SCORES, LABELS, [0.5, 0.0])] == [0.0, 0.5]
    with pytest.raises(ValueError):
        best_threshold([], [])


def test_calibration_by_hand():
    c = calibration([0.05, 0.15, 0.95, 0.95], [False, True, True, True])
    assert c is not None and c.n == 4 and c.base_rate == 0.75 and c.mean_score == pytest.approx(0.525)
    assert [(b.low, b.high, b.n) for b in c.bins] == [(0.0, 0.1, 1), (0.1, 0.2, 1), (0.9, 1.0, 2)]
    assert [b.positive_rate for b in c.bins] == [0.0, 1.0, 1.0]
    # |0.05 - 0| / 4 + |0.15 - 1| / 4 + |0.95 - 1| * 2 / 4
    assert c.ece == pytest.approx(0.25) and c.brier == pytest.approx((0.05**2 + 0.85**2 + 2 * 0.05**2) / 4)
    # a bin holds its lower edge; 1.0 falls in the last bin
    assert [b.low for b in calibration([0.1, 0.2, 1.0], [True, False, True]).bins] == [0.1, 0.2, 0.9]
    perfect = calibration([0.0, 0.0, 1.0], [False, False, True])
    assert perfect.ece == 0.0 and perfect.brier == 0.0
    assert calibration([], []) is None
    assert calibration([0.5, 1.5], [True, False]) is None  # 1.5 is no probability
    assert calibration([-0.1, 0.5], [True, False]) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_matches_sklearn(seed):
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(seed)
    # not rounded: numpy's edges are not k / 10 exactly (0.30000000000000004), so a score of 0.3 falls in
    # sklearn's bin below; here it falls in [0.3, 0.4) (checked by hand above)
    scores = rng.random(300)
    labels = rng.random(300) < scores ** 2  # the scores run high
    c = calibration(scores.tolist(), labels.tolist())
    rate, mean = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    assert [b.positive_rate for b in c.bins] == pytest.approx(rate.tolist())
    assert [b.mean_score for b in c.bins] == pytest.approx(mean.tolist())
    assert c.brier == pytest.approx(skm.brier_score_loss(labels, scores))
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], scores, side="right"), minlength=10)
    assert c.ece == pytest.approx(sum(n / 300 * abs(m - r) for n, m, r in zip(counts[counts > 0], mean, rate,
                                                                                 strict=True)))
    assert c.mean_score > c.base_rate


def test_multiclass_by_hand_and_against_sklearn():
    m = multiclass_metrics(["a", "a", "b", "tie"], ["a", "b", "b", "b"])
    assert m.classes == ["a", "b", "tie"] and m.n == 4 and m.accuracy == 0.5
    assert m.confusion == {"a": {"a": 1, "b": 1, "tie": 0}, "b": {"a": 0, "b": 1, "tie": 0},
                           "tie": {"a": 0, "b": 1, "tie": 0}}
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert m.kappa == pytest.approx((0.5 - 5 / 16) / (1 - 5 / 16))
    assert m.per_class["a"].support == 2 and m.as_dict()["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    rng = np.random.default_rng(7)
    for _ in range(10):
        truth = [str(x) for x in rng.choice(["a", "b", "tie"], 200, p=[0.45, 0.4, 0.15])]
        pred = [t if rng.random() < 0.6 else str(rng.choice(["a", "b", "tie"])) for t in truth]
        m = multiclass_metrics(truth, pred)
        assert m.accuracy == pytest.approx(skm.accuracy_score(truth, pred))
        assert m.macro_f1 == pytest.approx(skm.f1_score(truth, pred, average="macro"))
        assert m.kappa == pytest.approx(skm.cohen_kappa_score(truth, pred))
        cm = skm.confusion_matrix(truth, pred, labels=m.classes)
        assert [[m.confusion[t][p] for p in m.classes] for t in m.classes] == cm.tolist()


# -- fake judges, registered through the real registry ------------------------------------------------


class WordJudge:
    """Scores by words in the answer: `supported` 0.9, `maybe` 0.2, else 0.1, times `scale`; `boom` raises."""

    name, version = "calib-word", "1"

    def __init__(self, *, threshold: float | None = None, word: str = "supported", scale: float = 1.0):
        self.args = {"threshold": threshold, "word": word, **({"scale": scale} if scale != 1.0 else {})}
        if threshold is not None:
            self.threshold = threshold
        self.word = word
        self.scale = scale
        self.seen: list = []

    async def judge(self, s):
        self.seen.append(s)
        text = s.output.text or ""
        if "boom" in text:
            raise RuntimeError("judge model unavailable")
        return verdict(self, s, score=self.scale * (0.9 if self.word in text else 0.2 if "maybe" in text else 0.1))


class PairJudge:
    """Prefers the answer that says `better`; speaks production/candidate/tie, or A/B/TIE."""

    name, version = "calib-pair", "1"

    def __init__(self, *, vocabulary: str = "roles"):
        self.args = {"vocabulary": vocabulary}
        self.names = {"roles": ("production", "candidate", "tie"), "ab": ("A", "B", "TIE"),
                      "odd": ("first", "second", "tie")}[vocabulary]

    async def judge(self, s):
        a, b = "better" in (s.production.text or ""), "better" in (s.output.text or "")
        return verdict(self, s, label=self.names[0] if a and not b else self.names[1] if b and not a else self.names[2])


register("calib-word")(WordJudge)
register("calib-pair")(PairJudge)

# id, response, labels.supported (mixed spellings), labels.faithfulness, meta.src
ROWS = [
    ("r1", "supported answer", True, 4, "x"),
    ("r2", "supported again", "yes", 3, "x"),
    ("r3", "supported but wrong", "no", 2, "x"),
    ("r4", "maybe so", 1, 3, "y"),
    ("r5", "maybe not", 0, 1, "y"),
    ("r6", "plain", False, 1, "y"),
    ("r7", "plain", True, 2, "y"),
    ("r8", "boom", True, 4, "x"),  # the judge fails: counted as an error
    ("r9", "supported", None, None, "x"),  # no label: not judged
]
EXPECTED_SCORES = [0.9, 0.9, 0.9, 0.2, 0.2, 0.1, 0.1]
EXPECTED_LABELS = [True, True, False, True, False, False, True]


def _responses() -> list[dict]:
    out = []
    for rid, text, supported, faith, src in ROWS:
        labels = {} if supported is None else {"supported": supported, "faithfulness": faith}
        out.append({"id": rid, "request": {"model": "m", "messages": [{"role": "user", "content": f"q {rid}"}]},
                    "contexts": [{"id": "1", "title": "Doc", "text": f"passage for {rid}"}], "response": text,
                    "labels": labels, "meta": {"src": src, "model": "gpt-x"}})
    return out


PAIRS = [  # response_a, response_b, preference, meta.app
    ("a is better", "b", "a", "mail"),
    ("a", "b is better", "b", "mail"),
    ("a", "b", "tie", "mail"),
    ("a is better", "b", "b", "chat"),  # the judge disagrees
    ("a", "b is better", "b", "chat"),
]


def _pairs() -> list[dict]:
    return [{"id": f"p{i}", "request": {"model": "m", "messages": [{"role": "user", "content": "q"}]},
             "contexts": [], "response_a": a, "response_b": b, "labels": {"preference": pref, "votes": [pref]},
             "meta": {"app": app, "model_a": "ma", "model_b": "mb"}} for i, (a, b, pref, app) in enumerate(PAIRS)]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_calibrate_binary_with_a_fake_judge():
    j = judges.create("calib-word")
    report = asyncio.run(calibrate(_responses(), j, label="supported", by="meta.src", concurrency=2))
    assert (report.records, report.unlabeled, report.errors) == (9, 1, 1)
    assert report.error_examples == ["RuntimeError: judge model unavailable"]
    assert report.kind == "binary" and report.label == "labels.supported" and report.judge == key_of(j)
    assert (report.threshold, report.threshold_source) == (0.5, "default")
    assert report.overall == binary_metrics(EXPECTED_SCORES, EXPECTED_LABELS, 0.5)
    o = report.overall
    assert (o.n, o.tp, o.fp, o.tn, o.fn) == (7, 2, 1, 2, 2) and o.roc_auc == pytest.approx(7 / 12)
    assert report.by == {"x": binary_metrics([0.9] * 3, [True, True, False], 0.5),
                         "y": binary_metrics([0.2, 0.2, 0.1, 0.1], [True, False, False, True], 0.5)}
    assert [r.threshold for r in report.sweep] == [0.1, 0.2, 0.9]
    assert report.best_threshold["macro_f1"] == best_threshold(EXPECTED_SCORES, EXPECTED_LABELS, "macro_f1")
    assert report.best_threshold["balanced_accuracy"].threshold == 0.9
    assert report.calibration == calibration(EXPECTED_SCORES, EXPECTED_LABELS)
    assert report.by_calibration == {"x": calibration([0.9] * 3, [True, True, False]),
                                     "y": calibration([0.2, 0.2, 0.1, 0.1], [True, False, False, True])}
    # what the judge saw: the record's request, passages and answer, as a candidate output
    s = next(s for s in j.seen if s.exchange.id == "r1")
    assert s.exchange.request["messages"][0]["content"] == "q r1" and s.production is None
    assert s.exchange.contexts == [{"id": "1", "title": "Doc", "text": "passage for r1"}]
    assert (s.output.text, s.output.role, s.output.status, s.output.model) == ("supported answer", "candidate", "ok",
                                                                                "gpt-x")


def test_calibrate_threshold_label_paths_and_numeric_labels():
    records = _responses()
    own = asyncio.run(calibrate(records, judges.create("calib-word", threshold=0.15), label="labels.supported"))
    assert (own.threshold, own.threshold_source) == (0.15, "judge") and own.overall.predicted == 5
    flag = asyncio.run(calibrate(records, judges.create("calib-word", threshold=0.15), label="supported",
                                 threshold=0.95))
    assert (flag.threshold, flag.threshold_source, flag.overall.predicted) == (0.95, "flag", 0)
    numeric = asyncio.run(calibrate(records, judges.create("calib-word"), label="faithfulness", positive_min=3))
    assert numeric.overall == binary_metrics(EXPECTED_SCORES, [True, True, False, True, False, False, False], 0.5)
    with pytest.raises(CalibrationError, match="--positive-min"):
        asyncio.run(calibrate(records, judges.create("calib-word"), label="faithfulness"))
    with pytest.raises(CalibrationError, match="no record has labels.nope; labels in these records: faithfulness"):
        asyncio.run(calibrate(records, judges.create("calib-word"), label="nope"))
    with pytest.raises(CalibrationError, match="meta.nope"):
        asyncio.run(calibrate(records, judges.create("calib-word"), label="supported", by="meta.nope"))


@pytest.mark.parametrize("vocabulary", ["roles", "ab"])
def test_calibrate_pairs_with_a_fake_pairwise_judge(vocabulary):
    report = asyncio.run(calibrate(_pairs(), judges.create("calib-pair", vocabulary=vocabulary),
                                   label="preference", by="meta.app"))
    assert report.kind == "pairwise" and report.errors == 0 and report.threshold is None and report.sweep == []
    assert report.overall == multiclass_metrics(["a", "b", "tie", "b", "b"], ["a", "b", "tie", "a", "b"])
    assert report.overall.accuracy == 0.8 and report.by["mail"].accuracy == 1.0 and report.by["chat"].n == 2
    d = report.as_dict()
    assert d["best_threshold"] is None and d["confusion"]["b"] == {"a": 1, "b": 2, "tie": 0}


def test_calibrate_pairs_show_production_and_candidate():
    seen = []

    class Spy(PairJudge):
        async def judge(self, s):
            seen.append(s)
            return await super().judge(s)

    asyncio.run(calibrate(_pairs()[:1], Spy(), label="preference"))
    s = seen[0]
    assert (s.production.text, s.production.role, s.production.model) == ("a is better", "production", "ma")
    assert (s.output.text, s.output.role, s.output.model) == ("b", "candidate", "mb")


def test_unknown_pair_labels_are_errors():
    report = asyncio.run(calibrate(_pairs(), judges.create("calib-pair", vocabulary="odd"), label="preference"))
    assert report.errors == 4 and report.overall.n == 1  # only "tie" maps
    assert "'first' is none of" in report.error_examples[0] or "'second' is none of" in report.error_examples[0]


def test_string_labels_compare_judge_labels_and_list_fields_slice_by_element():
    class Topic:
        name, version, args = "topic", "1", {}

        async def judge(self, s):
            return verdict(self, s, label="billing" if "bill" in (s.output.text or "") else "tech")

    records = [{"id": f"t{i}", "response": text, "labels": {"topic": topic}, "meta": {"tags": tags}}
               for i, (text, topic, tags) in enumerate([("bill me", "billing", ["a", "b"]), ("reboot", "tech", ["a"]),
                                                       ("bill", "tech", []), ("x", "tech", ["b"])])]
    report = asyncio.run(calibrate(records, Topic(), label="topic", by="meta.tags"))
    assert report.kind == "categorical" and report.threshold is None
    assert report.overall == multiclass_metrics(["billing", "tech", "tech", "tech"],
                                                ["billing", "tech", "billing", "tech"])
    assert {k: m.n for k, m in report.by.items()} == {"(none)": 1, "a": 2, "b": 2}
    records[0]["labels"]["topic"] = "yes"  # a mix of yes/no and other strings is a mistake, not a category
    with pytest.raises(CalibrationError, match="not a yes/no label"):
        asyncio.run(calibrate(records, Topic(), label="topic"))


def test_load_records_and_judge_args(tmp_path):
    path = _write(tmp_path / "r.jsonl", _responses())
    assert [r["id"] for r in load_records(path, limit=3)] == ["r1", "r2", "r3"]
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(CalibrationError, match="bad.jsonl:2"):
        load_records(tmp_path / "bad.jsonl")
    with pytest.raises(CalibrationError, match="no labels file"):
        load_records(tmp_path / "missing.jsonl")
    assert parse_judge_args(["threshold=0.3", "word=plain", "flags=[1, 2]", "s=a=b"]) == {
        "threshold": 0.3, "word": "plain", "flags": [1, 2], "s": "a=b"}


# -- the command line ----------------------------------------------------------------------------------


def _cli(*args: str):
    return CliRunner().invoke(main, ["calibrate", *args], catch_exceptions=False)


def test_cli_json(tmp_path):
    path = _write(tmp_path / "r.jsonl", _responses())
    result = _cli("--labels", str(path), "--judge", "calib-word", "--label", "supported", "--by", "meta.src", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"n", "positives", "base_rate", "accuracy", "precision", "recall", "specificity", "f1",
                         "macro_f1", "balanced_accuracy", "roc_auc", "kappa", "tp", "fp", "tn", "fn", "threshold",
                         "sweep", "best_threshold", "errors", "judge", "by"}
    expected = binary_metrics(EXPECTED_SCORES, EXPECTED_LABELS, 0.5)
    assert data["n"] == 7 and data["errors"] == 1 and data["unlabeled"] == 1
    assert data["macro_f1"] == pytest.approx(expected.macro_f1) and data["roc_auc"] == pytest.approx(7 / 12)
    assert data["judge"] == 'calib-word@1{"threshold":null,"word":"supported"}'
    assert set(data["by"]) == {"x", "y"} and data["by"]["x"]["n"] == 3
    assert set(data["best_threshold"]) == {"macro_f1", "balanced_accuracy"}
    assert data["sweep"][0]["threshold"] == 0.1 and "macro_f1" in data["sweep"][0]
    assert data["calibration"]["ece"] == pytest.approx(calibration(EXPECTED_SCORES, EXPECTED_LABELS).ece)
    assert set(data["by_calibration"]) == {"x", "y"} and data["by_calibration"]["x"]["n"] == 3


def test_cli_human_output_options_and_args(tmp_path):
    path = _write(tmp_path / "r.jsonl", _responses())
    result = _cli("--labels", str(path), "--judge", "calib-word", "--label", "faithfulness", "--positive-min", "3",
                  "--by", "meta.src", "--arg", "threshold=0.15", "--arg", "word=plain", "--limit", "7",
                  "--concurrency", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith('calib-word@1{"threshold":0.15,"word":"plain"} against labels.faithfulness >= 3: '
                               "7 records, 0 without the label, 0 not judged")
    header = lines[1].split()
    assert header[:2] == ["meta.src", "n"] and {"AUC", "kappa", "mF1", "balacc"} <= set(header)
    assert [line.split()[:2] for line in lines[2:5]] == [["all", "7"], ["x", "3"], ["y", "4"]]
    assert "threshold 0.15 (the judge's own)" in result.stdout
    assert "best threshold by macro-F1:" in result.stdout and "best threshold by balanced accuracy:" in result.stdout
    assert "sweep (" in result.stdout
    # with word=plain the scores are 0.1 (r1-r3), 0.2 (r4, r5), 0.9 (r6, r7); faithfulness >= 3: r1, r2, r4
    ece = 3 / 7 * (2 / 3 - 0.1) + 2 / 7 * (0.5 - 0.2) + 2 / 7 * 0.9
    assert header[-1] == "ECE" and lines[2].split()[-1] == f"{ece:.3f}" == "0.586"
    # the scores' mean (0.357) against the share of positives (0.429) says which way they lean
    assert "calibration, scores read as probabilities: ECE 0.586" in result.stdout
    assert "mean score 0.357 against a positive rate of 0.429: the scores run low" in result.stdout
    assert [line.split() for line in lines if line[:1] in "01" and "-" in line[:5]] == [
        ["0.10-0.20", "3", "0.100", "0.667"], ["0.20-0.30", "2", "0.200", "0.500"],
        ["0.90-1.00", "2", "0.900", "0.000"]]


def test_scores_beyond_one_are_no_probabilities(tmp_path):
    path = _write(tmp_path / "r.jsonl", _responses())
    result = _cli("--labels", str(path), "--judge", "calib-word", "--label", "supported", "--arg", "scale=5",
                  "--arg", "threshold=2")
    assert result.exit_code == 0, result.output
    assert "calibration: not measured (some score lies outside 0..1" in result.stdout
    # nothing judged at all: nothing to measure, and said so
    boom = _write(tmp_path / "boom.jsonl", [r for r in _responses() if r["id"] == "r8"])
    nothing = _cli("--labels", str(boom), "--judge", "calib-word", "--label", "supported")
    assert "calibration: not measured (no score to measure)" in nothing.stdout
    assert result.stdout.splitlines()[2].split()[-1] == "-"  # no ECE
    assert "best threshold by macro-F1: 4.5" in result.stdout  # the rest reads the scores as they are
    report = asyncio.run(calibrate(_responses(), judges.create("calib-word", scale=5.0), label="supported"))
    assert report.calibration is None and report.as_dict()["calibration"] is None


def test_cli_pairs(tmp_path):
    path = _write(tmp_path / "p.jsonl", _pairs())
    result = _cli("--labels", str(path), "--judge", "calib-pair", "--label", "preference", "--by", "meta.app")
    assert result.exit_code == 0, result.output
    assert "confusion (rows: human label, columns: judge's)" in result.stdout
    assert [line.split() for line in result.stdout.splitlines()[2:5]] == [
        ["all", "5", "0.800", "0.822", "0.688"], ["chat", "2", "0.500", "0.333", "0.000"],
        ["mail", "3", "1.000", "1.000", "1.000"]]
    data = json.loads(_cli("--labels", str(path), "--judge", "calib-pair", "--label", "preference", "--json").stdout)
    assert data["accuracy"] == 0.8 and data["threshold"] is None and data["sweep"] is None
    assert data["calibration"] is None and data["by_calibration"] == {}  # a preference is no probability


def test_cli_errors_exit_2(tmp_path):
    path = _write(tmp_path / "r.jsonl", _responses())
    missing = _cli("--labels", str(tmp_path / "none.jsonl"), "--judge", "calib-word", "--label", "supported")
    assert missing.exit_code == 2 and "no labels file at" in missing.stderr
    unknown = _cli("--labels", str(path), "--judge", "no-such-judge", "--label", "supported")
    assert unknown.exit_code == 2 and "no judge named 'no-such-judge'" in unknown.stderr
    absent = _cli("--labels", str(path), "--judge", "calib-word", "--label", "nope")
    assert absent.exit_code == 2 and "no record has labels.nope" in absent.stderr
    bad_arg = _cli("--labels", str(path), "--judge", "calib-word", "--label", "supported", "--arg", "colour=red")
    assert bad_arg.exit_code == 2 and "does not accept" in bad_arg.stderr
    # every verdict an error: the report is printed, and the exit code says nothing was measured
    pairs = _write(tmp_path / "p.jsonl", _pairs())
    useless = _cli("--labels", str(pairs), "--judge", "calib-word", "--label", "preference")
    assert useless.exit_code == 1 and "no verdict could be compared" in useless.stderr


@pytest.mark.skipif(not (SHARED_DATA / "mtrag_responses.jsonl").exists(), reason="shared data absent")
def test_calibrate_checks_on_real_mtrag_responses():
    out = subprocess.run([str(BIN), "calibrate", "--labels", str(SHARED_DATA / "mtrag_responses.jsonl"),
                          "--judge", "checks", "--label", "grounded", "--by", "meta.model", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["n"] == 237 and data["errors"] == 0 and data["records"] == 237
    assert data["positives"] == sum(json.loads(line)["labels"]["grounded"]
                                    for line in (SHARED_DATA / "mtrag_responses.jsonl").open())
    assert sum(m["n"] for m in data["by"].values()) == 237


def test_calibrate_suggests_a_threshold_the_configuration_then_applies(tmp_path):
    """A team refits the grounded judge's threshold on its own labels, without retraining the model."""
    from shadoweval.core.settings import load_settings
    from shadoweval.judges.config import build

    passage = "The Northwind R2 has a two-year warranty covering the battery and the motor."
    records = [{"id": str(i), "request": {"messages": [{"role": "user", "content": "Warranty?"}]},
                "contexts": [{"id": "1", "text": passage}], "response": answer, "labels": {"grounded": label}}
               for i, (answer, label) in enumerate([
                   ("The R2 has a two-year warranty.", True),
                   ("The warranty covers the battery and the motor.", True),
                   ("The R2 warranty lasts ten years and covers accidental damage.", False),
                   ("Express shipping is free on weekends.", False)])]
    path = _write(tmp_path / "mine.jsonl", records)
    result = _cli("--labels", str(path), "--judge", "grounded", "--label", "grounded", "--arg", "embedder=hashing")
    assert result.exit_code == 0, result.output
    line = [x for x in result.stdout.splitlines() if "thresholds = {" in x]
    assert line, result.stdout
    value = float(line[0].split("grounded = ")[1].rstrip(" }"))
    settings = load_settings(None, env={}, overrides={"judges": {"thresholds": {"grounded": value},
                                                                 "embedder": "hashing"}})
    grounded = next(j for j in build(settings).offline if j.name == "grounded")
    assert grounded.threshold == value and grounded.args["threshold"] == value
    default = next(j for j in build(load_settings(None, env={})).offline if j.name == "grounded")
    assert default.threshold == default.model.threshold("grounded")


# ---- the offline preference (the report's `offline` source) as a judge ---------------------------

WARRANTY = ("The Northwind R2 has a two-year warranty covering the battery and the motor. "
            "Accidental damage is not covered. Repairs take five business days.")
GOOD = "The R2 has a two-year warranty that covers the battery and the motor [1]. Repairs take five business days [1]."
BAD = "The R2 comes with a ten-year warranty that includes accidental damage and free express shipping [1]."


def _preference_pairs() -> list[dict]:
    return [{"id": f"w{i}", "request": {"messages": [{"role": "user", "content": "What does the R2 warranty cover?"}]},
             "contexts": [{"id": "1", "text": WARRANTY}], "response_a": a, "response_b": b,
             "labels": {"preference": pref}} for i, (a, b, pref) in enumerate([
                 (GOOD, BAD, "a"), (BAD, GOOD, "b"), (GOOD, GOOD, "tie"), (GOOD, "Sorry, no idea.", "a")])]


def test_offline_preference_is_the_reports_rule():
    from shadoweval.judges.preference import offline_preference

    assert offline_preference([(0.5, 0.8), (0.6, 0.5)], 0.05) == 1.0  # mean gap +0.1
    assert offline_preference([(0.5, 0.8), (0.6, 0.1)], 0.05) == 0.0  # (0.3 - 0.5) / 2 = -0.1
    assert offline_preference([(0.5, 0.8), (0.6, 0.2)], 0.05) == 0.5  # -0.05 exactly: within the margin
    assert offline_preference([(0.50, 0.54), (None, 0.1)], 0.05) == 0.5  # a judge scoring one side only is left out
    assert offline_preference([(None, 0.9), (0.4, None)], 0.05) is None


def test_calibrate_the_offline_preference_on_labeled_pairs(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", _preference_pairs())
    result = _cli("--labels", str(path), "--judge", "offline-preference", "--label", "preference",
                  "--arg", "embedder=hashing", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the uncited refusal gets no citations score, its grounded score alone decides; every pair is judged
    assert data["kind"] == "pairwise" and data["n"] == 4 and data["errors"] == 0
    assert data["confusion"] == {"a": {"a": 2, "b": 0, "tie": 0}, "b": {"a": 0, "b": 1, "tie": 0},
                                 "tie": {"a": 0, "b": 0, "tie": 1}}
    assert json.loads(data["judge"].split("@1", 1)[1])["judges"] == ["grounded", "citations"]
    wide = _cli("--labels", str(path), "--judge", "offline-preference", "--label", "preference",
                "--arg", "embedder=hashing", "--arg", "margin=0.99", "--arg", "judges=grounded", "--json")
    assert json.loads(wide.stdout)["confusion"]["a"] == {"a": 0, "b": 0, "tie": 2}  # nothing beats a 0.99 margin
    bad = _cli("--labels", str(path), "--judge", "offline-preference", "--label", "preference", "--arg", "margin=1.5")
    assert bad.exit_code == 2 and "margin must be in [0, 1)" in bad.stderr


def test_the_offline_preference_explains_and_needs_production():
    from shadoweval.judges.calibrate import subject_of

    j = judges.create("offline-preference", embedder="hashing")
    pair = subject_of(_preference_pairs()[0])  # a = production (GOOD), b = the candidate (BAD)
    v = asyncio.run(j.judge(pair))
    assert v.label == "production" and v.score == 0.0 and v.error is None
    assert "production preferred (beyond the margin 0.05)" in v.explanation
    s = v.evidence["scores"]
    assert set(s) == {"grounded", "citations"} and s["grounded"]["production"] > s["grounded"]["candidate"]
    single = {k: v for k, v in _preference_pairs()[0].items() if k not in ("response_a", "response_b")}
    alone = asyncio.run(j.judge(subject_of({**single, "response": GOOD})))
    assert alone.error == "no production output to compare with"
    with pytest.raises(ValueError, match="cannot read itself"):
        judges.create("offline-preference", judges="grounded,offline-preference")
