"""Eval sets built from production traffic: choosing what humans grade, versioning, export, replay."""
