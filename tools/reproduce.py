# Reproduce the paper's comparison (figure 3a/3b) with several seeds: train
# the five models (basic, FGSM eps 0.03, random FGSM eps ~ U(0, 0.03), BIM
# alpha 0.01 eps 0.03 N 3, FNM) and FNM with a capped radius, with the same
# schedule and seeds; sweep FGSM and BIM-10 (alpha 0.004) over radii 0 to
# 0.04; summarise mean +- std over the seeds.
#
#   python tools/reproduce.py                     # demo_shapes on CPU, 3 seeds
#   python tools/reproduce.py --dataset demo_textures   # real textures, CPU
#   python tools/reproduce.py --quick             # a short version (minutes)
#   python tools/reproduce.py --dataset cityscapes --launcher pytorch --gpus 8
#   python tools/reproduce.py --dataset voc --launcher slurm --gpus 8 \
#       --partition PARTITION
#
# Writes into --work-dir (default work_dirs/reproduce/<dataset>[_quick]):
#   configs/            the config of every run (model, seed, options)
#   <model>/seed_<s>/   the run's checkpoints, logs, train.json (wall-clock
#                       training time), robustness.json
#   summary.json        mean and std over seeds of mIoU per attack and
#                       radius, training time, FNM training radius
#   summary.md          the same as markdown tables
#   figure3a_fgsm.png, figure3b_bim.png   mean curves with +-std bands
#   fnm_radius.png      FNM's training radius (adv/eps_mean) per iteration
# A run whose checkpoint and robustness.json exist is skipped, so an
# interrupted reproduction continues where it stopped; --force redoes runs.
import argparse
import functools
import gc
import hashlib
import importlib.util
import json
import os
import os.path as osp
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmseg.registry import DATASETS as DATASET_REGISTRY

from mmseg_fnm.datasets.synthetic import prepare_generated_dataset
from mmseg_fnm.engine.loops.robustness_loop import DEFAULT_EPSILONS
from mmseg_fnm.evaluation.robustness_metric import CLEAN, WORST, format_eps
from mmseg_fnm.visualization import plot_mean_std_curves

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO_ROOT, 'tools')

#: Config files per data set: <dir>/<prefix>_<model>.py.
DATASETS = {
    'demo': ('configs/demo', 'pspnet_r18_demo'),
    'demo_textures': ('configs/demo', 'pspnet_r18_textures'),
    'cityscapes':
    ('configs/cityscapes', 'pspnet_preact-r50-d8_8xb2-80k_cityscapes-712x712'),
    'voc': ('configs/voc', 'pspnet_preact-r50-d8_8xb2-40k_voc12aug-472x472'),
}
#: The data sets generated on first use, and their folder names.
GENERATED_DATA = {'demo': 'demo_shapes', 'demo_textures': 'demo_textures'}
#: Where to get the data sets that are not generated (paper, 4.1).
DATA_HELP = {
    'cityscapes':
    'Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip '
    'from https://www.cityscapes-dataset.com/downloads/ (free '
    'registration), unpack both into data/cityscapes and write the '
    'training label maps with mmseg\'s converter: python '
    'tools/dataset_converters/cityscapes.py data/cityscapes --nproc 8.',
    'voc':
    'Download VOCtrainval_11-May-2012.tar from '
    'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and the SBD '
    'augmentation (benchmark.tgz) from http://www.eecs.berkeley.edu/'
    'Research/Projects/CS/vision/grouping/semantic_contours/, unpack them '
    'into data/VOCdevkit and data/VOCdevkit/VOCaug, and write '
    'SegmentationClassAug and aug.txt with mmseg\'s converter: python '
    'tools/dataset_converters/voc_aug.py data/VOCdevkit '
    'data/VOCdevkit/VOCaug --nproc 8.',
}
CONVERTERS = (' The converters are in the mmsegmentation repository and in '
              'the pip package\'s mmseg/.mim/tools; see mmseg\'s '
              'docs/en/user_guides/2_dataset_prepare.md.')
#: The paper's models (section 4.1), named as the configs' suffixes.
PAPER_MODELS = ('basic', 'fgsm', 'rfgsm', 'bim3', 'fnm')
#: ``fnm_cap<R>``: the FNM config with ``train_cfg.attack.max_eps=R``.
CAPPED_FNM = re.compile(r'^fnm_cap(\d*\.?\d+)$')
DEFAULT_MODELS = PAPER_MODELS + ('fnm_cap0.03', 'fnm_cap0.06')
DEFAULT_SEEDS = (0, 1, 2)
#: FGSM and BIM with the paper's evaluation settings (tools/test.py).
DEFAULT_ATTACKS = ('FGSM', 'BIM')
METRIC = 'mIoU'
RADIUS_KEY = 'adv/eps_mean'

#: --quick: a schedule and a data set small enough for a few minutes on
#: 2 CPU cores; every stage and output of the full run is exercised.
QUICK_SEEDS = (0, 1)
QUICK_ITERS = 20
QUICK_EPSILONS = (0, 0.02, 0.04)
QUICK_DEMO_DATA = dict(num_train=16, num_val=4, image_size=48, seed=0)
QUICK_DEMO_CROP = (32, 32)
QUICK_DEMO_WIDTH = 8  # backbone base channels (demo: 32)

TRAIN_RECORD = 'train.json'
REPORT = 'robustness.json'


def log(message: str) -> None:
    print(f'[reproduce] {message}', flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train the paper\'s models with several seeds, sweep '
        'FGSM and BIM-10 over radii and summarise them (figure 3 with '
        'mean +- std, tables, training time, FNM training radius)')
    parser.add_argument(
        '--dataset',
        default='demo',
        help=f'one of {", ".join(DATASETS)} (default: demo)')
    parser.add_argument(
        '--models',
        nargs='*',
        default=None,
        help='models to train: ' + ' '.join(PAPER_MODELS) +
        ' and fnm_cap<R> (FNM with the radius capped at R); default: ' +
        ' '.join(DEFAULT_MODELS))
    parser.add_argument(
        '--seeds',
        nargs='*',
        type=int,
        default=None,
        help='random seeds, one run per model and seed (default: 0 1 2; '
        'with --quick 0 1)')
    parser.add_argument(
        '--work-dir',
        help='output directory (default: '
        'work_dirs/reproduce/<dataset>[_quick])')
    parser.add_argument(
        '--quick',
        action='store_true',
        help=f'short version: {QUICK_ITERS} iterations, radii '
        f'{" ".join(map(str, QUICK_EPSILONS))}, seeds '
        f'{" ".join(map(str, QUICK_SEEDS))} by default, and on the demo '
        'data sets a tiny data set (in the work dir) and network')
    parser.add_argument(
        '--force',
        action='store_true',
        help='redo runs that are finished (default: skip them)')
    parser.add_argument(
        '--attacks',
        nargs='+',
        default=list(DEFAULT_ATTACKS),
        metavar='NAME[:KEY=VALUE,...]',
        help='attacks of the sweep, as for tools/test.py (default: FGSM '
        'BIM, the paper\'s settings)')
    parser.add_argument(
        '--epsilons',
        nargs='+',
        type=float,
        default=None,
        metavar='R',
        help='radii of the sweep (default: 0 to 0.04 in steps of 0.005)')
    parser.add_argument(
        '--test-images',
        type=int,
        help='sweep only the first N validation images (default: all); '
        'BIM-10 costs about 10 gradients per image and radius')
    parser.add_argument(
        '--data-root',
        help='data set folder, instead of the configs\' data_root')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm'],
        default='none',
        help='none: train in this process (CPU or one GPU); pytorch: '
        'tools/dist_train.sh / dist_test.sh with --gpus processes; slurm: '
        'tools/slurm_train.sh / slurm_test.sh with GPUS=--gpus')
    parser.add_argument(
        '--gpus',
        type=int,
        default=1,
        help='processes (GPUs) per run with --launcher pytorch or slurm')
    parser.add_argument(
        '--partition', help='Slurm partition (with --launcher slurm)')
    parser.add_argument(
        '--threads',
        type=int,
        help='CPU threads of torch per process (default: torch\'s choice; '
        'with --quick 1). On a machine shared with other jobs, more threads '
        'than free cores can make training many times slower')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of every model\'s config, key=value as for '
        'tools/train.py (e.g. model.backbone.init_cfg.checkpoint=PATH)')
    return parser.parse_args(argv)


def check_args(args) -> None:
    """Fill in the defaults and refuse bad arguments, before any run."""
    if args.dataset not in DATASETS:
        raise ValueError(f'--dataset {args.dataset!r} is unknown; choose '
                         f'one of {", ".join(DATASETS)}')
    check_runs(args)
    check_sweep(args)
    check_launcher(args)
    if args.work_dir is None:
        name = args.dataset + ('_quick' if args.quick else '')
        args.work_dir = osp.join('work_dirs', 'reproduce', name)


def check_runs(args) -> None:
    """--models and --seeds."""
    if args.seeds is None:
        args.seeds = list(QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    if not args.seeds:
        raise ValueError('--seeds needs at least one seed, e.g. --seeds '
                         '0 1 2 (several seeds tell a difference between '
                         'models from noise)')
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f'--seeds has duplicates: {args.seeds}')
    if args.models is None:
        args.models = list(DEFAULT_MODELS)
    if not args.models:
        raise ValueError('--models needs at least one model, e.g. '
                         '--models basic fnm')
    if len(set(args.models)) != len(args.models):
        raise ValueError(f'--models has duplicates: {args.models}')
    for model in args.models:
        model_spec(model)  # raises for unknown names


def check_sweep(args) -> None:
    """--epsilons and --attacks."""
    if args.epsilons is None:
        args.epsilons = list(
            QUICK_EPSILONS if args.quick else DEFAULT_EPSILONS)
    if not all(0 <= eps <= 1 for eps in args.epsilons) or len(
            set(args.epsilons)) != len(args.epsilons):
        raise ValueError(f'--epsilons {args.epsilons}: radii must be '
                         'distinct values in [0, 1]')
    args.epsilons = sorted(args.epsilons)
    if args.test_images is not None and args.test_images < 1:
        raise ValueError('--test-images must be at least 1, got '
                         f'{args.test_images}')
    # Builds the attacks: a wrong name or option fails now, not after the
    # first training.
    load_tool('test').robustness_test_cfg(None, args.attacks, args.epsilons)


def check_launcher(args) -> None:
    """--launcher, --gpus, --partition and --threads."""
    if args.gpus < 1:
        raise ValueError(f'--gpus must be at least 1, got {args.gpus}')
    if args.launcher == 'none' and args.gpus > 1:
        raise ValueError('--gpus > 1 needs --launcher pytorch or slurm')
    if args.launcher == 'slurm' and not args.partition:
        raise ValueError('--launcher slurm needs --partition PARTITION')
    if args.threads is None and args.quick:
        args.threads = 1
    if args.threads is not None and args.threads < 1:
        raise ValueError(f'--threads must be at least 1, got {args.threads}')


def model_spec(model: str) -> Tuple[str, dict]:
    """``'fnm_cap0.03'`` -> ``('fnm', {'train_cfg.attack.max_eps': 0.03})``:
    the config suffix and the options that make the model."""
    if model in PAPER_MODELS:
        return model, {}
    match = CAPPED_FNM.match(model)
    if match and 0 < float(match.group(1)) <= 1:
        return 'fnm', {'train_cfg.attack.max_eps': float(match.group(1))}
    raise ValueError(
        f'Unknown model {model!r}: choose from {", ".join(PAPER_MODELS)} '
        'or fnm_cap<R> with a radius 0 < R <= 1 (e.g. fnm_cap0.03)')


def config_file(dataset: str, model: str) -> str:
    suffix, _ = model_spec(model)
    folder, prefix = DATASETS[dataset]
    return osp.join(REPO_ROOT, folder, f'{prefix}_{suffix}.py')


def dataset_cfgs(cfg: Config) -> Iterator[dict]:
    """Every dataset dict of the train/val/test dataloaders (also those
    inside a ``ConcatDataset``)."""
    stack = [
        cfg[name].dataset
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader')
        if cfg.get(name)
    ]
    while stack:
        dataset = stack.pop()
        yield dataset
        stack.extend(dataset.get('datasets', []))
        if isinstance(dataset.get('dataset'), dict):
            stack.append(dataset['dataset'])


def check_data(cfg: Config, dataset: str, config: str) -> None:
    """Refuse a missing data set (the demo's is generated on first use)."""
    for data in dataset_cfgs(cfg):
        root = data.get('data_root')
        if root is None or 'gen_cfg' in data or osp.isdir(root):
            continue
        raise FileNotFoundError(
            f'The {dataset} data set of {config} is missing: its data_root '
            f'{root} ({osp.abspath(root)}) does not exist. ' +
            DATA_HELP.get(dataset, '') + CONVERTERS +
            ' Or point --data-root at your copy.')


def prepare_data(cfgs: List[Config]) -> None:
    """Generate the demo data up front, so that no training time
    includes it (the dataset would generate it on first use)."""
    done = set()
    for cfg in cfgs:
        for data in dataset_cfgs(cfg):
            if 'gen_cfg' not in data or not data.get('auto_generate', True):
                continue
            key = (data['data_root'], json.dumps(dict(data['gen_cfg'])))
            if key not in done:
                # the generator the data set itself would run
                spec = DATASET_REGISTRY.get(data['type']).SPEC
                prepare_generated_dataset(spec, data['data_root'],
                                          **data['gen_cfg'])
                done.add(key)


def apply_quick(cfg: Config, dataset: str, work_dir: str) -> None:
    """Shrink the schedule (and, on the demo, data and network) in place;
    the training loop, attacks, hooks and evaluation stay as they are."""
    iters = QUICK_ITERS
    scale = iters / cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    schedulers = cfg.param_scheduler
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    for scheduler in schedulers:
        # the same shape over the shorter schedule (warm-up included)
        begin = int(scheduler.get('begin', 0) * scale)
        scheduler['begin'] = begin
        if 'end' in scheduler:
            scheduler['end'] = max(begin + 1, round(scheduler['end'] * scale))
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = iters
    cfg.log_level = 'WARNING'
    # the base files' variables, so that the written config reads right
    set_if_present(cfg, max_iters=iters)
    if dataset not in GENERATED_DATA:
        return
    set_if_present(
        cfg,
        gen_cfg=dict(QUICK_DEMO_DATA),
        image_size=QUICK_DEMO_DATA['image_size'],
        crop_size=QUICK_DEMO_CROP)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].update(batch_size=4, num_workers=0, persistent_workers=False)
    size = QUICK_DEMO_DATA['image_size']
    for data in dataset_cfgs(cfg):
        data.update(
            data_root=osp.join(work_dir, 'data', GENERATED_DATA[dataset]),
            gen_cfg=dict(QUICK_DEMO_DATA))
        for step in data.pipeline:
            if step['type'] in ('RandomResize', 'Resize'):
                step['scale'] = (size, size)
            if step['type'] == 'RandomCrop':
                step['crop_size'] = QUICK_DEMO_CROP
    cfg.model.data_preprocessor.size = QUICK_DEMO_CROP
    # A slimmer network of the same shape: every width scaled alike.
    backbone, head = cfg.model.backbone, cfg.model.decode_head
    factor = QUICK_DEMO_WIDTH / backbone.base_channels
    backbone.stem_channels = round(backbone.stem_channels * factor)
    backbone.base_channels = QUICK_DEMO_WIDTH
    head.in_channels = round(head.in_channels * factor)
    head.channels = max(QUICK_DEMO_WIDTH, round(head.channels * factor))


def set_if_present(cfg: Config, **values) -> None:
    for key, value in values.items():
        if key in cfg:
            cfg[key] = value


def add_stats_hook(cfg: Config) -> None:
    """Log the training radius every iteration (AdversarialStatsHook;
    without its extra loss forwards, which would add to the time)."""
    hooks = list(cfg.get('custom_hooks', []))
    if not any(
            str(h.get('type')).split('.')[-1] == 'AdversarialStatsHook'
            for h in hooks):
        hooks.append(dict(type='AdversarialStatsHook', loss_interval=0))
    cfg.custom_hooks = hooks


def build_run_config(args, model: str, seed: int) -> Config:
    """The config of one run: the model's config file, the model's
    options, --quick, --data-root, --cfg-options, the seed and the
    statistics hook."""
    path = config_file(args.dataset, model)
    cfg = Config.fromfile(path)
    _, options = model_spec(model)
    cfg.merge_from_dict(options)
    if args.quick:
        apply_quick(cfg, args.dataset, args.work_dir)
    if args.data_root:
        for data in dataset_cfgs(cfg):
            if 'data_root' in data:
                data['data_root'] = args.data_root
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.randomness = dict(cfg.get('randomness', {}), seed=seed)
    add_stats_hook(cfg)
    # The visualizer is named after each run's experiment_name: several
    # Runners in one process must not share one (nor its vis_data dir).
    if cfg.get('visualizer'):
        cfg.visualizer.pop('name', None)
    check_data(cfg, args.dataset, path)
    return cfg


class Run:
    """One (model, seed): its directory and the files it leaves there."""

    def __init__(self, work_dir: str, model: str, seed: int) -> None:
        self.model = model
        self.seed = seed
        self.dir = osp.join(work_dir, model, f'seed_{seed}')
        # Outside the run's dir: the Runner dumps its copy into work_dir.
        self.config = osp.join(work_dir, 'configs', f'{model}_seed{seed}.py')
        self.train_record = osp.join(self.dir, TRAIN_RECORD)
        self.report = osp.join(self.dir, REPORT)

    @property
    def name(self) -> str:
        return f'{self.model} seed {self.seed}'

    def experiment_name(self, stage: str) -> str:
        return f'{self.model}_seed{self.seed}_{stage}_{time.time_ns()}'

    def checkpoint(self) -> Optional[str]:
        """The final checkpoint of a finished training, else None."""
        if not osp.isfile(self.train_record):
            return None
        checkpoint = read_json(self.train_record).get('checkpoint')
        return checkpoint if checkpoint and osp.isfile(checkpoint) else None


def digest(cfg: Config) -> str:
    """A fingerprint of a config (cheaper than comparing its text, which
    mmengine formats with yapf)."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_json(path: str, data) -> None:
    """Write atomically: an interrupted run never leaves half a file."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


@functools.lru_cache()
def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f'mmseg_fnm_tools_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def provenance() -> dict:
    """The code and machine that a run is made with."""

    def git(*command: str) -> Optional[str]:
        try:
            return subprocess.run(['git', *command],
                                  cwd=REPO_ROOT,
                                  capture_output=True,
                                  text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None  # not a git checkout, or no git

    changes = git('status', '--porcelain', '--untracked-files=no')
    return dict(
        commit=git('rev-parse', 'HEAD'),
        modified=None if changes is None else bool(changes),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpus=os.cpu_count(),
        host=socket.gethostname())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def launch(args, script: str, positional: List[str], options: List[str],
           job: str) -> None:
    """Run tools/<script>.py: in this process, or through its
    dist_/slurm_ launcher script."""
    if args.launcher == 'none':
        load_tool(script).main(positional + options)
        if args.persistent_workers:
            gc.collect()  # end the finished Runner's dataloader workers
        return
    env = dict(os.environ, PYTHON=sys.executable, GPUS=str(args.gpus))
    if args.threads is not None:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(args.threads)
    env.setdefault('GPUS_PER_NODE', str(min(args.gpus, 8)))  # Slurm
    if args.launcher == 'pytorch':
        env.setdefault('PORT', str(free_port()))
        cmd = [
            'bash',
            osp.join(TOOLS, f'dist_{script}.sh'), *positional,
            str(args.gpus)
        ]
    else:
        cmd = [
            'bash',
            osp.join(TOOLS, f'slurm_{script}.sh'), args.partition, job,
            *positional
        ]
    cmd += options
    log(' '.join(cmd))
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed with exit status '
                           f'{result.returncode}')


def train(args, run: Run, cfg: Config) -> None:
    """Train one run from scratch and record its wall-clock time."""
    start = time.perf_counter()
    launch(args, 'train', [run.config], [
        '--work-dir', run.dir, '--cfg-options',
        f'experiment_name={run.experiment_name("train")}'
    ], f'{run.model}_s{run.seed}')
    seconds = time.perf_counter() - start
    with open(osp.join(run.dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    write_json(
        run.train_record,
        dict(
            model=run.model,
            seed=run.seed,
            config=run.config,
            config_digest=digest(cfg),
            checkpoint=checkpoint,
            seconds=seconds,
            launcher=args.launcher,
            gpus=args.gpus if args.launcher != 'none' else None,
            provenance=provenance()))
    log(f'{run.name}: trained in {seconds:.1f} s')


def evaluate(args, run: Run) -> None:
    """The robustness sweep of the run's final checkpoint."""
    out_dir = osp.join(run.dir, 'robustness')
    shutil.rmtree(out_dir, ignore_errors=True)
    options = [f'experiment_name={run.experiment_name("test")}']
    if args.test_images:
        options.append(f'test_dataloader.dataset.indices={args.test_images}')
    launch(args, 'test', [run.config, run.checkpoint()], [
        '--work-dir', out_dir, '--attacks', *args.attacks, '--epsilons',
        *map(str, args.epsilons), '--cfg-options', *options
    ], f'{run.model}_s{run.seed}_test')
    reports = sorted(
        osp.join(out_dir, d, REPORT) for d in os.listdir(out_dir)
        if osp.isfile(osp.join(out_dir, d, REPORT)))
    if not reports:
        raise RuntimeError(f'{run.name}: the sweep wrote no {REPORT} '
                           f'under {out_dir}')
    report = read_json(reports[-1])
    report['sweep'] = sweep_settings(args)
    write_json(run.report, report)


def sweep_settings(args) -> dict:
    return dict(
        attacks=list(args.attacks),
        epsilons=list(args.epsilons),
        test_images=args.test_images)


def swept(args, run: Run) -> bool:
    """Whether the run was swept with the requested attacks and radii."""
    return osp.isfile(run.report) and read_json(
        run.report).get('sweep') == sweep_settings(args)


def plan(args, runs: List[Run], cfgs) -> Dict[str, str]:
    """What each run needs: ``'train'`` (and sweep), ``'sweep'`` or
    ``'skip'``; decided for all runs before the first one starts.

    A finished run trained with another config than the one this command
    makes is refused rather than mixed into the summary."""
    todo = {}
    for run in runs:
        if args.force or not run.checkpoint():
            todo[run.dir] = 'train'
        elif read_json(run.train_record).get('config_digest') != digest(
                cfgs[run.model, run.seed]):
            raise RuntimeError(
                f'{run.dir} was trained with another config than the one '
                f'this command makes ({run.config}; changed config file, '
                '--cfg-options, --quick or --data-root?): pass --force to '
                'redo it, or choose another --work-dir')
        else:
            todo[run.dir] = 'skip' if swept(args, run) else 'sweep'
    return todo


def start_afresh(run: Run, cfg: Config) -> None:
    """Empty the run's dir (no stale log is read later); write its
    config."""
    shutil.rmtree(run.dir, ignore_errors=True)
    os.makedirs(run.dir)
    os.makedirs(osp.dirname(run.config), exist_ok=True)
    with open(run.config, 'w') as f:
        f.write(cfg.pretty_text)


def run_all(args, runs: List[Run], cfgs) -> None:
    todo = plan(args, runs, cfgs)
    for index, run in enumerate(runs, 1):
        prefix = f'({index}/{len(runs)}) {run.name}'
        if todo[run.dir] == 'skip':
            log(f'{prefix}: done before, skipped')
            continue
        if todo[run.dir] == 'train':
            log(f'{prefix}: training')
            start_afresh(run, cfgs[run.model, run.seed])
            train(args, run, cfgs[run.model, run.seed])
        log(f'{prefix}: robustness sweep')
        evaluate(args, run)


# --------------------------------------------------------------------------
# Summary: mean and spread over seeds


def mean_std(values) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else None
    return float(values.mean()), std


def curves_of(report: dict, attacks: List[str],
              epsilons: List[float]) -> Dict[str, List[float]]:
    """``{attack: [metric at each radius]}`` of one robustness.json."""
    lookup = {
        (r['attack'].lower(), r['eps']): r[METRIC]
        for r in report['records']
    }
    return {
        attack: [lookup[attack.lower(), eps] for eps in epsilons]
        for attack in attacks
    }


def attack_names(report: dict) -> List[str]:
    """Attacks of a report as it names them, in order (FGSM, BIM)."""
    return list(
        dict.fromkeys(r['attack'] for r in report['records']
                      if r['attack'] not in (CLEAN, WORST)))


def find_scalars(run: Run) -> Optional[str]:
    """The training's vis_data/scalars.json (one timestamp dir per run)."""
    for entry in sorted(os.listdir(run.dir), reverse=True):
        path = osp.join(run.dir, entry, 'vis_data', 'scalars.json')
        if osp.isfile(path):
            return path
    return None


def training_log(run: Run) -> Tuple[Dict[int, float], List[float]]:
    """``({iteration: logged training radius}, [logged seconds per
    iteration])`` of a run's training."""
    radius, times = {}, []
    path = find_scalars(run)
    if path is None:
        return radius, times
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            if 'iter' not in entry:
                continue  # validation entries
            if RADIUS_KEY in entry:
                radius[int(entry['iter'])] = float(entry[RADIUS_KEY])
            if 'time' in entry:
                times.append(float(entry['time']))
    return radius, times


def tenth(series: Dict[int, float], first: bool) -> float:
    """Mean of the first (or last) tenth of a logged series."""
    values = [series[i] for i in sorted(series)]
    count = max(1, len(values) // 10)
    return float(np.mean(values[:count] if first else values[-count:]))


def summarise_model(args, runs: List[Run], attacks: List[str]) -> dict:
    """Mean and std over the seeds of one model."""
    reports = [
        curves_of(read_json(r.report), attacks, args.epsilons) for r in runs
    ]
    robustness = {}
    for attack in attacks:
        per_seed = [report[attack] for report in reports]
        stats = [mean_std(values) for values in zip(*per_seed)]
        robustness[attack] = dict(
            eps=list(args.epsilons),
            mean=[m for m, _ in stats],
            std=[s for _, s in stats],
            per_seed=per_seed)
    seconds = [read_json(r.train_record)['seconds'] for r in runs]
    logs = [training_log(r) for r in runs]
    iter_seconds = [float(np.mean(t)) for _, t in logs if t]
    summary = dict(
        seeds=[r.seed for r in runs],
        config=read_json(runs[0].train_record)['config'],
        options=model_spec(runs[0].model)[1],
        robustness=robustness,
        train_seconds=dict(
            zip(('mean', 'std'), mean_std(seconds)), per_seed=seconds),
        iter_seconds=dict(
            zip(('mean', 'std'), mean_std(iter_seconds)),
            per_seed=iter_seconds) if iter_seconds else None)
    radius = [r for r, _ in logs if r]
    if len(radius) == len(runs):  # adversarial training
        summary['train_radius'] = radius_summary(radius)
    return summary


def radius_summary(radius: List[Dict[int, float]]) -> dict:
    """Mean and std over seeds of the training radius per iteration
    (iterations logged in every seed), and at the start and end."""
    iters = sorted(set.intersection(*(set(r) for r in radius)))
    stats = [mean_std([r[i] for r in radius]) for i in iters]
    return dict(
        iters=iters,
        mean=[m for m, _ in stats],
        std=[s for _, s in stats],
        start=mean_std([tenth(r, first=True) for r in radius]),
        end=mean_std([tenth(r, first=False) for r in radius]))


def summarise(args, runs: List[Run], cfgs) -> dict:
    attacks = attack_names(read_json(runs[0].report))
    models = {}
    for model in args.models:
        mine = [r for r in runs if r.model == model]
        models[model] = summarise_model(args, mine, attacks)
        models[model]['attack'] = train_attack(cfgs[model, mine[0].seed])
    basic = models.get('basic')
    for summary in models.values():
        summary['time_ratio_to_basic'] = (
            summary['train_seconds']['mean'] /
            basic['train_seconds']['mean'] if basic else None)
    made_by = [read_json(r.train_record).get('provenance') or {} for r in runs]
    return dict(
        dataset=args.dataset,
        quick=args.quick,
        command=args.command,
        commits=sorted({str(p.get('commit'))
                        for p in made_by}),
        modified_tree=any(p.get('modified') for p in made_by),
        metric=METRIC,
        seeds=list(args.seeds),
        attacks=attacks,
        attack_specs=list(args.attacks),
        epsilons=list(args.epsilons),
        std='sample standard deviation over seeds (ddof=1)',
        models=models)


def train_attack(cfg: Config) -> Optional[dict]:
    """The training attack of a config (None for clean training)."""
    attack = cfg.train_cfg.get('attack')
    return None if attack is None else dict(attack)


def cell(mean: float, std: Optional[float], digits: int = 2) -> str:
    if std is None:
        return f'{mean:.{digits}f}'
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


def robustness_table(summary: dict, attack: str) -> List[str]:
    """One row per radius, one column per model: mean ± std."""
    models = summary['models']
    lines = [
        f'## {attack}: {METRIC} (%) per radius', '',
        '| eps | ' + ' | '.join(models) + ' |',
        '|---:|' + '---:|' * len(models)
    ]
    for i, eps in enumerate(summary['epsilons']):
        cells = [
            cell(m['robustness'][attack]['mean'][i],
                 m['robustness'][attack]['std'][i]) for m in models.values()
        ]
        lines.append(f'| {format_eps(eps)} | ' + ' | '.join(cells) + ' |')
    return lines


def time_table(summary: dict) -> List[str]:
    lines = [
        '## Training time', '',
        '| model | wall clock (s) | ratio to basic | s / iteration |',
        '|---|---:|---:|---:|'
    ]
    for name, m in summary['models'].items():
        ratio = m['time_ratio_to_basic']
        per_iter = m['iter_seconds']
        lines.append(' | '.join([
            f'| {name}',
            cell(*_pair(m['train_seconds']),
                 digits=1), '' if ratio is None else f'{ratio:.2f}',
            '' if per_iter is None else cell(*_pair(per_iter), digits=3)
        ]) + ' |')
    lines += [
        '', 'Wall clock: tools/train.py from start to end (build, '
        'iterations, in-training validation, checkpoints); s / iteration: '
        'mean of the logged iteration times.'
    ]
    return lines


def radius_table(summary: dict) -> List[str]:
    lines = [
        f'## FNM training radius ({RADIUS_KEY})', '',
        '| model | start of training | end of training |', '|---|---:|---:|'
    ]
    for name, m in summary['models'].items():
        if is_fnm(m) and 'train_radius' in m:
            radius = m['train_radius']
            lines.append(f'| {name} | {cell(*radius["start"], digits=4)} | '
                         f'{cell(*radius["end"], digits=4)} |')
    lines += [
        '', 'Mean radius of the adversarial samples over the first and the '
        'last tenth of the logged iterations.'
    ]
    return lines


def markdown(summary: dict, figures: List[str]) -> str:
    n = len(summary['seeds'])
    lines = [
        f'# Reproduction on {summary["dataset"]}' +
        (' (--quick)' if summary['quick'] else ''), '',
        f'{METRIC} (%) as mean ± sample std over {n} seed(s) '
        f'({", ".join(map(str, summary["seeds"]))}); attacks: '
        f'{", ".join(summary["attack_specs"])}.', '',
        f'Command: `{summary["command"]}`; trained at commit(s) '
        f'{", ".join(summary["commits"])}' +
        (' with local changes' if summary['modified_tree'] else '') + '.', ''
    ]
    for attack in summary['attacks']:
        lines += robustness_table(summary, attack) + ['']
    lines += time_table(summary) + ['']
    if any(
            is_fnm(m) and 'train_radius' in m
            for m in summary['models'].values()):
        lines += radius_table(summary) + ['']
    lines += [
        f'![{osp.basename(path)}]({osp.basename(path)})' for path in figures
    ]
    return '\n'.join(lines) + '\n'


def _pair(stats: dict) -> Tuple[float, Optional[float]]:
    return stats['mean'], stats['std']


def is_fnm(model_summary: dict) -> bool:
    attack = model_summary.get('attack') or {}
    return str(attack.get('type', '')).split('.')[-1] == 'FastNewton'


def figure_path(work_dir: str, index: int, attack: str) -> str:
    """figure3a_fgsm.png, figure3b_bim.png, ... (the paper's figure 3)."""
    letter = chr(ord('a') + index)
    name = re.sub(r'[^a-z0-9_.-]+', '_', attack.lower())
    return osp.join(work_dir, f'figure3{letter}_{name}.png')


def draw_figures(summary: dict, work_dir: str) -> List[str]:
    paths = []
    n = len(summary['seeds'])
    for index, attack in enumerate(summary['attacks']):
        curves = {
            name:
            dict(
                x=m['robustness'][attack]['eps'],
                mean=m['robustness'][attack]['mean'],
                std=_band(m['robustness'][attack]['std']))
            for name, m in summary['models'].items()
        }
        path = figure_path(work_dir, index, attack)
        plot_mean_std_curves(
            curves,
            path,
            xlabel='attack radius $\\varepsilon$ (pixels in [0, 1])',
            ylabel=f'{METRIC} (%)',
            title=f'{attack} on {summary["dataset"]} (mean ± std, {n} '
            'seeds)')
        paths.append(path)
    radius = {
        name:
        dict(
            x=m['train_radius']['iters'],
            mean=m['train_radius']['mean'],
            std=_band(m['train_radius']['std']))
        for name, m in summary['models'].items()
        if is_fnm(m) and 'train_radius' in m
    }
    if radius:
        path = osp.join(work_dir, 'fnm_radius.png')
        plot_mean_std_curves(
            radius,
            path,
            xlabel='iteration',
            ylabel='training radius $\\varepsilon$ (batch mean)',
            title=f'FNM training radius (mean ± std, {n} seeds)',
            references=fixed_radii(summary))
        paths.append(path)
    return paths


def _band(std: List[Optional[float]]) -> Optional[List[float]]:
    return None if any(s is None for s in std) else std


def fixed_radii(summary: dict) -> Dict[str, float]:
    """Reference lines: the fixed training radius of FGSM / BIM models."""
    by_eps: Dict[float, List[str]] = {}
    for name, m in summary['models'].items():
        attack = m.get('attack') or {}
        kind = str(attack.get('type', '')).split('.')[-1]
        if kind in ('FGSM', 'BIM') and 'eps' in attack:
            by_eps.setdefault(attack['eps'], []).append(name)
    return {f'{", ".join(names)} radius': eps for eps, names in by_eps.items()}


def write_summary(args, runs: List[Run], cfgs) -> dict:
    summary = summarise(args, runs, cfgs)
    write_json(osp.join(args.work_dir, 'summary.json'), summary)
    figures = draw_figures(summary, args.work_dir)
    text = markdown(summary, figures)
    with open(osp.join(args.work_dir, 'summary.md'), 'w') as f:
        f.write(text)
    print(text)
    log(f'summary: {args.work_dir}/summary.md, summary.json, ' +
        ', '.join(osp.basename(p) for p in figures))
    return summary


def main(argv=None) -> dict:
    """Train, evaluate and summarise; returns the summary."""
    args = parse_args(argv)
    check_args(args)
    args.command = 'python tools/reproduce.py ' + ' '.join(
        map(shlex.quote, sys.argv[1:] if argv is None else argv))
    # Every config is built (and its data checked) before the first run.
    cfgs = {
        (model, seed): build_run_config(args, model, seed)
        for model in args.models
        for seed in args.seeds
    }
    runs = [
        Run(args.work_dir, model, seed) for model in args.models
        for seed in args.seeds
    ]
    log(f'{len(runs)} runs ({len(args.models)} models x '
        f'{len(args.seeds)} seeds) into {args.work_dir}')
    os.makedirs(args.work_dir, exist_ok=True)
    prepare_data(list(cfgs.values()))
    args.persistent_workers = any(cfg[name].get('persistent_workers')
                                  for cfg in cfgs.values()
                                  for name in ('train_dataloader',
                                               'val_dataloader',
                                               'test_dataloader')
                                  if cfg.get(name))
    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        run_all(args, runs, cfgs)
    finally:
        torch.set_num_threads(threads)
    return write_summary(args, runs, cfgs)


if __name__ == '__main__':
    main()
