"""The estimators, one module per method; importing this package registers all of them."""
from .base import ClusterEstimator, estimator_class, load_model, store_inputs
from .kmeans import KMeans
from .satc import SATC
from .seal import SEAL
from .turtle import TURTLE

METHODS = ("kmeans", "turtle", "seal", "satc")

__all__ = ["ClusterEstimator", "estimator_class", "load_model", "store_inputs", "KMeans", "TURTLE", "SEAL", "SATC",
           "METHODS"]
