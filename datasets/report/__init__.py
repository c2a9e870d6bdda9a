"""The report and the gate: the comparison's build (build.py), its text, HTML and SVG renderings,
the statistics and estimates behind its intervals, how far judges agree with people
(agreement.py), trends over time, and the pass/fail decision (gate.py)."""
