"""A team's rescaling of the offline judges' scores (Platt scaling, `judges/scale.py`): the map, its
fit and its worth out of sample, the judges applying it without changing a decision, and
`shadoweval calibrate` suggesting it for the configuration."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shadoweval import judges
from shadoweval.cli.main import main
from shadoweval.core.settings import SettingsError, load_settings
from shadoweval.judges.base import key_of
from shadoweval.judges.calibrate import subject_of
from shadoweval.judges.config import build
from shadoweval.judges.scale import Scale, cross_fitted, fit_scale


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_the_map_keeps_the_order_and_refuses_what_would_not():
    s = Scale(2.0, 1.0)
    assert s(0.5) == pytest.approx(_sigmoid(np.array(1.0)))
    assert s(0.2) == pytest.approx(float(_sigmoid(np.array(2 * math.log(0.25) + 1))))
    xs = [0.0, 0.01, 0.2, 0.5, 0.8, 0.99, 1.0]
    assert [s(x) for x in xs] == sorted(s(x) for x in xs) and 0 < s(0.0) < s(1.0) < 1
    assert Scale(1.0, 0.0)(0.37) == pytest.approx(0.37)
    assert Scale.of(None) is None and Scale.of([2, 1]) == s and s.as_list() == [2.0, 1.0]
    for bad in ([0, 1], [-1, 0], [1], "ab", [float("nan"), 0]):
        with pytest.raises(ValueError):
            Scale.of(bad)


def test_the_fit_recovers_a_known_scale_and_rescaling_helps_out_of_sample():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.98, 3000)  # the real chance of a yes
    labels = rng.random(3000) < truth
    # scores that run low, as the support model's do on mostly grounded traffic: logit(score) = (logit(p) - 1.5) / 2
    scores = _sigmoid((np.log(truth / (1 - truth)) - 1.5) / 2)
    fitted = fit_scale(scores.tolist(), labels.tolist())
    assert fitted is not None and fitted.slope == pytest.approx(2.0, rel=0.12)
    assert fitted.intercept == pytest.approx(1.5, abs=0.2)
    cf = cross_fitted(scores[:400].tolist(), labels[:400].tolist())
    assert cf is not None and cf.folds == 5
    assert cf.before.ece > 0.15 and cf.after.ece < 0.07 and cf.after.brier < cf.before.brier
    assert abs(cf.after.mean_score - cf.after.base_rate) < 0.03
    # too few records, one class only, or scores unrelated to the labels: nothing to fit
    assert fit_scale(scores[:10].tolist(), labels[:10].tolist()) is None
    assert fit_scale([0.3] * 50, [True] * 50) is None
    anti = fit_scale((1 - scores).tolist(), labels.tolist())  # scores that rank the labels backwards
    assert anti is None


WARRANTY = "The Northwind R2 has a two-year warranty covering the battery and the motor. Repairs take five days."


def _record(answer: str, label: bool = True, i: int = 0) -> dict:
    return {"id": f"r{i}", "request": {"messages": [{"role": "user", "content": "What does the warranty cover?"}]},
            "contexts": [{"id": "1", "text": WARRANTY}], "response": answer, "labels": {"grounded": label}}


ANSWERS = ["The R2 has a two-year warranty [1].", "The warranty covers the battery and the motor [1].",
           "The R2 warranty lasts ten years and covers accidental damage [1].",
           "Express shipping is free on weekends [1].", "Repairs take five days [1].",
           "The warranty covers the battery [1].", "Repairs are free and take one day [1].",
           "Shipping takes two weeks [1]."]
UNSUPPORTED = {2, 3, 6, 7}  # the hashing embedder's scores: under 0.1 for these, over 0.9 for the others


@pytest.mark.parametrize("name", ["grounded", "citations"])
def test_a_judge_rescales_its_score_and_threshold_and_decides_the_same(name):
    plain = judges.create(name, embedder="hashing")
    scaled = judges.create(name, embedder="hashing", calibration=[2.0, 1.5])
    assert scaled.threshold == pytest.approx(Scale(2.0, 1.5)(plain.threshold), abs=1e-4)
    assert scaled.args["calibration"] == [2.0, 1.5] and "calibration" not in plain.args
    assert key_of(scaled) != key_of(plain)  # verdicts of one scale are not taken for the other's
    for i, answer in enumerate(ANSWERS):
        s = subject_of(_record(answer, i=i))
        a, b = asyncio.run(plain.judge(s)), asyncio.run(scaled.judge(s))
        assert a.label == b.label and a.passes == b.passes, answer
        assert b.score == pytest.approx(Scale(2.0, 1.5)(a.score), abs=2e-4)
        assert b.evidence["support_model_score"] == pytest.approx(a.score, abs=1e-4)


def test_calibrate_suggests_a_scale_the_configuration_then_applies(tmp_path: Path):
    # a team whose people call half of what the judge scores near 0 grounded (its scores run low there),
    # and everything it scores high; the hashing embedder stands in for MiniLM
    records = [_record(ANSWERS[i % len(ANSWERS)], i % len(ANSWERS) not in UNSUPPORTED or (i // len(ANSWERS)) % 2 == 0,
                       i) for i in range(80)]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = CliRunner().invoke(main, ["calibrate", "--labels", str(path), "--judge", "grounded", "--label", "grounded",
                                    "--arg", "embedder=hashing"])
    assert out.exit_code == 0, out.output
    assert "rescaled to these labels (Platt scaling; each record rescaled by a scale fitted on the other 4 of 5 " \
           "folds): ECE" in out.output
    line = next(x for x in out.output.splitlines() if "calibration = { grounded = [" in x)
    slope, intercept = json.loads(line.split("grounded = ")[1].rstrip(" }"))
    settings = load_settings(None, env={}, overrides={"judges": {"calibration": {"grounded": [slope, intercept]},
                                                                 "embedder": "hashing"}})
    grounded = next(j for j in build(settings).offline if j.name == "grounded")
    assert grounded.args["calibration"] == Scale(slope, intercept).as_list()
    as_json = CliRunner().invoke(main, ["calibrate", "--labels", str(path), "--judge", "grounded", "--label",
                                        "grounded", "--arg", "embedder=hashing", "--json"])
    body = json.loads(as_json.output)
    assert body["rescaling"]["scale"] == [round(slope, 4), round(intercept, 4)]
    assert body["rescaling"]["after"]["ece"] < body["rescaling"]["before"]["ece"] - 0.1  # 0.25 -> 0.09
    assert body["rescaling"]["before"]["ece"] == pytest.approx(body["calibration"]["ece"])


@pytest.mark.parametrize("bad, says", [({"grounded": [0, 1]}, "slope must be > 0"),
                                       ({"intent": [1, 0]}, "rescales grounded or citations scores"),
                                       ({"citations": [1, float("nan")]}, "must be finite numbers"),
                                       ({"grounded": [float("inf"), 0]}, "must be finite numbers")])
def test_a_bad_scale_is_refused(bad, says):
    with pytest.raises(SettingsError, match=says):
        load_settings(None, env={}, overrides={"judges": {"calibration": bad}})
