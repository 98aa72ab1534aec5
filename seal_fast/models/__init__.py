"""The estimators, one module per method; importing this package registers all of them."""
from .base import ClusterEstimator
from .kmeans import KMeans
from .persistence import load_model
from .registry import estimator_class, registered_methods
from .satc import SATC
from .seal import SEAL
from .turtle import TURTLE

METHODS = ("kmeans", "turtle", "seal", "satc")  # the order the CLI lists them in
assert set(METHODS) == set(registered_methods()), "a registered estimator is missing from METHODS"

__all__ = ["ClusterEstimator", "estimator_class", "load_model", "KMeans", "TURTLE", "SEAL", "SATC",
           "METHODS"]
