import numpy as np
import pytest

from seal_fast import load_model
from seal_fast.errors import SealFastError
from seal_fast.metrics import cluster_accuracy
from seal_fast.models.satc import SATC

from conftest import three_views


def test_trimodal_recovers_labels():
    Z, P, T, y = three_views()
    model = SATC(4, max_epochs=30, patience=5, distill_batch_size=128, min_steps_per_epoch=20, text_threshold=0.0,
                 restarts=1, patch_neighbors=4, device="cpu").fit(
        [Z], patches=P, text=T)
    assert model.text_used_ and model.fit_details_["modalities"] == ["visual", "spatial", "text"]
    assert cluster_accuracy(y, model.labels_) >= 0.95


def test_selector_both_ways():
    Z, P, T, y = three_views(n=300)
    tight = SATC(4, max_epochs=1, min_steps_per_epoch=1, patch_neighbors=4, device="cpu", text_threshold=0.33).fit([Z], patches=P, text=T)
    assert tight.text_compactness_ < 0.33 and not tight.text_used_  # text in 4 tight clumps: not used
    spread = np.random.default_rng(1).normal(size=T.shape).astype(np.float32)
    loose = SATC(4, max_epochs=1, min_steps_per_epoch=1, patch_neighbors=4, device="cpu", text_threshold=0.33).fit([Z], patches=P, text=spread)
    assert loose.text_compactness_ > 0.33 and loose.text_used_


def test_without_text_runs_visual_spatial_and_saves(tmp_path):
    Z, P, _, y = three_views(n=300, seed=2)
    model = SATC(4, max_epochs=30, patience=5, distill_batch_size=128, min_steps_per_epoch=20, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    assert not model.text_used_ and model.text_compactness_ is None
    assert cluster_accuracy(y, model.labels_) >= 0.9
    details = model.fit_details_
    assert details["epochs_run"] <= 30 and 0 <= details["best_epoch"] < details["epochs_run"]
    model.save(tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    np.testing.assert_array_equal(again.predict([Z]), model.predict([Z]))


def test_early_stopping_stops_on_the_loss():
    Z, P, _, _ = three_views(n=200, seed=3)
    model = SATC(4, max_epochs=200, patience=2, min_delta=10.0, min_steps_per_epoch=1, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    # no epoch can improve by 10: stops after 1 + patience epochs and keeps the first
    assert model.fit_details_["stopped_early"] and model.fit_details_["epochs_run"] == 3
    assert model.fit_details_["best_epoch"] == 0


def test_bad_inputs():
    Z, P, T, _ = three_views(n=100)
    with pytest.raises(SealFastError, match="text features: 99 rows"):
        SATC(4, max_epochs=1, patch_neighbors=4).fit([Z], patches=P, text=T[:99])
    with pytest.raises(SealFastError, match="patch features"):
        SATC(4, max_epochs=1).fit([Z])
    with pytest.raises(SealFastError, match="one visual space"):
        SATC(4, max_epochs=1).fit([Z, Z], patches=P)
    with pytest.raises(SealFastError, match="n_neighbors must be"):
        SATC(4, max_epochs=1, n_neighbors=2.5, patch_neighbors=4).fit([Z], patches=P)
