"""The `shadoweval` command line: serve, judge, grade, report, eval sets, replay, the demo. It may
import proxy/, judges/ and datasets/; nothing outside cli/ imports it."""
