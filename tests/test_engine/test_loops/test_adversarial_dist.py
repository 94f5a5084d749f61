"""2-process (gloo) adversarial training with tools/dist_train.sh."""
import os.path as osp

import pytest
import torch


@pytest.mark.multiprocess
def test_fnm_training_on_two_ranks_keeps_them_identical(
        demo_cfg, tmp_path, dist_train):
    cfg = demo_cfg('fnm', max_iters=3, batch_size=2)
    cfg.custom_imports.imports.append('rank_dump_hook')
    cfg.custom_hooks = [dict(type='DumpRankWeightsHook')]
    cfg_file = str(tmp_path / 'fnm_dist.py')
    cfg.dump(cfg_file)
    ranks = dist_train(cfg_file, cfg.work_dir)
    for dump in ranks:
        assert dump['world_size'] == 2
        assert dump['wrapper'] == 'MMDistributedDataParallel'
    for name, param in ranks[0]['params'].items():
        assert torch.equal(param, ranks[1]['params'][name]), name
    # different data on each rank: equal weights come from synchronised
    # gradients of the real loss, not from identical inputs
    assert any(not torch.equal(b, ranks[1]['buffers'][n])
               for n, b in ranks[0]['buffers'].items()
               if n.endswith('running_mean'))
    assert osp.exists(osp.join(cfg.work_dir, 'iter_3.pth'))
