"""Clustering stages on embeddings: K-Means and TURTLE-style human labeling."""
