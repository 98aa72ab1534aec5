import json

import numpy as np
import pytest

from seal_fast import load_model
from seal_fast.cli import main
from seal_fast.errors import SealFastError
from seal_fast.metrics import cluster_accuracy, evaluate
from seal_fast.models.seal import SEAL

from conftest import three_views


def test_recovers_synthetic_labels():
    Z, P, _, y = three_views(n=600, seed=5)
    # 1,500 distillation steps; the labeling on phi_hat needs more outer iterations than on phi.
    # One restart keeps the long tests short; restarts have their own tests (test_restarts.py).
    model = SEAL(4, iterations=2000, epochs=15, distill_batch_size=128, restarts=1, patch_neighbors=4,
                 device="cpu").fit([Z], patches=P)
    assert cluster_accuracy(y, model.labels_) >= 0.95
    phi_hat = model.transform([Z])[0]
    assert phi_hat.shape == Z.shape  # same dimension as phi


def test_two_spaces():
    Z, P, _, y = three_views(n=400, seed=6)
    Z2 = (Z @ np.random.default_rng(0).normal(size=(16, 24))).astype(np.float32)
    model = SEAL(4, iterations=2000, epochs=15, distill_batch_size=128, restarts=1, patch_neighbors=4,
                 device="cpu").fit([Z, Z2], patches=P)
    assert len(model.heads_) == 2 and cluster_accuracy(y, model.labels_) >= 0.9
    np.testing.assert_array_equal(model.predict([Z, Z2]), model.labels_)


def test_the_default_schedule():
    """The shipped default: 6 restarts of 2 epochs, the labeling on the kept restart's
    phi_hat alone, started from that restart's partition (docs/methods.md)."""
    Z, P, _, y = three_views(n=300, seed=8)
    model = SEAL(4, iterations=200, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    distill = model.fit_details_["distill"][0]
    assert distill["restarts"] == 6 and len(distill["restart_distill_s"]) == 6
    assert len(distill["loss_per_epoch"]) == 2  # the kept restart's epochs
    assert model.fit_details_["labeling_spaces"] == 1 and model.label_heads_ == [[model.heads_[0]]]
    kept = model.restart_labels_[0][distill["restart_kept"]]
    assert model.fit_details_["labeling_init_agreement"] is not None
    # the labeling starts at the kept restart's answer and stays near it on these separable views
    assert evaluate(kept, model.labels_)["nmi"] >= 80 and cluster_accuracy(y, model.labels_) >= 0.9


def test_deterministic_with_a_seed():
    Z, P, _, _ = three_views(n=200, seed=7)
    a = SEAL(4, iterations=30, restarts=3, patch_neighbors=4, seed=3, device="cpu").fit([Z], patches=P)
    b = SEAL(4, iterations=30, restarts=3, patch_neighbors=4, seed=3, device="cpu").fit([Z], patches=P)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.transform([Z])[0], b.transform([Z])[0])


def test_save_load_predict(tmp_path):
    Z, P, _, _ = three_views(n=200, seed=9)
    model = SEAL(4, iterations=30, restarts=3, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    model.save(tmp_path / "seal.pt")
    again = load_model(tmp_path / "seal.pt")
    np.testing.assert_array_equal(again.predict([Z]), model.labels_)
    np.testing.assert_allclose(again.transform([Z])[0], model.transform([Z])[0], rtol=1e-5, atol=1e-6)


def test_labeling_on_phi_and_every_restarts_phi_hat():
    """label_on / label_restarts: the labeling is TURTLE's on exactly the spaces they name."""
    import torch
    from seal_fast.distillation import spatially_aware_embedding
    from seal_fast.labeling import LabelingConfig, human_labeling

    Z, P, _, _ = three_views(n=200, seed=10)
    Z2 = (Z @ np.random.default_rng(1).normal(size=(16, 8))).astype(np.float32)
    model = SEAL(4, iterations=40, epochs=2, restarts=2, label_on="phi+phi_hat", label_restarts="all",
                 labeling_init="random", patch_neighbors=4, device="cpu").fit([Z, Z2], patches=P)
    assert model.fit_details_["labeling_spaces"] == 6  # per space: phi + one phi_hat per restart
    assert all(len(heads) == 2 for heads in model.label_heads_)
    assert all(kept in heads for kept, heads in zip(model.heads_, model.label_heads_))
    spaces = []
    for X, heads in zip([Z, Z2], model.label_heads_):
        X = torch.from_numpy(X)
        spaces += [X] + [spatially_aware_embedding(h, X) for h in heads]
    np.testing.assert_allclose(np.concatenate(model.labeling_spaces([Z, Z2]), 1), torch.cat(spaces, 1).numpy(),
                               rtol=1e-5, atol=1e-6)
    again = human_labeling(spaces, 4, LabelingConfig(iterations=40), seed=model.seed)
    np.testing.assert_array_equal(again.encoder.predict_proba(spaces).argmax(1).numpy(), model.labels_)
    np.testing.assert_array_equal(model.predict([Z, Z2]), model.labels_)


def test_label_options_survive_save_and_load(tmp_path):
    Z, P, _, _ = three_views(n=150, seed=12)
    model = SEAL(4, iterations=20, epochs=1, restarts=2, label_on="phi+phi_hat", label_restarts="all",
                 patch_neighbors=4, device="cpu").fit([Z], patches=P)
    model.save(tmp_path / "seal.pt")
    again = load_model(tmp_path / "seal.pt")
    np.testing.assert_allclose(again.predict_proba([Z]), model.predict_proba([Z]), rtol=1e-5, atol=1e-6)


def test_model_files_from_before_the_label_options_still_load(tmp_path):
    """Files without label_on / label_restarts were labeled on the kept phi_hat: they load as that."""
    import torch

    Z, P, _, _ = three_views(n=150, seed=14)
    model = SEAL(4, iterations=20, epochs=1, restarts=2, label_on="phi_hat", label_restarts="kept",
                 patch_neighbors=4, device="cpu").fit([Z], patches=P)
    model.save(tmp_path / "seal.pt")
    payload = torch.load(tmp_path / "seal.pt", weights_only=True)
    del payload["state"]["label_heads"], payload["params"]["label_on"], payload["params"]["label_restarts"]
    torch.save(payload, tmp_path / "old.pt")
    again = load_model(tmp_path / "old.pt")
    assert (again.label_on, again.label_restarts) == ("phi_hat", "kept")
    np.testing.assert_allclose(again.predict_proba([Z]), model.predict_proba([Z]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("param,value", [("label_on", "phi"), ("label_restarts", "best")])
def test_bad_label_options(param, value):
    Z, P, _, _ = three_views(n=60, seed=13)
    with pytest.raises(SealFastError, match=f"{param} must be one of"):
        SEAL(4, patch_neighbors=4, device="cpu", **{param: value}).fit([Z], patches=P)


@pytest.mark.parametrize("case,message", [
    ("no_patches", "needs patch features"),
    ("few_patches", "fewer than the k\\+1=9"),
    ("wrong_n", "rows for 100 samples"),
    ("nan", "patches: row 7"),
    ("ndim", "expected \\(N, M, c\\)"),
])
def test_bad_patches(case, message):
    Z, P, _, _ = three_views(n=100, seed=10)
    kwargs = {}
    if case == "few_patches":
        kwargs["patches"] = P[:, :5]
    elif case == "wrong_n":
        kwargs["patches"] = P[:90]
    elif case == "nan":
        P[7, 2, 3] = np.nan
        kwargs["patches"] = P
    elif case == "ndim":
        kwargs["patches"] = P[:, 0]
    with pytest.raises(SealFastError, match=message):
        SEAL(4, patch_neighbors=8, device="cpu").fit([Z], **kwargs)


def test_on_real_digits_features(digits_store):
    """Real images and weights: SEAL's phi_hat separates the digit classes better than phi."""
    from seal_fast.metrics import triplet_accuracy

    Z = np.array(digits_store.space("efficientnet-lite0"))
    y = digits_store.labels()
    model = SEAL(10, iterations=300, epochs=2, distill_batch_size=256, restarts=1, device="cpu").fit(
        [Z], patches=digits_store.patches())
    phi_hat = model.transform([Z])[0]
    assert triplet_accuracy(phi_hat, y, 5000) > triplet_accuracy(Z, y, 5000)
    assert evaluate(y, model.labels_)["acc"] > 40


def test_neighbor_count_is_checked_and_recorded():
    Z, P, _, _ = three_views(n=100, seed=11)
    model = SEAL(4, iterations=5, epochs=1, restarts=1, n_neighbors=7, patch_neighbors=4,
                 device="cpu").fit([Z], patches=P)
    assert model.fit_details_["n_neighbors"] == 7
    with pytest.raises(SealFastError, match="n_neighbors must be"):
        SEAL(4, n_neighbors=0, patch_neighbors=4, device="cpu").fit([Z], patches=P)


def test_cli_embed_cluster_evaluate_on_digits(tmp_path, capsys):
    """The whole path through the CLI on real digit images (the first 200, as an .npz)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp_path / "digits200.npz", images=np.round(d.images[:200] * 255 / 16).astype(np.uint8),
             labels=d.target[:200])
    feats = tmp_path / "feats"
    assert main(["embed", str(tmp_path / "digits200.npz"), "--out", str(feats), "--quiet"]) == 0
    res = tmp_path / "seal.npy"
    assert main(["cluster", str(feats), "--method", "seal", "--n-clusters", "10", "--iterations", "200", "--epochs", "1",
                 "--restarts", "2", "--neighbors", "20", "--out", str(res), "--save-model", str(tmp_path / "m.pt"),
                 "--quiet"]) == 0
    report = json.loads(res.with_suffix(".json").read_text())
    assert report["method"] == "seal" and report["fit_details"]["distill"][0]["restarts"] == 2
    assert report["fit_details"]["n_neighbors"] == 20
    capsys.readouterr()
    assert main(["evaluate", str(res), "--truth", str(feats)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 200 and 0 <= metrics["acc"] <= 100
    assert main(["predict", str(tmp_path / "m.pt"), str(feats), "--out", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), np.load(res))


def test_one_sample_and_list_patches_are_refused_clearly():
    Z, P, _, _ = three_views(n=40, seed=11)
    with pytest.raises(SealFastError, match="needs at least 2 samples"):
        SEAL(1, device="cpu").fit([Z[:1]], patches=P[:1])
    model = SEAL(4, iterations=5, epochs=1, restarts=1, patch_neighbors=4, device="cpu")
    model.fit([Z], patches=P.tolist())  # a nested list is an array of patches
    with pytest.raises(SealFastError, match="patches: expected a numeric array .* got a list"):
        model.fit([Z], patches=[[1.0, 2.0], [3.0]])


def test_save_under_a_file_names_the_problem(tmp_path):
    Z, P, _, _ = three_views(n=40, seed=12)
    model = SEAL(4, iterations=5, epochs=1, restarts=1, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SealFastError, match="a parent of it is a file"):
        model.save(tmp_path / "file" / "m.pt")
