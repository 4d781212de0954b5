"""Evaluation: mteb tasks over local folders, per-task instructions, speed-eval."""
