"""Estimators (scikit-learn style): KMeans, TURTLE, SEAL, SATC."""
