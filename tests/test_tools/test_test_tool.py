import os
import os.path as osp
import time

import pytest
import torch

from mmseg_fnm.utils import UnsafeCheckpointError


def test_test_tool_evaluates_a_trained_checkpoint(tmp_path, demo_cfg, dump_cfg,
                                                  demo_data_root, tools_train,
                                                  tools_test, one_thread):
    cfg = demo_cfg('basic', max_iters=2, batch_size=2, validate=False)
    work_dir = cfg.work_dir
    cfg_file = dump_cfg(cfg)
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
    test_images = os.listdir(osp.join(demo_data_root, 'img_dir', 'val'))
    assert sorted(f for f in os.listdir(out_dir)
                  if f.endswith('.png')) == sorted(test_images)


def test_test_tool_refuses_unsafe_checkpoints(tmp_path, demo_cfg, dump_cfg,
                                              tools_test):
    cfg_file = dump_cfg(demo_cfg('basic'))
    unsafe = str(tmp_path / 'unsafe.pth')
    torch.save({'state_dict': {}, 'meta': {'fn': print}}, unsafe)
    with pytest.raises(UnsafeCheckpointError, match='convert_checkpoint.py'):
        tools_test.main([
            cfg_file, unsafe, '--cfg-options',
            f'experiment_name=u_{time.time_ns()}'
        ])
