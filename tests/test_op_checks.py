"""`seal-fast info --check` (op_checks.self_test): every compiled op against its reference."""
import numpy as np

def test_self_test_passes_on_this_machine():
    from seal_fast import self_test

    rows = self_test()
    assert rows and all(r["ok"] is not False for r in rows), [r for r in rows if r["ok"] is False]
    assert {r["op"] for r in rows if r["device"] == "cpu"} >= {"cosine_topk", "patch_knn", "unrolled_linear_fit"} \
        or rows[0]["ok"] is None
    assert np.isfinite([r["max_error"] for r in rows if r["ok"]]).all()
