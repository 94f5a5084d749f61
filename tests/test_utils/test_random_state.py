import random

import numpy as np
import pytest
import torch

from mmseg_fnm.utils import get_random_state, set_random_state


def _draw():
    return (random.random(), np.random.rand(3).tolist(),
            np.random.randn(1).tolist(), torch.rand(3).tolist())


def test_restored_states_draw_the_same_numbers(tmp_path):
    np.random.randn()  # a cached Gaussian is part of numpy's state
    state = get_random_state()
    # The state survives a checkpoint read with weights_only=True.
    torch.save(state, tmp_path / 'state.pth')
    loaded = torch.load(tmp_path / 'state.pth', weights_only=True)
    expected = _draw()
    assert _draw() != expected
    set_random_state(loaded)
    assert _draw() == expected


def test_cuda_state_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip('needs a machine without CUDA')
    state = get_random_state()
    assert state['cuda'] == []
    state['cuda'] = [torch.zeros(16, dtype=torch.uint8)]
    with pytest.raises(ValueError, match='CUDA is not available'):
        set_random_state(state)
