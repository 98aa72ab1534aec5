"""The demo's figure: clusters matched to classes by the Hungarian matching."""
import numpy as np
from PIL import Image

from seal_fast.data.sources import ArraySource
from seal_fast.demo import write_figure
from seal_fast.metrics import matched_order


def test_matched_order_puts_the_matching_on_the_diagonal():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = np.array([7, 7, 3, 5, 5, 3, 3, 3, 9])  # cluster 7 ~ class 0, 5 ~ 1, 3 ~ 2, 9 unmatched
    table, _, clusters = matched_order(truth, labels)
    assert clusters.tolist() == [7, 5, 3, 9]
    assert np.diag(table[:3]).tolist() == [2, 2, 3] and table.sum() == 9


def test_figure_shows_each_cluster_and_each_methods_matrix(tmp_path):
    """Read the picture back: every thumbnail in a cluster's row is one of its members,
    and each method's matrix is shaded where its counts are (the diagonal for a perfect
    clustering), under a title with its ACC."""
    truth = np.arange(30) % 3
    images = np.stack([np.full((8, 8), 40 + 90 * c, np.uint8) for c in truth])  # a grey level per class
    labels = {"A": (truth + 1) % 3, "B": np.random.default_rng(0).integers(0, 3, 30)}
    rows = {"A": {"acc": 100.0}, "B": {"acc": 40.0}}
    layout = write_figure(tmp_path / "f.png", ArraySource(images, truth), labels, truth, rows, method="A")
    with Image.open(tmp_path / "f.png") as im:
        px = np.asarray(im.convert("RGB"))
    assert layout["grid"]["title"] == "A: members of each cluster (ACC 100.0)"
    assert [r["cluster"] for r in layout["grid"]["rows"]] == [1, 2, 0]  # in the order of the classes they match
    for row in layout["grid"]["rows"]:
        assert row["members"] and all(labels["A"][m] == row["cluster"] for m in row["members"])
        for x, m in zip(row["x"], row["members"]):
            centre = px[row["y"] + row["cell"] // 2, x + row["cell"] // 2]
            assert tuple(centre) == (40 + 90 * truth[m],) * 3  # the member's own image
    assert set(layout["matrices"]) == {"A", "B"}
    assert layout["matrices"]["A"]["title"].startswith("A: ACC 100.0")
    assert layout["matrices"]["B"]["title"].startswith("B: ACC 40.0")
    for name, mat in layout["matrices"].items():
        table = np.array(mat["table"])
        for r in range(table.shape[0]):
            for c in range(table.shape[1]):
                # a cell's left edge, clear of the count written in it: white for 0, blue for the peak
                blue = px[mat["y"] + r * mat["cell"] + 2, mat["x"] + c * mat["cell"] + 1]
                assert (tuple(blue) == (255, 255, 255)) == (table[r, c] == 0), (name, r, c)
    assert (np.diag(np.array(layout["matrices"]["A"]["table"])) == 10).all()
