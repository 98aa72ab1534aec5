"""The estimators, one module per method; importing this package registers all of them."""
from .base import ClusterEstimator, estimator_class, load_model, registered_methods
# registration order is the order methods are listed in (the CLI's choices, its messages)
from .kmeans import KMeans  # noqa: I001
from .turtle import TURTLE
from .seal import SEAL
from .satc import SATC

METHODS = registered_methods()  # every registered estimator, in the order above

__all__ = ["ClusterEstimator", "estimator_class", "load_model", "KMeans", "TURTLE", "SEAL", "SATC",
           "METHODS"]
