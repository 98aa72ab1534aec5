"""Model files (models/persistence.py): what save writes, what load refuses."""
import os

import pytest
import torch

from seal_fast import TURTLE, load_model
from seal_fast.errors import SealFastError

from conftest import blobs, cli, one_line_error

def test_model_with_nan_or_altered_state(tmp_path):
    Z, _ = blobs(n=80, k=3)
    TURTLE(3, iterations=5, device="cpu").fit(Z).save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state"]["encoder"]["v.0"][0, 0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(SealFastError, match="NaN or inf"):
        load_model(tmp_path / "nan.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state"]["feature_dims_"] = [7]
    torch.save(payload, tmp_path / "dims.pt")
    with pytest.raises(SealFastError, match="damaged or altered"):
        load_model(tmp_path / "dims.pt")
    for change in ({"method": "dbscan"}, {"params": {**payload["params"], "n_init": 3}},
                   {"params": {**payload["params"], "iterations": -1}}, {"state": {}}):
        torch.save({**payload, **change}, tmp_path / "t.pt")
        with pytest.raises(SealFastError):
            load_model(tmp_path / "t.pt")


def test_predict_refuses_junk_model_files(tmp_path, patch_store):
    (tmp_path / "junk.pt").write_bytes(os.urandom(300))
    torch.save({"weights": torch.ones(3)}, tmp_path / "foreign.pt")
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    for name in ("junk.pt", "foreign.pt", "evil.pt"):
        rc, _, err = cli("predict", tmp_path / name, patch_store.path, "--out", tmp_path / "p.npy")
        one_line_error(rc, err, "not a seal_fast model file")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "p.npy").exists()
