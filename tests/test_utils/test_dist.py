import socket

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.registry import MODEL_WRAPPERS

from mmseg_fnm.utils import setup_cpu_distributed

cpu_only = pytest.mark.skipif(
    get_device() != 'cpu', reason='the CPU path is taken only without GPUs')


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_no_launcher_changes_nothing():
    cfg = Config(dict(model=dict(type='M')))
    assert setup_cpu_distributed(cfg, 'none') is False
    assert 'model_wrapper_cfg' not in cfg
    assert not torch_dist.is_initialized()


@cpu_only
def test_launchers_that_need_cuda_fail_clearly():
    with pytest.raises(RuntimeError, match='--launcher slurm needs an acc'):
        setup_cpu_distributed(Config(), 'slurm')


@cpu_only
def test_pytorch_launcher_without_torchrun_env(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='torchrun'):
        setup_cpu_distributed(Config(), 'pytorch')
    assert not torch_dist.is_initialized()


@cpu_only
def test_gloo_group_and_cpu_ddp(monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    cfg = Config(
        dict(
            find_unused_parameters=True,
            sync_bn='torch',
            model=dict(
                backbone=dict(norm_cfg=dict(type='SyncBN')),
                heads=[
                    dict(norm_cfg=dict(type='MMSyncBN')),
                    dict(norm_cfg=dict(type='GN'))
                ])))
    custom = Config(
        dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel')))
    try:
        assert setup_cpu_distributed(cfg, 'pytorch') is True
        assert torch_dist.get_backend() == 'gloo'
        assert cfg.model_wrapper_cfg.device_ids is None
        assert cfg.model_wrapper_cfg.find_unused_parameters is True
        # SyncBN raises on CPU tensors.
        assert cfg.model.backbone.norm_cfg.type == 'BN'
        assert [h.norm_cfg.type for h in cfg.model.heads] == ['BN', 'GN']
        assert 'sync_bn' not in cfg
        # An existing group is reused; the config's wrapper is completed.
        assert setup_cpu_distributed(custom, 'pytorch') is True
        assert custom.model_wrapper_cfg.device_ids is None
        # The Runner passes device_ids=[LOCAL_RANK]; the config must win.
        model = MODEL_WRAPPERS.build(
            cfg.model_wrapper_cfg,
            default_args=dict(module=torch.nn.Linear(2, 1), device_ids=[0]))
        assert model.device_ids is None
        model(torch.ones(3, 2)).sum().backward()
        assert model.module.weight.grad is not None
    finally:
        torch_dist.destroy_process_group()
