import os
import os.path as osp
import time

import pytest
import torch

from mmseg_fnm.utils import UnsafeCheckpointError
from mmseg_fnm.utils.testing import write_tiny_seg_config


def test_test_tool_evaluates_a_trained_checkpoint(tmp_path, tiny_data,
                                                  tools_train, tools_test,
                                                  one_thread):
    work_dir = str(tmp_path / 'work')
    cfg_file = write_tiny_seg_config(
        str(tmp_path / 'tiny.py'), tiny_data, work_dir, max_iters=2)
    tools_train.main(
        [cfg_file, '--cfg-options', f'experiment_name=t_{time.time_ns()}'])
    checkpoint = osp.join(work_dir, 'iter_2.pth')

    out_dir = str(tmp_path / 'pred')
    metrics = tools_test.main([
        cfg_file, checkpoint, '--work-dir',
        str(tmp_path / 'test'), '--out', out_dir, '--cfg-options',
        f'experiment_name=e_{time.time_ns()}'
    ])
    assert 0 <= metrics['mIoU'] <= 100
    # --out writes one prediction per test image.
    assert len([f for f in os.listdir(out_dir) if f.endswith('.png')]) == 2


def test_test_tool_refuses_unsafe_checkpoints(tmp_path, tiny_data, tools_test):
    cfg_file = write_tiny_seg_config(
        str(tmp_path / 'tiny.py'), tiny_data, str(tmp_path / 'work'))
    unsafe = str(tmp_path / 'unsafe.pth')
    torch.save({'state_dict': {}, 'meta': {'fn': print}}, unsafe)
    with pytest.raises(UnsafeCheckpointError, match='convert_checkpoint.py'):
        tools_test.main([
            cfg_file, unsafe, '--cfg-options',
            f'experiment_name=u_{time.time_ns()}'
        ])
