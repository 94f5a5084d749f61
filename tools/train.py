# Train a segmentor with mmseg_fnm. Same command line as mmseg's
# tools/train.py; besides, it loads the plugin, makes checkpoints safe to
# load with torch.load(weights_only=True) and runs distributed on CPU.
import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import mmseg_fnm  # noqa: F401  (registers the plugin's components)
from mmseg_fnm.utils import (checkpoint_to_resume, distributed_session,
                             ensure_hook, ensure_safe_checkpoint_hook)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # When using PyTorch version >= 2.0.0, the `torch.distributed.launch`
    # will pass the `--local-rank` parameter to `tools/train.py` instead
    # of `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)

    return args


def build_cfg(args):
    """Load the config and apply the command-line options."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        # update configs according to CLI args if args.work_dir is not None
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        # use config filename as default work_dir if cfg.work_dir is None
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # enable automatic-mixed-precision training
    if args.amp is True:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    # resume training
    cfg.resume = args.resume
    # mmengine writes last_checkpoint in place: after a kill during that
    # write, go on from the newest checkpoint instead of failing.
    if args.resume and cfg.get('load_from') is None:
        cfg.load_from = checkpoint_to_resume(cfg.work_dir)

    # Checkpoints must load with weights_only=True, also for configs that do
    # not inherit configs/_base_/default_runtime.py.
    if ensure_safe_checkpoint_hook(cfg):
        print_log(
            'Added SafeCheckpointHook to default_hooks, so that checkpoints '
            'load with torch.load(weights_only=True).',
            logger='current',
            level=logging.INFO)
    # ... and a resumed training goes on with the random streams it left.
    if ensure_hook(cfg, 'RandomStateHook', 'random_state'):
        print_log(
            'Added RandomStateHook to default_hooks, so that --resume goes '
            'on with the random generators the checkpoint was written with.',
            logger='current',
            level=logging.INFO)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)

    # On CPU-only machines: gloo process group and CPU DDP. Either way the
    # process group ends cleanly when training ends.
    with distributed_session(cfg, args.launcher):
        # build the runner from config
        if 'runner_type' not in cfg:
            # build the default runner
            runner = Runner.from_cfg(cfg)
        else:
            # build customized runner from the registry
            # if 'runner_type' is set in the cfg
            runner = RUNNERS.build(cfg)

        # start training
        runner.train()
    return runner


if __name__ == '__main__':
    main()
