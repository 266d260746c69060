"""Discrete speech units: k-means on frame features and nearest-centroid assignment."""

from espnet2_ext.tokenizer.kmeans import assign, fit_kmeans

__all__ = ["assign", "fit_kmeans"]
