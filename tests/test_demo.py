"""The demo's figure: clusters matched to classes by the Hungarian matching."""
import numpy as np
from PIL import Image

from seal_fast.data.sources import ArraySource
from seal_fast.demo import matched_order, write_figure


def test_matched_order_puts_the_matching_on_the_diagonal():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = np.array([7, 7, 3, 5, 5, 3, 3, 3, 9])  # cluster 7 ~ class 0, 5 ~ 1, 3 ~ 2, 9 unmatched
    table, _, clusters = matched_order(truth, labels)
    assert clusters.tolist() == [7, 5, 3, 9]
    assert np.diag(table[:3]).tolist() == [2, 2, 3] and table.sum() == 9


def test_figure_has_a_panel_per_method(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (30, 8, 8), dtype=np.uint8)
    truth = np.arange(30) % 3
    labels = {"A": (truth + 1) % 3, "B": rng.integers(0, 3, 30)}
    rows = {"A": {"acc": 100.0}, "B": {"acc": 40.0}}
    write_figure(tmp_path / "f.png", ArraySource(images, truth), labels, truth, rows, method="A")
    with Image.open(tmp_path / "f.png") as im:
        assert im.width > 400 and im.height > 2 * 60
