"""The planted-truth scenario suite, short version (`scripts/scenarios --short`), end to end.

One seed, every scenario as a candidate of one real `shadoweval serve`, 400 requests from the
official openai client, the pairwise judge on every pair, 100 pairs per candidate queued and
graded through the grading API, then `report` and `gate` (docs/scenarios.md). The world is sharper
than the full suite's (judge and graders right 95% of the time, not 85% and 80%), so that the
verdicts asserted here are safe: each holds in well over 99% of seeds. What is not asserted, and
why: a pass of `clearly-better` or `equal-cheaper`, because at 100 grades the interval is about
±0.07 and a truly equal candidate clears a 0.05 margin only some of the time, and the rising-judge
alarm (corrected for the slices it tests) still fires on a few percent of honest candidates; nor
the `judge-pleaser` alarm, which 100 grades catch only about 60% of the time (it is measured in the
full table). About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from scenario_world import SCENARIOS  # noqa: E402


def test_short_scenarios(tmp_path: Path) -> None:
    out, md = tmp_path / "runs.json", tmp_path / "scenarios.md"
    md.write_text("# table\n<!-- scenarios:table:start -->\nold\n<!-- scenarios:table:end -->\nkept\n")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "scenarios"), "--short", "--json", str(out),
                           "--markdown", str(md)], capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = json.loads(out.read_text())["results"]
    s = run["scenarios"]

    # the whole loop ran for every scenario: judged, queued, graded through the API, decided on both
    assert set(s) == set(SCENARIOS)
    for name, r in s.items():
        assert r["decided_by"] == "ppi", name  # the pairwise judge on every pair, corrected by the grades
        assert 70 <= r["queued"] <= 135, name
        assert r["verdict"] in ("pass", "fail"), name
    assert run["grades"] >= sum(r["queued"] for r in s.values())

    # verdicts that are safe at this size
    assert not any(r.startswith("quality:") for r in s["clearly-better"]["reasons"])  # shown better
    assert s["worse"]["outcome"] == "right" and "quality" in s["worse"]["kinds"]
    # fails, and almost always names the slice: 12 of 12 seeds (`scripts/scenarios --short --seeds 12
    # --scenario slice-regression`), but one CI run of all seven named only the overall drop, since the
    # exchange ids (so which pairs are graded) are random; so the slice is not required here
    assert s["slice-regression"]["verdict"] == "fail"
    assert {"slice route=billing", "quality"} & set(s["slice-regression"]["kinds"])
    assert s["drift"]["alarms"]["drift"] and not s["equal-cheaper"]["alarms"]["drift"]
    assert all("-W" in a.split(":")[0] for a in s["drift"]["alerts"])  # per ISO week, as configured
    gaming = s["reward-gaming"]
    assert gaming["outcome"] == "right" and gaming["alarms"]["gaming_rise"] and gaming["alarms"]["gaming_judge_vs_people"]
    for name in ("equal-cheaper", "clearly-better"):
        assert not s[name]["alarms"]["gaming_judge_vs_people"], name

    # the table went between the markers, and only there
    text = md.read_text()
    assert text.startswith("# table\n<!-- scenarios:table:start -->\n`scripts/scenarios") and text.endswith("kept\n")
    assert "old" not in text and all(f"| {name} |" in text for name in SCENARIOS)
