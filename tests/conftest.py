import os
from pathlib import Path

import pytest
import torch

# `../shared/data` beside the checkout holds the real GLUE, SQuAD and Wikipedia files.
SHARED_DATA = Path(os.environ.get("NASBERT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set NASBERT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_zoo(tmp_path_factory):
    """`nasbert compress` installs into the local zoo by default: never into the user's own."""
    saved = os.environ.get("NASBERT_HOME")
    os.environ["NASBERT_HOME"] = str(tmp_path_factory.mktemp("zoo-home"))
    yield
    if saved is None:
        os.environ.pop("NASBERT_HOME", None)
    else:
        os.environ["NASBERT_HOME"] = saved


def random_inputs(vocab_size, batch=3, length=12, seed=0):
    """Token ids with a padded tail on every row but the first (so masks matter)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, batch):
        attention_mask[row, length - 2 * row :] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return input_ids, attention_mask
