import random

import numpy as np
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


def test_cuda_states_for_other_devices_are_refused():
    state = get_random_state()
    state['cuda'] = [torch.zeros(16, dtype=torch.uint8)] * 64
    try:
        set_random_state(state)
    except ValueError as error:
        assert 'CUDA devices' in str(error)
    else:
        raise AssertionError('64 CUDA states were accepted')
