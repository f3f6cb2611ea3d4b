"""`co2 train`'s resume state is read by checkpoints.read_training_state: weights_only, one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from co2cli.checkpoints import read_training_state
from co2cli.errors import Co2Error
from co2cli.train import load_state


def test_a_saved_state_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "s.train_state.pt"
    torch.save({"iteration": 7, "model": {"w": torch.arange(3.0)}}, path)
    state = read_training_state(path)
    assert state["iteration"] == 7 and torch.equal(state["model"]["w"], torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("content", ["junk", "code"])
def test_damaged_or_unsafe_state_is_one_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "s.train_state.pt"
    if content == "junk":
        path.write_bytes(b"not a torch file")
    else:  # a pickle that needs more than weights (an arbitrary class): refused by weights_only=True
        torch.save({"x": Path("elsewhere")}, path)
    with pytest.raises(Co2Error, match="unreadable .*delete it or pass --fresh"):
        load_state(path)
