"""The model's own tests (the pipeline's test stage runs them before anything is built)."""

from __future__ import annotations

import model


def test_held_out_accuracy_is_good_enough():
    data = model.split(model.load(model.source()))
    fitted = model.fit(data.X_train, data.y_train)
    assert model.held_out_metric(fitted, data) >= 0.9


def test_split_is_fixed_and_disjoint():
    frame = model.load(model.source())
    first, second = model.split(frame), model.split(frame)
    assert list(first.X_test.index) == list(second.X_test.index)
    assert not set(first.X_train.index) & set(first.X_test.index)
