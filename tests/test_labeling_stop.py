"""The labeling's label-free stopping rule: it watches a fixed probe subset every
`stop_window` iterations and stops after `stop_patience` quiet windows in a row;
watching never changes the search, so a stopped run is the prefix of a full one."""
import numpy as np
import torch

from seal_fast import TURTLE
from seal_fast.labeling import LabelingConfig, human_labeling


def _spaces(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 12)) * 3
    return [torch.from_numpy((centres[y] + rng.normal(size=(n, 12))).astype(np.float32))]


def _quiet_run_of(trace, tol, patience):
    settled = 0
    for done, changed, _ in trace:
        settled = settled + 1 if changed <= tol else 0
        if settled >= patience:
            return done
    return None


def test_no_rule_runs_every_iteration_and_traces_each_window():
    Zs = _spaces()
    result = human_labeling(Zs, 3, LabelingConfig(iterations=60, stop_window=10, stop_tol=0.0, batch_size=100))
    assert result.iterations == 60 and not result.stopped_early
    assert [t[0] for t in result.trace] == [10, 20, 30, 40, 50, 60]
    assert 0.0 < result.trace[0][1] < 1.0  # the first window is compared with the random start's labels
    assert all(0.0 <= t[1] <= 1.0 for t in result.trace)


def test_stopped_run_is_the_prefix_of_the_full_run():
    Zs = _spaces(1)
    full_labels = {}
    full = human_labeling(Zs, 3, LabelingConfig(iterations=200, stop_window=10, stop_tol=0.0, batch_size=100),
                          seed=3, on_window=lambda done, enc: full_labels.setdefault(done, enc.predict(Zs)))
    tol = sorted(t[1] for t in full.trace[1:])[len(full.trace) // 2]  # quiet windows happen, but not all
    expected = _quiet_run_of(full.trace, tol, 2)
    assert expected is not None and expected < 200
    stopped = human_labeling(Zs, 3, LabelingConfig(iterations=200, stop_window=10, stop_tol=tol, stop_patience=2,
                                                   batch_size=100), seed=3)
    assert stopped.stopped_early and stopped.iterations == expected
    assert stopped.trace == full.trace[:len(stopped.trace)]
    torch.testing.assert_close(stopped.encoder.predict(Zs), full_labels[expected])


def test_turtle_default_rule_and_its_record():
    Zs = _spaces(2)
    assert TURTLE(3).stop_tol == 0.02 and TURTLE(3).stop_patience == 3  # on by default
    quick = TURTLE(3, iterations=400, stop_window=20, stop_tol=1.0, seed=0).fit([Zs[0].numpy()])
    assert quick.n_iter_ == 60  # every window is "quiet" with tol 1: stops after 3 windows
    fixed = TURTLE(3, iterations=90, stop_window=20, stop_tol=0.0, seed=0).fit([Zs[0].numpy()])
    assert fixed.n_iter_ == 90


def test_a_kept_warm_start_is_settled_from_the_first_window():
    Zs = _spaces(3)
    start = TURTLE(3, iterations=300, stop_window=100, seed=0).fit([Zs[0].numpy()]).labels_
    config = LabelingConfig(iterations=400, stop_window=10, stop_tol=0.02, stop_patience=3, batch_size=100)
    warm = human_labeling(Zs, 3, config, seed=1, init_labels=torch.from_numpy(start))
    assert warm.init_agreement > 0.98
    # every window, the first included, is compared with the labels before it: from a
    # partition the search keeps, `patience` windows are enough
    assert warm.trace[0][1] <= 0.02 and warm.stopped_early and warm.iterations == 30
