"""Evaluation: the reference's metrics and statistics, scoring a model's outputs, reports and curves."""
