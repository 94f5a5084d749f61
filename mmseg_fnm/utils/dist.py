"""Distributed runs on machines without an accelerator."""
import contextlib
import datetime
import logging
import os
from typing import Any, Iterator, Union

import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

_TORCHRUN_ENV = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR',
                 'MASTER_PORT')


def _sync_bn_to_bn(node: Any) -> int:
    """Replace SyncBN norm layers in a model config by BN, in place."""
    count = 0
    if isinstance(node, dict):
        norm_type = node.get('type')
        if isinstance(norm_type, str) and norm_type.endswith('SyncBN'):
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _sync_bn_to_bn(value)
    return count


def setup_cpu_distributed(cfg: Union[Config, dict], launcher: str) -> bool:
    """Prepare a distributed run on CPU before the Runner is built.

    ``mmengine.dist.init_dist('pytorch')`` calls ``torch.cuda.set_device``,
    and ``Runner.wrap_model`` gives DDP ``device_ids=[LOCAL_RANK]``; both
    fail without CUDA.  On a CPU-only machine with ``launcher='pytorch'``
    this initialises the process group with the gloo backend (the Runner
    skips its own initialisation when a group exists) and makes DDP wrap
    the CPU model with ``device_ids=None``.  SyncBN, which only runs on
    GPUs, becomes BN (per-process statistics), with a warning.  With an
    accelerator, or without a launcher, it does nothing and mmengine's
    usual (NCCL) path stays untouched.

    Args:
        cfg (Config | dict): The config; ``model_wrapper_cfg`` is added or
            completed, ``model`` and ``sync_bn`` changed, in place.
        launcher (str): The job launcher ('none', 'pytorch', 'slurm',
            'mpi').

    Returns:
        bool: Whether a CPU process group is in use.
    """
    if launcher == 'none' or get_device() != 'cpu':
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs an accelerator (mmengine calls '
            'torch.cuda.set_device). On a CPU-only machine launch with '
            'torchrun and --launcher pytorch, e.g. '
            'tools/dist_train.sh CONFIG NUM_PROCESSES.')
    if not torch_dist.is_initialized():
        missing = [key for key in _TORCHRUN_ENV if key not in os.environ]
        if missing:
            raise RuntimeError(
                f'--launcher pytorch expects the environment set by torchrun '
                f'but {", ".join(missing)} is not set. Start the job with '
                'tools/dist_train.sh / tools/dist_test.sh or '
                '`python -m torch.distributed.run --nproc_per_node=N ...`.')
        kwargs = {}
        timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
        if timeout is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)

    num_sync_bn = _sync_bn_to_bn(cfg.get('model'))
    if cfg.pop('sync_bn', None) is not None:
        num_sync_bn += 1
    if num_sync_bn:
        print_log(
            'SyncBN only runs on GPUs: this CPU run uses BN instead, with '
            'batch statistics of each process.',
            logger='current',
            level=logging.WARNING)

    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        # Same arguments as the Runner's default DDP wrapper, minus the
        # CUDA device.
        cfg['model_wrapper_cfg'] = ConfigDict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    else:
        wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
        wrapper_type = wrapper_cfg['type']
        if isinstance(wrapper_type, str):
            wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
        # The Runner passes device_ids=[LOCAL_RANK] to DDP subclasses only.
        if isinstance(wrapper_type, type) and issubclass(
                wrapper_type, DistributedDataParallel):
            wrapper_cfg.setdefault('device_ids', None)
    return True


def end_distributed(synchronize: bool = True) -> None:
    """Destroy the default process group, after a barrier by default.

    A process that exits with a live gloo process group lets the C++
    runtime destroy the group during interpreter shutdown while its
    transport threads still run; the rank that exits first then aborts
    now and then with "terminate called without an active exception"
    (SIGABRT).  Destroying the group explicitly, once every rank has
    finished its collectives (the barrier), ends the threads in order.

    Args:
        synchronize (bool): Wait for every rank first.  Pass False on an
            error path: the other ranks may never reach the barrier.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    if synchronize:
        torch_dist.barrier()
    torch_dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(cfg: Union[Config, dict],
                        launcher: str) -> Iterator[bool]:
    """Run a tool's job in a process group that is ended cleanly.

    Enters with :func:`setup_cpu_distributed` (gloo on CPU-only
    machines; on GPUs the Runner initialises NCCL itself) and, on leaving,
    destroys the process group this session created (see
    :func:`end_distributed`), so no rank aborts at exit.  A group that
    existed before the session is left alone.

    Args:
        cfg (Config | dict): The config (see :func:`setup_cpu_distributed`).
        launcher (str): The job launcher.

    Yields:
        bool: Whether a CPU process group is in use.
    """
    owned = not (torch_dist.is_available() and torch_dist.is_initialized())
    try:
        yield setup_cpu_distributed(cfg, launcher)
    except BaseException:
        if owned:
            end_distributed(synchronize=False)
        raise
    if owned:
        end_distributed()
