"""n_clusters="auto": the chosen K on mixtures with known K, what the run report and the
plot say, persistence of an auto model, and every bad K range."""
import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from seal_fast import SATC, SEAL, TURTLE, KMeans, load_model
from seal_fast.choose_k import KRange, choose_k, default_range, parse_n_clusters
from seal_fast.errors import SealFastError
from seal_fast.metrics import evaluate
from seal_fast.store import write_store

from conftest import cli, digest, one_line_error, three_views


def mixture(k, seed, n=1500, std=1.0):
    """The bench's separable mixtures (bench/choose_k.py): d=32, centres in a box of +-10."""
    X, y = make_blobs(n_samples=n, centers=k, n_features=32, cluster_std=std, center_box=(-10, 10), random_state=seed)
    return X.astype(np.float32), y


@pytest.mark.parametrize("k", [3, 6, 12, 25])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_chosen_k_is_exact_on_separable_mixtures(k, seed):
    import torch

    X, _ = mixture(k, seed)
    choice = choose_k(torch.from_numpy(X), KRange(), seed=seed)
    assert choice.k == k, choice.scores
    lo, hi = default_range(X.shape[0])
    assert sorted(choice.scores) == list(range(lo, hi + 1)) and choice.rows == X.shape[0]
    assert choice.scores[k] == max(choice.scores.values())


def test_one_cluster_of_noise_has_no_clear_gap():
    # no cluster structure: the best gap is small next to a mixture's
    import torch

    noise = np.random.default_rng(0).normal(size=(1500, 32)).astype(np.float32)
    X, _ = mixture(6, 0)
    flat = choose_k(torch.from_numpy(noise), KRange()).scores
    clear = choose_k(torch.from_numpy(X), KRange()).scores
    assert max(flat.values()) < 0.5 * max(clear.values())


@pytest.mark.parametrize("make", [
    lambda spec: KMeans(spec, seed=0),
    lambda spec: TURTLE(spec, iterations=300, seed=0, device="cpu"),
])
def test_linear_methods_choose_k_and_fit_it(make):
    X, y = mixture(5, 3, n=900)
    model = make("auto").fit([X])
    assert model.n_clusters_ == 5 and model.n_clusters == "auto"
    assert set(model.k_scores_) == set(range(*default_range(900)[:1], default_range(900)[1] + 1))
    assert evaluate(y, model.labels_)["acc"] > 95
    # the auto fit is the fixed-K fit at the chosen K: same labels
    np.testing.assert_array_equal(model.labels_, make(5).fit([X]).labels_)


@pytest.mark.parametrize("cls,params", [
    (SEAL, dict(iterations=200, epochs=3, restarts=1, patch_neighbors=4)),
    (SATC, dict(max_epochs=3, restarts=1, patch_neighbors=4)),
])
def test_distillation_methods_choose_k_on_the_visual_space(cls, params):
    Z, P, _, y = three_views(n=600, k=4, seed=5)
    model = cls("auto", seed=0, device="cpu", **params).fit([Z], patches=P)
    assert model.n_clusters_ == 4, model.k_scores_
    assert len(np.unique(model.labels_)) <= 4 and model.predict([Z]).max() < 4


def test_a_range_in_python_bounds_the_search():
    X, _ = mixture(6, 0, n=600)
    model = KMeans(range(3, 9), seed=0).fit([X])
    assert sorted(model.k_scores_) == [3, 4, 5, 6, 7, 8] and model.n_clusters_ == 6
    narrow = KMeans("auto:2-4", seed=0).fit([X])  # the true K outside the range: the best inside it
    assert sorted(narrow.k_scores_) == [2, 3, 4] and narrow.n_clusters_ in (2, 3, 4)


def test_an_auto_model_saves_loads_and_predicts(tmp_path):
    X, _ = mixture(4, 1, n=600)
    model = TURTLE("auto", iterations=200, seed=0, device="cpu").fit([X])
    model.save(tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.n_clusters == "auto" and back.n_clusters_ == 4 and back.k_scores_ == pytest.approx(model.k_scores_)
    np.testing.assert_array_equal(back.predict([X]), model.predict([X]))
    with pytest.raises(SealFastError, match="32") as info:  # data of another width: one line naming it
        back.predict([X[:, :16]])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [2, "7", " 3 ", range(2, 5), "auto", "auto:2-9", "auto: 3 - 5", np.int64(4)])
def test_valid_cluster_counts(value):
    spec = parse_n_clusters(value)
    assert isinstance(spec, (int, KRange))
    KMeans(value)  # accepted as a parameter too


@pytest.mark.parametrize("value,message", [
    ("auto:5-3", "empty or reversed"),
    ("auto:1-5", "at least 2"),
    ("auto:0-0", "at least 2"),
    ("auto:a-b", "expected a whole number"),
    ("auto:3", "expected a whole number"),
    ("three", "expected a whole number"),
    ("", "expected a whole number"),
    (range(5, 2), "non-empty"),
    (range(2, 10, 2), "step 1"),
    (range(1, 4), "at least 2"),
    (2.5, "whole number"),
    (True, "whole number"),
    (0, "at least 1"),
])
def test_bad_cluster_counts_are_one_line(value, message):
    with pytest.raises(SealFastError, match=message) as info:
        parse_n_clusters(value)
    assert "\n" not in str(info.value)
    with pytest.raises(SealFastError, match=message):
        KMeans(value).fit([mixture(3, 0, n=60)[0]])


def test_a_range_above_n_or_too_few_rows_is_refused():
    X, _ = mixture(3, 0, n=60)
    with pytest.raises(SealFastError, match="KMAX=80 is above what 60 samples can show"):
        KMeans("auto:2-80").fit([X])
    with pytest.raises(SealFastError, match="at least 3 samples"):
        KMeans("auto").fit([X[:2]])


@pytest.fixture
def mixture_store(tmp_path):
    X, y = mixture(5, 2, n=500)
    return write_store(tmp_path / "feats", spaces={"a": X}, labels=y)


def test_cli_auto_writes_scores_and_plot(tmp_path, mixture_store):
    out = tmp_path / "r.npy"
    rc, stdout, err = cli("cluster", mixture_store.path, "--method", "kmeans", "--n-clusters", "auto",
                          "--out", out, "--save-model", tmp_path / "m.pt")
    assert rc == 0, err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n_clusters"] == 5 and report["n_clusters_asked"] == "auto"
    search = report["choose_k"]
    lo, hi = default_range(500)
    assert sorted(map(int, search["scores"])) == list(range(lo, hi + 1)) and search["chosen"] == 5
    assert search["seconds"] > 0 and len(search["eigenvalues"]) == hi + 1
    assert "K=5 chosen in auto; next: " in stdout + err
    # the runners-up: the next best K, each score as a fraction of the chosen K's
    scores = {int(k): v for k, v in search["scores"].items()}
    nxt = sorted((k for k in scores if k != 5), key=lambda k: (-scores[k], k))[:2]
    assert list(map(int, search["runners_up"])) == nxt
    assert [round(scores[k] / scores[5], 3) for k in nxt] == list(search["runners_up"].values())
    assert all(0 <= r <= 1 for r in search["runners_up"].values())
    assert f"next: {nxt[0]} at {scores[nxt[0]] / scores[5]:.2f}" in stdout + err
    plot = tmp_path / "r-k.png"
    from PIL import Image

    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 100
    # the saved auto model predicts other rows as the fit did
    rc, _, err = cli("predict", tmp_path / "m.pt", mixture_store.path, "--out", tmp_path / "p.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), np.load(out))


@pytest.mark.parametrize("value,message", [
    ("auto:9-4", "empty or reversed"),
    ("auto:1-4", "at least 2"),
    ("auto:2-600", "above what 500 samples can show"),
    ("auto:x-y", "expected a whole number"),
    ("lots", "expected a whole number"),
])
def test_cli_bad_ranges_are_one_line_and_write_nothing(tmp_path, mixture_store, value, message):
    before = digest(mixture_store.path)
    rc, _, err = cli("cluster", mixture_store.path, "--method", "turtle", "--n-clusters", value,
                     "--out", tmp_path / "r.npy", "--save-model", tmp_path / "m.pt")
    one_line_error(rc, err, message)
    assert rc == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats"]
    assert digest(mixture_store.path) == before


def test_cli_predict_with_an_auto_model_on_other_data_is_one_line(tmp_path, mixture_store):
    rc, _, err = cli("cluster", mixture_store.path, "--method", "kmeans", "--n-clusters", "auto",
                     "--out", tmp_path / "r.npy", "--save-model", tmp_path / "m.pt")
    assert rc == 0, err
    other = write_store(tmp_path / "other", spaces={"a": np.ones((20, 7), np.float32)})
    rc, _, err = cli("predict", tmp_path / "m.pt", other.path, "--out", tmp_path / "p.npy")
    one_line_error(rc, err)
    assert not (tmp_path / "p.npy").exists()
