"""Estimator parameters: each declared once beside its field (models/base.py: param), checked
before any work, and renamed ones refused by their old names with the new one."""
import pytest

from seal_fast import KMeans, SATC, SEAL, TURTLE
from seal_fast.errors import SealFastError

from conftest import blobs

@pytest.mark.parametrize("cls,param,value,message", [
    (TURTLE, "iterations", 0, "iterations must be an integer >= 1"),
    (TURTLE, "iterations", "10", r"iterations must be an integer >= 1 \(at most 1,000,000,000\), got '10'"),
    (SEAL, "epochs", -2, "epochs must be an integer >= 1"),
    (KMeans, "n_init", 1.5, "n_init must be an integer"),
    (TURTLE, "seed", 2**64, "seed must be an integer in [0, 9223372036854775807]"),
    (TURTLE, "outer_lr", float("nan"), "outer_lr must be a finite number > 0.0"),
    (SEAL, "level", "pixel", "level must be one of"),
    (TURTLE, "backend", "fast", "backend must be one of"),
])
def test_api_parameters_are_checked_before_work(cls, param, value, message):
    Z, _ = blobs(n=60, k=3)
    with pytest.raises(SealFastError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cls(3, device="cpu", **{param: value}).fit(Z)


@pytest.mark.parametrize("cls,old,new", [(TURTLE, "batch_size", "labeling_batch_size"),
                                         (SEAL, "batch_size", "distill_batch_size"),
                                         (SATC, "batch_size", "distill_batch_size"),
                                         (SATC, "epochs", "max_epochs")])
def test_renamed_parameters_are_refused_by_their_old_name(cls, old, new):
    with pytest.raises(SealFastError, match=f"{cls.__name__}: {old} is now {new}"):
        cls(3, **{old: 64})
    with pytest.raises(SealFastError, match=f"{old} is now {new}"):
        cls(3).set_params(**{old: 64})
    assert cls(3, **{new: 64}).get_params()[new] == 64 and old not in cls(3).get_params()


def test_one_name_one_meaning_across_the_methods():
    """A parameter two methods share is declared once (the same field, so the same
    default and check); SEAL's epochs are all run, SATC's are a bound of another name."""
    seal, turtle, satc = (set(c.param_names()) for c in (SEAL, TURTLE, SATC))
    assert "labeling_batch_size" in seal & turtle and "distill_batch_size" in seal & satc
    assert "batch_size" not in seal | turtle | satc
    assert "epochs" in seal and "epochs" not in satc and "max_epochs" in satc
    for name in seal & turtle:
        assert SEAL.param_field(name).default == TURTLE.param_field(name).default, name
    for name in seal & satc - {"restarts"}:  # restarts: SATC keeps one restart of 5, SEAL labels over 3
        assert SEAL.param_field(name).default == SATC.param_field(name).default, name


def test_old_model_files_load_under_the_new_names(tmp_path):
    import torch

    Z, _ = blobs(n=60, k=3)
    TURTLE(3, iterations=5, labeling_batch_size=32, device="cpu").fit(Z).save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["params"]["batch_size"] = payload["params"].pop("labeling_batch_size")  # as the older version wrote
    torch.save(payload, tmp_path / "old.pt")
    from seal_fast import load_model

    model = load_model(tmp_path / "old.pt")
    assert model.labeling_batch_size == 32
