"""The labeled data's round trip through the product, on ../shared/data (skipped when absent):
import labeled records, judge them, compare the judge with the imported human labels, build an
eval set, export it in the labeled format, and calibrate a judge on the export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SHARED_DATA

BIN = Path(sys.executable).parent / "shadoweval"
RESPONSES = SHARED_DATA / "mtrag_responses.jsonl"

pytestmark = pytest.mark.skipif(not RESPONSES.exists(), reason="../shared/data is absent")


def test_import_judge_agree_build_export_calibrate(tmp_path):
    db = tmp_path / "labeled.db"
    cfg = tmp_path / "c.toml"
    # the hashing embedder keeps this fast; the real model's figures are in docs/judges.md (calibrate)
    cfg.write_text(f'[store]\npath = "{db}"\n[judges]\nembedder = "hashing"\noffline = ["grounded"]\n')

    def run(*args: str, config: bool = True) -> dict:
        out = subprocess.run([BIN, *args, *(["--config", str(cfg)] if config else []), "--json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    imported = run("evalset", "import", str(RESPONSES), "--limit", "45")
    assert imported["kind"] == "responses" and imported["grades"] == imported["outputs"] > 0
    assert run("evalset", "import", str(RESPONSES), "--limit", "45")["exchanges"] == 0  # idempotent

    run("judge", "run")
    report = run("agreement")
    (grounded,) = [j for j in report["judges"] if j["judge"] == "grounded"]
    # every imported label met a verdict; a request without passages cannot be judged for groundedness
    assert grounded["overall"]["n"] + grounded["errors"] == imported["grades"] and grounded["errors"] < 15
    assert grounded["overall"]["roc_auc"] > 0.6  # the judge tracks people even with the hashing stand-in

    built = run("evalset", "build", "mtrag", "--graded", "--dedup", "0")
    assert built["items"] == imported["exchanges"]
    exported = tmp_path / "mtrag.jsonl"
    out = run("evalset", "export", "mtrag", "--format", "responses", "--out", str(exported))
    assert out["records"] == imported["outputs"]
    original: dict[str, set[bool]] = {}  # a few answers occur twice, labelled apart
    for line in RESPONSES.read_text().splitlines():
        record = json.loads(line)
        original.setdefault(record["response"], set()).add(record["labels"]["grounded"])
    back = [json.loads(line) for line in exported.read_text().splitlines()]
    assert all(r["labels"]["grounded"] in original[r["response"]] for r in back)  # labels survive the trip

    calibrated = run("calibrate", "--labels", str(exported), "--judge", "grounded", "--label", "grounded",
                     "--arg", "embedder=hashing", config=False)
    assert calibrated["records"] == len(back) and calibrated["n"] == grounded["overall"]["n"]
    # the same judge on the same answers and labels, read back from the export instead of the store
    assert calibrated["roc_auc"] == pytest.approx(grounded["overall"]["roc_auc"], abs=0.02)
