import pytest
import torch
from mmengine.model import BaseTTAModel
from torch import nn

from mmseg_fnm.utils.checkpoint_match import (CheckpointMismatchError,
                                              check_state_dict,
                                              state_dict_mismatch)


class _Net(nn.Sequential):

    def test_step(self, data):  # what BaseTTAModel asks of its module
        return self(data)


def small_model(width=4):
    return _Net(
        nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.Conv2d(width, 2, 1))


def test_a_matching_checkpoint_passes():
    model = small_model()
    state = model.state_dict()
    check_state_dict(model, dict(state_dict=state, meta={}))
    # mmengine strips "module." (DDP checkpoints); old BN checkpoints lack
    # num_batches_tracked, which torch fills in.
    old = {f'module.{k}': v for k, v in state.items()}
    del old['module.1.num_batches_tracked']
    check_state_dict(model, old)
    model.load_state_dict(state)


class _TTAModel(BaseTTAModel):

    def merge_preds(self, data_samples_list):
        return data_samples_list


def test_test_time_augmentation_models_are_unwrapped():
    # mmengine's loader loads into the TTA model's module
    model = small_model()
    check_state_dict(_TTAModel(module=model), model.state_dict())


def test_each_kind_of_mismatch_is_named():
    state = small_model(width=8).state_dict()
    del state['2.bias']
    state['3.weight'] = torch.zeros(1)
    mismatch = state_dict_mismatch(small_model(), state)
    assert mismatch['missing'] == ['2.bias']
    assert mismatch['unexpected'] == ['3.weight']
    assert mismatch['shape'][0] == \
        '0.weight: checkpoint (8, 3, 3, 3) vs model (4, 3, 3, 3)'
    with pytest.raises(CheckpointMismatchError) as info:
        check_state_dict(
            small_model(),
            dict(state_dict=state),
            filename='ckpt.pth',
            config='cfg.py',
            max_keys=2)
    message = str(info.value)
    assert message.startswith('The checkpoint ckpt.pth does not match the '
                              'model of the config cfg.py')
    assert '1 weights of the model missing from the checkpoint: 2.bias' \
        in message
    assert '1 weights in the checkpoint that the model lacks: 3.weight' \
        in message
    # 0.weight, 0.bias, 1.* and 2.weight differ: 2 named, the rest counted
    assert '7 weights with another shape: 0.weight' in message
    assert '(5 more)' in message


def test_not_a_checkpoint():
    with pytest.raises(CheckpointMismatchError, match='must be a dict'):
        check_state_dict(small_model(), [1, 2])
