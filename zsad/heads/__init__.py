"""Scoring heads: image-level aggregations (S1-S5) and the pixel anomaly map."""
