import numpy as np
import pytest
import torch

from seal_fast import KMeans, TURTLE
from seal_fast.errors import SealFastError
from seal_fast.validation import as_spaces, check_n_clusters, check_neighbors


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_row_is_named(bad):
    Z = np.ones((50, 3), np.float32)
    Z[17, 1] = bad
    with pytest.raises(SealFastError, match="row 17"):
        as_spaces(Z)
    with pytest.raises(SealFastError, match="row 17"):
        as_spaces(torch.from_numpy(Z))


def test_n_mismatch_between_spaces():
    with pytest.raises(SealFastError, match=r"different numbers of rows \[5, 6\]"):
        as_spaces([np.ones((5, 2)), np.ones((6, 2))])


@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
def test_empty(shape):
    with pytest.raises(SealFastError, match=r"while a minimum of 1 is required"):
        as_spaces(np.ones(shape))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_wrong_ndim(shape):
    with pytest.raises(SealFastError, match="2-D"):
        as_spaces(np.ones(shape))


def test_integer_features_become_float32_and_strings_are_refused():
    (Z,) = as_spaces(np.ones((3, 2), dtype=np.int64))
    assert Z.dtype == np.float32
    with pytest.raises(SealFastError, match="expected numbers"):
        as_spaces(np.array([["a", "b"]] * 3))
    with pytest.raises(SealFastError, match="Complex data"):
        as_spaces(np.ones((3, 2), dtype=np.complex64))


@pytest.mark.parametrize("k,msg", [(0, "at least 1"), (11, "exceeds"), (2.5, "integer"), (True, "integer")])
def test_k_out_of_range(k, msg):
    with pytest.raises(SealFastError, match=msg):
        check_n_clusters(k, 10)


@pytest.mark.parametrize("cls", [KMeans, TURTLE])
def test_estimators_check_inputs(cls):
    Z = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(SealFastError, match="exceeds"):
        cls(21, device="cpu").fit(Z)
    model = cls(2, device="cpu", **({"iterations": 2} if cls is TURTLE else {})).fit(Z)
    with pytest.raises(SealFastError, match="X has 5 features, but .* is expecting 4 features"):
        model.predict(np.ones((3, 5), np.float32))
    with pytest.raises(SealFastError, match="not fitted"):
        cls(2).predict(Z)


def test_neighbors_checked():
    assert check_neighbors(7, 100) == 7
    assert check_neighbors(np.int64(99), 100) == 99
    assert check_neighbors(500, 100) == 99  # all the other samples


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "many", None])
def test_bad_neighbors(bad):
    with pytest.raises(SealFastError, match="n_neighbors must be"):
        check_neighbors(bad, 100)


def test_api_inputs(tmp_path):
    with pytest.raises(SealFastError, match="got None"):
        KMeans(2, device="cpu").fit(None)
    model = KMeans(2, device="cpu").fit([[0.0, 1.0], [0.1, 1.0], [5.0, 0.0], [5.1, 0.2]])  # a list of rows
    assert model.labels_.shape == (4,)
    with pytest.raises(SealFastError, match="is a directory"):
        model.save(tmp_path)
