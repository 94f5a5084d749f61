# Benchmark the cost of adversarial training and of the robustness sweep.
#
#   python tools/benchmark.py                  # CPU, demo model (minutes)
#   python tools/benchmark.py --device cuda --config \
#       configs/cityscapes/pspnet_preact-r50-d8_8xb2-80k_cityscapes-712x712_basic.py
#
# One model, one optimiser and a fixed set of batches serve every variant;
# variants are interleaved (a new random order every round) so that drift
# of the machine hits them alike, and medians are reported.  What is timed
# is what users run: the adversarial train loop's own make_adversarial
# followed by model.train_step, and the robustness test loop's own
# per-batch sweep.  Prints markdown tables and writes them, with the raw
# timings, the machine and the settings, as JSON (--out; the tables also
# as markdown next to it).
import argparse
import copy
import json
import logging
import os
import os.path as osp
import sys
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import InfiniteSampler, pseudo_collate
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import LOOPS
from torch.utils.data import DataLoader, Dataset

import mmseg_fnm  # noqa: F401  (registers the plugin's components)
from mmseg_fnm.attacks import FGSM, BaseAttack, SegmentorAttacker, build_attack
from mmseg_fnm.engine.loops import DEFAULT_EPSILONS
from mmseg_fnm.utils.benchmark import (Clock, SyntheticSegDataset, TimedAttack,
                                       is_cuda, machine_info, markdown_table,
                                       package_versions, peak_memory,
                                       run_interleaved, summarise, threads)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo',
                          'pspnet_r18_demo_basic.py')
# The paper's training attacks, as in configs/*/*_{fgsm,rfgsm,fnm,bim3}.py.
TRAIN_ATTACKS = {
    'FGSM': dict(type='FGSM', eps=0.03),
    'RandomFGSM': dict(type='RandomFGSM', eps=0.03),
    'FNM': dict(type='FastNewton'),
    'BIM-3': dict(type='BIM', eps=0.03, alpha=0.01, steps=3),
}
# (rounds, warm-up, memory iterations, breakdown iterations, sweep rounds,
#  sweep warm-up, batches, train batch size, sweep batch size)
QUICK = dict(
    rounds=2,
    warmup=1,
    memory_iters=1,
    breakdown_iters=2,
    sweep_rounds=1,
    sweep_warmup=0,
    num_batches=1,
    batch_size=2,
    sweep_batch_size=1)
FULL = dict(
    rounds=20,
    warmup=3,
    memory_iters=2,
    breakdown_iters=10,
    sweep_rounds=3,
    sweep_warmup=1,
    num_batches=4,
    batch_size=None,
    sweep_batch_size=None)
MB = 2**20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Time adversarial training iterations (clean, FGSM, '
        'random FGSM, FNM, BIM-3), break an FNM iteration down, time the '
        'robustness sweep, and write ratios and raw timings as JSON')
    parser.add_argument(
        '--config',
        default=DEFAULT_CONFIG,
        help='config of the model, optimiser and data (its train_cfg is '
        'ignored; default: the CPU demo)')
    parser.add_argument(
        '--device',
        default='cpu',
        help="'cpu' or 'cuda' (CUDA events and synchronisation)")
    parser.add_argument(
        '--data',
        choices=['auto', 'config', 'synthetic'],
        default='auto',
        help="batches from the config's dataloaders ('config'), random "
        "images of the config's sizes ('synthetic'), or the config's "
        "where its data are found ('auto')")
    parser.add_argument(
        '--adv-probs',
        type=float,
        nargs='+',
        default=[0.5, 1.0],
        help='adv_prob values of the adversarial variants')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='a tiny setting that only checks the benchmark runs')
    for name, help_text in [
        ('rounds', 'recorded rounds over all training variants'),
        ('warmup', 'unrecorded rounds first'),
        ('memory-iters', 'iterations per variant for the peak memory'),
        ('breakdown-iters', 'recorded FNM iterations in the breakdown'),
        ('sweep-rounds', 'recorded rounds of the robustness sweep'),
        ('sweep-warmup', 'unrecorded sweep rounds first'),
        ('num-batches', 'distinct training batches, cycled over rounds'),
        ('batch-size', "training batch (default: the config's)"),
        ('sweep-batch-size', "sweep batch (default: the config's test "
         'batch)'),
        ('threads', 'torch CPU threads (default: as torch sets them)'),
    ]:
        parser.add_argument(f'--{name}', type=int, help=help_text)
    parser.add_argument(
        '--cpu-time',
        action='store_true',
        help='on a CPU, time the CPU time of the process instead of wall '
        'time: other processes on a shared machine hardly disturb it (use '
        'with --threads 1; waiting for data is not counted)')
    parser.add_argument('--seed', type=int, default=0, help='order seed')
    parser.add_argument(
        '--work-dir',
        default=osp.join('work_dirs', 'benchmark'),
        help="the Runner's work directory")
    parser.add_argument(
        '--out', help='JSON file (default: <work-dir>/benchmark.json)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, xxx=yyy')
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ('rounds', 'memory_iters', 'breakdown_iters', 'sweep_rounds',
                'num_batches'):
        if getattr(args, key) < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1')
    for key in ('warmup', 'sweep_warmup'):
        if getattr(args, key) < 0:
            parser.error(f'--{key.replace("_", "-")} must be >= 0')
    if any(not 0 < p <= 1 for p in args.adv_probs):
        parser.error('--adv-probs must be in (0, 1], e.g. 0.5 1.0')
    device = torch.device(args.device)
    if is_cuda(device) and not torch.cuda.is_available():
        parser.error('--device cuda: torch sees no GPU here (CPU build or '
                     'no device); run with --device cpu')
    if args.cpu_time and is_cuda(device):
        parser.error('--cpu-time is for CPU runs; GPU work is timed with '
                     'CUDA events')
    if args.out is None:
        args.out = osp.join(args.work_dir, 'benchmark.json')
    return args


# ----------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------
def build_runner(args) -> Runner:
    """A Runner of the config (model on the device, nothing trained)."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'--config {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    for key in ('train_dataloader', 'test_dataloader', 'optim_wrapper',
                'model'):
        if key not in cfg:
            raise ValueError(f'--config {args.config} has no {key}; the '
                             'benchmark needs a training config')
    name = f'benchmark_{time.time_ns()}'
    cfg.work_dir = args.work_dir
    cfg.experiment_name = name
    if 'visualizer' in cfg:  # one visualizer per name and process
        cfg.visualizer = dict(cfg.visualizer, name=name)
    cfg.launcher = 'none'
    cfg.load_from = None
    cfg.resume = False
    cfg.log_level = 'WARNING'
    # Weights stay as constructed: no pretrained download.  The attacks do
    # the same work whatever the weights are.
    runner = Runner.from_cfg(cfg)
    runner.model.to(args.device)
    return runner


def synthetic_loader(cfg, split: str, batch_size: int,
                     seed: int) -> DataLoader:
    """Random data of the config's sizes: the crop for training, the test
    pipeline's Resize scale for the sweep."""
    # The preprocessor pads training batches to its size (the crop).
    size = cfg.model.data_preprocessor.get('size') or cfg.get('crop_size')
    if split == 'test':
        for step in cfg.test_dataloader.dataset.get('pipeline', []):
            if step.get('type', '').endswith('Resize') and 'scale' in step:
                width, height = step['scale']  # mmcv order: (w, h)
                size = (height, width)
    if size is None:
        raise ValueError('--data synthetic needs crop_size in the config')
    head = cfg.model.decode_head
    head = head[-1] if isinstance(head, list) else head
    # Training draws without end (as from an InfiniteSampler); the sweep
    # takes one batch.
    dataset = SyntheticSegDataset(
        batch_size * 16 if split == 'train' else batch_size, size,
        head.num_classes, seed)
    sampler = InfiniteSampler(dataset, shuffle=False, seed=seed) \
        if split == 'train' else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=pseudo_collate)


def build_loader(runner: Runner, cfg, split: str, batch_size, args):
    """The config's dataloader of ``split``, or synthetic data."""
    loader_cfg = copy.deepcopy(cfg[f'{split}_dataloader'])
    if batch_size is not None:
        loader_cfg.batch_size = batch_size
    if args.data != 'synthetic':
        try:
            return runner.build_dataloader(
                loader_cfg, seed=runner.seed), 'config'
        except FileNotFoundError as error:
            if args.data == 'config':
                raise FileNotFoundError(
                    f'--data config: the {split} data of {args.config} are '
                    f'missing ({error}); use --data synthetic') from error
            print_log(
                f'{split} data not found ({error}): timing random images '
                'of the same size instead (--data synthetic).',
                logger='current',
                level=logging.WARNING)
    return synthetic_loader(cfg, split, loader_cfg.batch_size,
                            args.seed), 'synthetic'


def clone_batch(batch: dict) -> dict:
    """A batch whose data samples can be modified (the preprocessor writes
    metainfo into them)."""
    return dict(
        inputs=list(batch['inputs']),
        data_samples=[s.clone() for s in batch['data_samples']])


# ----------------------------------------------------------------------
# 1. training iterations
# ----------------------------------------------------------------------
class BatchList(Dataset):
    """Whole batches as items: the variant loops' dataloader, which they
    never draw from (the benchmark hands them the fixed batches)."""

    def __init__(self, batches: list, metainfo: dict) -> None:
        self.batches = batches
        self.metainfo = metainfo

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        return self.batches[index]


def _as_is(batch):
    return batch


def build_train_loops(runner: Runner, batches: list, metainfo: dict,
                      args) -> dict:
    """One AdversarialIterBasedTrainLoop per variant; None = clean."""
    loader = DataLoader(
        BatchList(batches, metainfo), batch_size=None, collate_fn=_as_is)
    loops = {'clean': None}
    for name, attack in TRAIN_ATTACKS.items():
        for prob in args.adv_probs:
            loops[f'{name} p={prob:g}'] = LOOPS.build(
                dict(
                    type='AdversarialIterBasedTrainLoop',
                    runner=runner,
                    dataloader=loader,
                    max_iters=10**9,
                    attack=copy.deepcopy(attack),
                    adv_prob=prob))
    return loops


def train_iteration(runner: Runner, loop, batch: dict, index: int):
    """The work of one training iteration: the loop's adversarial
    replacement (the same samples for every variant of one round) and
    ``train_step``."""
    if loop is not None:
        loop._iter = index  # seeds the choice of samples and the attack

    def step():
        data = batch if loop is None else loop.make_adversarial(batch)
        runner.model.train_step(data, optim_wrapper=runner.optim_wrapper)

    return step


def bench_training(runner: Runner, loops: dict, batches: list, args,
                   clock: Clock) -> dict:
    device = torch.device(args.device)
    fractions = {name: [] for name in loops}

    def task(name):

        def run(index):
            loop = loops[name]
            batch = clone_batch(batches[index % len(batches)])
            seconds = clock.time(train_iteration(runner, loop, batch, index))
            attacked = 0. if loop is None else loop.last_attack.fraction
            fractions[name].append(attacked)
            return seconds

        return run

    runner.model.train()
    times = run_interleaved({name: task(name)
                             for name in loops}, args.rounds, args.warmup,
                            args.seed, lambda line: _log(f'training {line}'))
    results = {}
    for name, loop in loops.items():
        memory = []
        for index in range(args.memory_iters):
            batch = clone_batch(batches[index % len(batches)])
            memory.append(
                peak_memory(
                    train_iteration(runner, loop, batch, index), device,
                    runner.model, runner.optim_wrapper.optimizer))
        peaks = [m['peak'] for m in memory if m['peak'] is not None]
        results[name] = dict(
            attack=None if loop is None else repr(loop.attack),
            adv_prob=None if loop is None else loop.adv_prob,
            seconds=times[name],
            stats=summarise(times[name]),
            attacked_fraction=sum(fractions[name][args.warmup:]) /
            max(len(fractions[name][args.warmup:]), 1),
            peak_memory_bytes=max(peaks) if peaks else None,
            memory=memory)
    return results


# ----------------------------------------------------------------------
# 2. breakdown of an FNM iteration
# ----------------------------------------------------------------------
def build_source_loop(runner: Runner, loader, args, clock: Clock) -> tuple:
    """The FNM loop of the breakdown, with the only iterator over the real
    training dataloader (a second iterator over an InfiniteSampler would
    end the first one's sampler)."""
    timed = TimedAttack(build_attack(TRAIN_ATTACKS['FNM']), clock)
    loop = LOOPS.build(
        dict(
            type='AdversarialIterBasedTrainLoop',
            runner=runner,
            dataloader=loader,
            max_iters=10**9,
            attack=timed,
            adv_prob=args.adv_probs[0]))
    return loop, timed


def bench_breakdown(runner: Runner, loop, timed: TimedAttack, args,
                    clock: Clock) -> dict:
    """Data, attack forward, attack backward, rest of the attack and
    training step of FNM iterations, data drawn from the real loader."""
    results = {}
    runner.model.train()
    for prob in args.adv_probs:
        loop.adv_prob = prob
        parts = {
            k: []
            for k in ('data', 'attack_forward', 'attack_backward',
                      'attack_other', 'train_step', 'total', 'fraction')
        }
        for index in range(args.warmup + args.breakdown_iters):
            loop._iter = 10**6 + index
            timed.reset()
            start = clock.now()
            batch = next(loop.dataloader_iterator)
            loaded = clock.now()
            batch = loop.make_adversarial(batch)
            attacked = clock.now()
            runner.model.train_step(batch, optim_wrapper=runner.optim_wrapper)
            end = clock.now()
            if index < args.warmup:
                continue
            parts['data'].append(loaded - start)
            parts['attack_forward'].append(timed.forward_s)
            parts['attack_backward'].append(timed.backward_s)
            parts['attack_other'].append(attacked - loaded - timed.forward_s -
                                         timed.backward_s)
            parts['train_step'].append(end - attacked)
            parts['total'].append(end - start)
            parts['fraction'].append(loop.last_attack.fraction)
        results[f'FNM p={prob:g}'] = dict(
            seconds=parts, stats={
                k: summarise(v)
                for k, v in parts.items()
            })
    return results


# ----------------------------------------------------------------------
# 3. robustness sweep
# ----------------------------------------------------------------------
class FGSMRadiusByRadius(FGSM):
    """FGSM that computes its gradient anew at every radius (the sweep
    without gradient reuse, for comparison)."""

    sweep = BaseAttack.sweep


def bench_sweep(runner: Runner, loader, args, clock: Clock) -> dict:
    """Per-image time of the robustness test loop's work on one batch:
    the clean prediction, and for each attack its sweep over the radii
    with the predictions of the adversarial images."""
    cfg = runner.cfg
    loop = LOOPS.build(
        dict(
            type='RobustnessTestLoop',
            runner=runner,
            dataloader=loader,
            evaluator=cfg.get('test_evaluator', dict(type='IoUMetric')),
            epsilons=DEFAULT_EPSILONS))
    fgsm, bim = loop.attacks['FGSM'], loop.attacks['BIM']
    settings = {
        'clean prediction': {},
        'FGSM, gradient reuse': dict(FGSM=fgsm),
        'FGSM, radius by radius': dict(FGSM=FGSMRadiusByRadius(fgsm.eps)),
        'BIM-10': dict(BIM=bim),
    }
    batch = next(iter(loader))
    images = len(batch['inputs'])
    model = runner.model
    model.eval()

    def task(name):

        def run(index):
            loop.attacks = settings[name]
            data = clone_batch(batch)
            return clock.time(
                lambda: loop._attacked_outputs(data, model.test_step)) / images

        return run

    times = run_interleaved({name: task(name)
                             for name in settings}, args.sweep_rounds,
                            args.sweep_warmup, args.seed,
                            lambda line: _log(f'sweep {line}'))
    model.train()
    results = {
        name:
        dict(
            attacks={
                k: repr(v)
                for k, v in settings[name].items()
            },
            seconds_per_image=times[name],
            stats=summarise(times[name]))
        for name in settings
    }
    return dict(
        images=images,
        image_size=list(batch['inputs'][0].shape[-2:]),
        epsilons=list(loop.epsilons),
        settings=results)


#: Strong attacks timed per gradient step against BIM-10, at eps 0.03;
#: no early stop, so every image costs the nominal budget.
STRONG_ATTACKS = {
    'BIM-10':
    dict(type='BIM', eps=0.03, alpha=0.004, steps=10),
    'APGD-ce (20 iters)':
    dict(type='APGD', eps=0.03, iters=20, early_stop=False),
    'SEA (20 iters per loss)':
    dict(type='SEA', eps=0.03, iters=20, early_stop=False),
}


def bench_strong_attacks(runner: Runner, loader, args, clock: Clock) -> dict:
    """Time per gradient step of the strong attacks and of BIM-10 on the
    same batch, through the robustness loop's mmseg-level attacker: the
    bookkeeping of APGD and SEA (best-iterate tracking, step-size
    control, radius stages) must be cheap next to the gradient."""
    attacker = SegmentorAttacker()
    attacks = {name: build_attack(cfg) for name, cfg in STRONG_ATTACKS.items()}
    batch = next(iter(loader))
    model = runner.model
    model.eval()
    backwards = {}

    def task(name):

        def run(index):
            data = clone_batch(batch)

            def attack():
                for _, _, out in attacker.sweep(model, attacks[name], data,
                                                [0.03]):
                    backwards[name] = float(out.backwards.float().mean())

            return clock.time(attack)

        return run

    times = run_interleaved({name: task(name)
                             for name in attacks}, args.sweep_rounds,
                            args.sweep_warmup, args.seed,
                            lambda line: _log(f'strong attacks {line}'))
    model.train()
    return {
        name:
        dict(
            attack=repr(attacks[name]),
            gradient_steps=backwards[name],
            seconds=times[name],
            seconds_per_step=[t / backwards[name] for t in times[name]],
            stats=summarise([t / backwards[name] for t in times[name]]))
        for name in attacks
    }


# ----------------------------------------------------------------------
# 4. ratios, targets and tables
# ----------------------------------------------------------------------
def _median(entry) -> float:
    return entry['stats']['median']


def _ratio(a, b):
    return None if a is None or not b else a / b


def ratios(train: dict, breakdown: dict, sweep: dict, strong: dict,
           args) -> list:
    """Each ratio with its target (None: for information)."""
    clean = train['clean']
    rows = []

    def add(name, value, target=None, note=''):
        rows.append(
            dict(
                name=name,
                value=value,
                target=target,
                met=None if target is None or value is None else bool(
                    value <= target),
                note=note))

    for name, entry in train.items():
        if name == 'clean':
            continue
        prob = entry['adv_prob']
        target = 1 + 0.75 * prob if name.startswith('FNM') else None
        add(
            f'time {name} / clean', _ratio(_median(entry), _median(clean)),
            target, 'floor: + one input-only forward and backward on the '
            'attacked fraction' if target else '')
    for prob in args.adv_probs:
        key = f'p={prob:g}'
        fnm, fgsm = train[f'FNM {key}'], train[f'FGSM {key}']
        bim = train[f'BIM-3 {key}']
        add(f'time FNM / FGSM ({key})', _ratio(_median(fnm), _median(fgsm)),
            1.05)
        add(f'time BIM-3 / FNM ({key})', _ratio(_median(bim), _median(fnm)))
    for name, entry in breakdown.items():
        stats = entry['stats']
        attack = stats['attack_forward']['median'] + \
            stats['attack_backward']['median']
        add(f'floor of {name} / clean from its breakdown',
            1 + _ratio(attack, stats['train_step']['median']), None,
            '1 + (attack forward + backward) / training step')
    for name, entry in train.items():
        if name == 'clean':
            continue
        target = 1.10 if name.startswith('FNM') else None
        add(
            f'peak memory {name} / clean',
            _ratio(entry['peak_memory_bytes'], clean['peak_memory_bytes']),
            target, "the attack's graph is freed before the training pass"
            if target else '')
    sweeps = sweep['settings']
    clean_pred = _median(sweeps['clean prediction'])
    reuse = _median(sweeps['FGSM, gradient reuse'])
    each = _median(sweeps['FGSM, radius by radius'])
    bim10 = _median(sweeps['BIM-10'])
    add('sweep FGSM with / without gradient reuse',
        _ratio(reuse - clean_pred, each - clean_pred), 0.4,
        'attack work and its predictions, clean prediction excluded')
    add(
        'sweep FGSM with / without gradient reuse, clean prediction '
        'included', _ratio(reuse, each))
    add('sweep BIM-10 / FGSM with reuse',
        _ratio(bim10 - clean_pred, reuse - clean_pred))
    # With n radii > 0: reuse = A + n P, radius by radius = n A + n P, for
    # one gradient A and one prediction P.  Their ratio bounds the first.
    n = sum(eps > 0 for eps in sweep['epsilons'])
    gradient = (each - reuse) / (n - 1)
    prediction = (reuse - clean_pred - gradient) / n
    needed = n * (1 - 0.4) / (n * 0.4 - 1)
    add(
        'sweep: one FGSM gradient / one prediction (A / P)',
        _ratio(gradient, prediction), None,
        f'reuse ratio = (A/P + {n}) / ({n} A/P + {n}); <= 0.4 needs A/P '
        f'>= {needed:.2f}')
    bim_step = _median(strong['BIM-10'])
    for name, entry in strong.items():
        if name != 'BIM-10':
            add(f'time per gradient step {name} / BIM-10',
                _ratio(_median(entry), bim_step), 1.15,
                'same images; the bookkeeping next to the gradient')
    return rows


def _ms(seconds) -> str:
    return 'n/a' if seconds is None else f'{seconds * 1000:.1f}'


def _x(value) -> str:
    return 'n/a' if value is None else f'{value:.3f}'


def tables(result: dict) -> str:
    train, breakdown = result['training'], result['breakdown']
    sweep = result['sweep']
    clean = train['clean']
    rows = []
    for name, entry in train.items():
        stats = entry['stats']
        peak = entry['peak_memory_bytes']
        rows.append([
            name, f"{entry['attacked_fraction']:.2f}",
            _ms(stats['median']), f"{_ms(stats['p25'])}-{_ms(stats['p75'])}",
            _x(_ratio(stats['median'], _median(clean))),
            'n/a' if peak is None else f'{peak / MB:.1f}',
            _x(_ratio(peak, clean['peak_memory_bytes']))
        ])
    text = [
        '### Training iteration (median over '
        f"{clean['stats']['n']} interleaved rounds)", '',
        markdown_table([
            'variant', 'attacked fraction', 'ms', 'IQR ms', 'x clean',
            'peak MB', 'x clean'
        ], rows)
    ]
    for name, entry in breakdown.items():
        stats = entry['stats']
        total = stats['total']['median']
        rows = [[
            part,
            _ms(stats[part]['median']),
            f"{100 * stats[part]['median'] / total:.0f}%"
        ] for part in ('data', 'attack_forward', 'attack_backward',
                       'attack_other', 'train_step')]
        rows.append(['total (median of sums)', _ms(total), ''])
        text += [
            '', f'### Breakdown of an {name} iteration (attacked fraction '
            f"{stats['fraction']['mean']:.2f})", '',
            markdown_table(['part', 'ms', 'share'], rows)
        ]
    rows = [[name, _ms(_median(entry))]
            for name, entry in sweep['settings'].items()]
    text += [
        '', f"### Robustness sweep per image ({len(sweep['epsilons'])} "
        f"radii, image {sweep['image_size'][0]}x{sweep['image_size'][1]}, "
        f"batch {sweep['images']})", '',
        markdown_table(['setting', 'ms / image'], rows)
    ]
    rows = [[name, f"{entry['gradient_steps']:g}",
             _ms(_median(entry))]
            for name, entry in result['strong_attacks'].items()]
    text += [
        '', '### Strong attacks per gradient step (eps 0.03, no early stop)',
        '',
        markdown_table(['attack', 'gradient steps', 'ms / step'], rows)
    ]
    rows = [[
        r['name'],
        _x(r['value']), '' if r['target'] is None else f"<= {r['target']:g}",
        '' if r['met'] is None else ('met' if r['met'] else 'MISSED'),
        r['note']
    ] for r in result['ratios']]
    text += [
        '', '### Ratios', '',
        markdown_table(['ratio', 'value', 'target', '', 'note'], rows)
    ]
    return '\n'.join(text)


def _log(line: str) -> None:
    """Progress, on stderr (the tables go to stdout)."""
    print(line, file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    clock = Clock(device, args.cpu_time)
    started = time.time()
    with threads(args.threads):
        machine = machine_info(device)
        runner = build_runner(args)
        cfg = runner.cfg
        runner.optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
        runner.optim_wrapper.initialize_count_status(runner.model, 0, 10**9)
        train_loader, train_data = build_loader(runner, cfg, 'train',
                                                args.batch_size, args)
        source, timed = build_source_loop(runner, train_loader, args, clock)
        batches = [
            next(source.dataloader_iterator) for _ in range(args.num_batches)
        ]
        loops = build_train_loops(
            runner, batches, getattr(train_loader.dataset, 'metainfo', {}),
            args)
        training = bench_training(runner, loops, batches, args, clock)
        breakdown = bench_breakdown(runner, source, timed, args, clock)
        sweep_loader, sweep_data = build_loader(runner, cfg, 'test',
                                                args.sweep_batch_size, args)
        sweep = bench_sweep(runner, sweep_loader, args, clock)
        strong = bench_strong_attacks(runner, sweep_loader, args, clock)
        if hasattr(os, 'getloadavg'):
            machine['load_average_end'] = list(os.getloadavg())
    result = dict(
        machine=machine,
        versions=package_versions(),
        settings=dict(
            config=osp.abspath(args.config),
            cfg_options=args.cfg_options,
            device=str(device),
            data=dict(train=train_data, test=sweep_data),
            batch_size=len(batches[0]['inputs']),
            input_size=list(batches[0]['inputs'][0].shape[-2:]),
            optim_wrapper=repr(runner.optim_wrapper.optimizer),
            attacks=TRAIN_ATTACKS,
            adv_probs=args.adv_probs,
            rounds=args.rounds,
            warmup=args.warmup,
            memory_iters=args.memory_iters,
            breakdown_iters=args.breakdown_iters,
            sweep_rounds=args.sweep_rounds,
            sweep_warmup=args.sweep_warmup,
            num_batches=args.num_batches,
            seed=args.seed,
            quick=args.quick,
            timing=clock.kind,
            weights='as constructed (no checkpoint, no pretrained '
            'weights)'),
        training=training,
        breakdown=breakdown,
        sweep=sweep,
        strong_attacks=strong,
        seconds=time.time() - started)
    result['ratios'] = ratios(training, breakdown, sweep, strong, args)
    result['table'] = tables(result)
    print(result['table'])
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    table = osp.splitext(args.out)[0] + '.md'
    with open(table, 'w') as f:
        f.write(result['table'] + '\n')
    print(f'\nwritten: {args.out} and {table}')
    return result


if __name__ == '__main__':
    main()
