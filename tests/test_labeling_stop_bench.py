"""bench/labeling_stop.py's replay of the stopping rule on recorded windows: the
numbers behind the README's "Stopping rule" table and the default it chose."""
import json

from conftest import load_bench


def _windows(changed, accs):
    return [{"iteration": 100 * (i + 1), "seconds": 10.0 * (i + 1), "changed": c, "acc": a}
            for i, (c, a) in enumerate(zip(changed, accs))]


def test_stop_point_needs_patience_quiet_windows_in_a_row():
    bench = load_bench("labeling_stop")
    w = _windows([1.0, 0.01, 0.03, 0.01, 0.02, 0.0, 0.0], [50, 60, 61, 62, 63, 64, 65])
    assert bench.stop_point(w, 0.02, 3)["iteration"] == 600  # the 0.03 at 300 resets the count
    assert bench.stop_point(w, 0.05, 3)["iteration"] == 400
    assert bench.stop_point(w, 0.001, 3)["iteration"] == 700  # never quiet enough: the last window


def test_summary_groups_the_acc_change_by_store_and_method(tmp_path):
    bench = load_bench("labeling_stop")
    rows = [{"store": "feats/a-lite0", "method": "turtle", "seed": 0,
             "windows": _windows([1.0, 0.0, 0.0, 0.0, 0.0], [50, 60, 61, 62, 70])},
            {"store": "feats/b-lite0/", "method": "seal", "seed": 1,
             "windows": _windows([1.0, 0.1, 0.0, 0.0, 0.0], [50, 60, 61, 62, 62])}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = bench.summary(str(path), [0.02], 3)
    assert "| a-lite0 | turtle | 0 | 500 | 70.00 | 50 | 400, 62.00, 40 |" in text
    assert "| b-lite0 | seal | 1 | 500 | 62.00 | 50 | 500, 62.00, 50 |" in text
    assert "a-lite0 turtle mean -8.00" in text and "b-lite0 seal mean +0.00" in text
    assert "all mean -4.00 (min -8.00, max +0.00, 2 runs)" in text
