"""The one door (latentcc.plumbing.validate): one rule per kind of argument, one message shape."""

import numpy as np
import pytest
import torch

from latentcc.plumbing.errors import LatentccError
from latentcc.plumbing.validate import as_labels, check_choice, check_float, check_int


@pytest.mark.parametrize(
    "y",
    [
        [2, 0, 1, 0],
        np.array([2, 0, 1, 0], np.int32),
        np.array([2.0, 0.0, 1.0, 0.0]),
        torch.tensor([2.0, 0, 1, 0]),
    ],
)
def test_labels_integers_and_whole_floats_are_the_same_labels(y):
    out = as_labels(y, 4, "f")
    assert out.dtype == np.int64 and out.tolist() == [2, 0, 1, 0]


def test_labels_rule_and_messages():
    assert as_labels([True, False], 2, "f").tolist() == [1, 0]
    assert as_labels([-3, 7], None, "f").tolist() == [-3, 7]  # any ids unless they index a table
    for bad in ([0.5, 1.0], [0.0, np.nan], [0.0, np.inf], ["a", "b"]):
        with pytest.raises(
            LatentccError, match=r"'y' parameter of f must be integer class labels \(or floats"
        ):
            as_labels(bad, 2, "f", "y")
    with pytest.raises(
        LatentccError, match=r"'y' parameter of f must be labels in \[0, 2\*\*31\).*\[-3, 7\]"
    ):
        as_labels([-3, 7], None, "f", "y", non_negative=True)
    with pytest.raises(LatentccError, match=r"a 1-D array of 3 labels, one per row"):
        as_labels([0, 1], 3, "f")
    with pytest.raises(LatentccError, match=r"at least 2 distinct classes.*1 distinct"):
        as_labels([4, 4], 2, "f", min_classes=2)
    with pytest.raises(LatentccError, match=r"non-empty 1-D"):
        as_labels([], None, "f")


def test_scalars():
    assert check_int(np.int32(3), "k", "f", 1) == 3 and type(check_int(np.int64(3), "k", "f", 1)) is int
    for bad in (True, 2.0, 0, "3"):
        with pytest.raises(LatentccError, match=r"The 'k' parameter of f must be an int >= 1\. Got"):
            check_int(bad, "k", "f", 1)
    with pytest.raises(LatentccError, match=r"an int with 1 <= k <= 5\. Got 6 instead\. Fix: smaller"):
        check_int(6, "k", "f", 1, 5, "Fix: smaller.")
    assert check_float(np.float32(0.5), "r", "f", positive=True) == 0.5
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(LatentccError, match=r"'r' parameter of f must be a finite float > 0"):
            check_float(bad, "r", "f", positive=True)
    assert check_choice("b", "m", "f", ("a", "b")) == "b"
    with pytest.raises(LatentccError, match=r"'m' parameter of f must be one of \['a', 'b'\]\. Got 'c'"):
        check_choice("c", "m", "f", ("a", "b"))
