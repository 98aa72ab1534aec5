"""scikit-learn's own estimator checks on the baselines (small settings). Every check
passes; the array-API one is skipped by scikit-learn itself unless SCIPY_ARRAY_API
is set."""
import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

from seal_fast import TURTLE, KMeans


@parametrize_with_checks([KMeans(3, n_init=2, device="cpu"), TURTLE(3, iterations=20, device="cpu")])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)
