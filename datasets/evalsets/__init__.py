"""Eval sets from production traffic: build and version (build.py, items.py), export and import,
and replay to candidates (replay.py, replay_server.py)."""
