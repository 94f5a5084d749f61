import socket

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.registry import MODEL_WRAPPERS

from mmseg_fnm.utils import distributed_session, setup_cpu_distributed

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


def _torchrun_env(monkeypatch):
    for key, value in dict(
            RANK='0',
            LOCAL_RANK='0',
            WORLD_SIZE='1',
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)


@cpu_only
def test_session_ends_the_group_it_created(monkeypatch):
    _torchrun_env(monkeypatch)
    with distributed_session(Config(), 'pytorch') as cpu_group:
        assert cpu_group is True
        assert torch_dist.is_initialized()
    # A live group at interpreter exit is what made ranks abort.
    assert not torch_dist.is_initialized()


@cpu_only
def test_session_ends_the_group_on_error_without_waiting(monkeypatch):
    _torchrun_env(monkeypatch)
    barriers = []
    monkeypatch.setattr(torch_dist, 'barrier', lambda: barriers.append(1))
    with pytest.raises(ZeroDivisionError):
        with distributed_session(Config(), 'pytorch'):
            1 / 0
    assert not torch_dist.is_initialized()
    assert barriers == []  # other ranks may never reach a barrier


@cpu_only
def test_session_leaves_an_existing_group_alone(monkeypatch):
    _torchrun_env(monkeypatch)
    torch_dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        with distributed_session(Config(), 'pytorch'):
            pass
        assert torch_dist.is_initialized()
    finally:
        torch_dist.destroy_process_group()


def test_session_without_launcher_is_a_no_op():
    with distributed_session(Config(), 'none') as cpu_group:
        assert cpu_group is False
    assert not torch_dist.is_initialized()
