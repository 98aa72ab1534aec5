"""The estimators, one module per method; importing this package registers all of them."""
from .base import ClusterEstimator, estimator_class, load_model, registered_methods
from .kmeans import KMeans
from .satc import SATC
from .seal import SEAL
from .turtle import TURTLE

METHODS = ("kmeans", "turtle", "seal", "satc")  # the order the CLI lists them in
assert set(METHODS) == set(registered_methods()), "a registered estimator is missing from METHODS"

__all__ = ["ClusterEstimator", "estimator_class", "load_model", "KMeans", "TURTLE", "SEAL", "SATC",
           "METHODS"]
