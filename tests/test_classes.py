"""Shipped class-name lists are in the order the models' logits use."""

from __future__ import annotations

import numpy as np

from co2cli import classes
from tests.shared_paths import SHARED, THUMOS_ANNOTATIONS, need


def test_kinetics_order_matches_deepmind_label_map() -> None:
    reference = need(SHARED / "data" / "kinetics400_labels.txt").read_text().splitlines()
    names = classes.kinetics400()
    assert len(names) == 400 and len(set(names)) == 400
    assert names == reference


def test_thumos_order_matches_classlist() -> None:
    classlist = np.load(need(THUMOS_ANNOTATIONS / "classlist.npy"))
    assert classes.thumos14() == [c.decode() for c in classlist]
