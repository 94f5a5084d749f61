"""Test and validation loops that sweep attacks over radii (paper, 4.1).

Each batch is loaded once; the clean prediction serves every attack's
radius 0; FGSM computes its input gradient once per image for all radii;
BIM, APGD, SegPGD and SEA run only where the radius is positive.
Predictions under attack and the attack's budget (forward and backward
passes per image, wall time) are handed to
:class:`~mmseg_fnm.evaluation.RobustnessMetric` with the clean output of
each image (one metric entry per image).
"""
import numbers
import os.path as osp
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import is_main_process
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from mmengine.runner import TestLoop, ValLoop
from mmseg.registry import LOOPS
from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from torch.utils.data import DataLoader

from mmseg_fnm.attacks import BaseAttack, SegmentorAttacker, build_attack
from mmseg_fnm.evaluation import RobustnessMetric
from mmseg_fnm.evaluation.robustness_metric import ADV_COSTS, ADV_PREDS

#: The paper's evaluation: FGSM and BIM (N=10, alpha=0.004), eps 0..0.04.
DEFAULT_ATTACKS = (dict(type='FGSM'), dict(type='BIM', alpha=0.004, steps=10))
DEFAULT_EPSILONS = (0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04)


def build_attacks(cfgs: Sequence[Union[dict, BaseAttack]],
                  where: str) -> Dict[str, BaseAttack]:
    """Build named attacks; ``name`` in a config overrides the type name."""
    if not cfgs:
        raise ValueError(f'{where}.attacks is empty: give at least one, '
                         "e.g. [dict(type='FGSM')]")
    attacks: Dict[str, BaseAttack] = {}
    for cfg in cfgs:
        cfg = dict(cfg) if isinstance(cfg, dict) else cfg
        name = cfg.pop('name', None) if isinstance(cfg, dict) else None
        try:
            with warnings.catch_warnings():
                # Reachability is checked against the sweep's radii below.
                warnings.simplefilter('ignore', UserWarning)
                attack = build_attack(cfg)
        except (KeyError, TypeError, ValueError) as error:
            raise type(error)(f'{where}.attacks: {error}') from error
        if not getattr(attack, 'sweepable', False):
            raise ValueError(
                f'{where}.attacks: {type(attack).__name__} cannot be swept '
                'over radii; use attacks with a radius such as FGSM or BIM')
        name = name or attack.name
        if name in attacks or name in ('clean', 'worst'):
            raise ValueError(f'{where}.attacks: the name {name!r} is used '
                             "twice or reserved; set dict(name='...')")
        attacks[name] = attack
    return attacks


def attack_weight(attack: BaseAttack) -> float:
    """Gradient passes per image and radius of an attack (its nominal
    budget), so that progress and the time left weigh SEA's hundreds of
    passes against FGSM's one."""
    budget = getattr(attack, 'nominal_budget', None)
    if budget is not None:
        return float(budget()[1])
    return float(getattr(attack, 'steps', 1))


class SweepProgress:
    """Progress of a sweep over (batch, attack, radius), weighted by each
    attack's nominal gradient passes, with the time left.

    On a terminal it is a rich progress bar; otherwise (log files of
    cluster jobs) a log line at most every ``interval`` seconds.

    Args:
        total (float): Total weight of the sweep.
        interval (float): Seconds between log lines when not on a
            terminal. Defaults to 60.
    """

    def __init__(self, total: float, interval: float = 60.) -> None:
        self.total = max(total, 1e-9)
        self.done = 0.
        self.interval = interval
        self.started = time.perf_counter()
        self.logged = self.started
        self.bar = None
        if sys.stdout.isatty():
            self.bar = Progress(
                TextColumn('robustness [{task.fields[setting]}]'), BarColumn(),
                TextColumn('{task.percentage:>3.0f}%'), TimeElapsedColumn(),
                TimeRemainingColumn())
            self.bar.add_task('', total=self.total, setting='')
            self.bar.start()

    def begin(self, attack: str, eps: float) -> None:
        """A setting starts."""
        self.setting = f'{attack} eps {eps:g}'
        if self.bar is not None:
            self.bar.update(self.bar.task_ids[0], setting=self.setting)

    def advance(self, weight: float) -> None:
        """A setting of one batch is done."""
        self.done += weight
        if self.bar is not None:
            self.bar.advance(self.bar.task_ids[0], weight)
            return
        now = time.perf_counter()
        if now - self.logged >= self.interval or self.done >= self.total:
            self.logged = now
            elapsed = now - self.started
            left = elapsed * (self.total - self.done) / max(self.done, 1e-9)
            print_log(
                f'robustness [{self.setting}]: '
                f'{100 * self.done / self.total:.0f}% of the sweep after '
                f'{_duration(elapsed)}, about {_duration(left)} left',
                logger='current')

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{seconds:02d}'


def _synchronized_time(start: float) -> float:
    """Seconds since ``start`` once the GPU's queued work is done."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def check_epsilons(epsilons: Sequence[float], where: str) -> List[float]:
    """Validate the radii of a sweep; returns them sorted."""
    if isinstance(epsilons, (str, bytes)) or not epsilons:
        raise ValueError(f'{where}.epsilons must be a non-empty list of '
                         'radii in [0, 1] pixel units, e.g. [0, 0.01, 0.02]')
    values = []
    for eps in epsilons:
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or \
                not 0 <= eps <= 1:
            raise ValueError(f'{where}.epsilons: {eps!r} is not a radius '
                             'in [0, 1]')
        values.append(float(eps))
    if len(set(values)) != len(values):
        raise ValueError(f'{where}.epsilons has duplicates: {values}')
    return sorted(values)


def warn_unreachable(attacks: Dict[str, BaseAttack], largest: float,
                     where: str) -> None:
    """Warn about attacks that cannot reach the largest radius."""
    for name, attack in attacks.items():
        steps = getattr(attack, 'steps', None)
        alpha = getattr(attack, 'alpha', None)
        if steps and alpha and not getattr(attack, 'random_start', False) \
                and alpha * steps < largest * (1 - 1e-6):
            warnings.warn(
                f'{where}: {name} cannot reach the radius {largest}: alpha '
                f'* steps = {alpha * steps:g}; its curve flattens there',
                UserWarning)


class RobustnessLoopMixin:
    """Shared part of :class:`RobustnessTestLoop` and
    :class:`RobustnessValLoop`."""

    def _init_robustness(self, runner, evaluator, attacks, epsilons,
                         where: str):
        self.attacks = build_attacks(attacks, where)
        self.epsilons = check_epsilons(epsilons, where)
        warn_unreachable(self.attacks, max(self.epsilons), where)
        self.attacker = SegmentorAttacker(norm_mode='eval')
        return self._robustness_evaluator(runner, evaluator)

    @staticmethod
    def _robustness_evaluator(runner, evaluator) -> Evaluator:
        """The evaluator with mmseg's IoUMetric swapped for
        RobustnessMetric (same ignore_index), so that a config only has to
        change ``test_cfg``."""
        if not isinstance(evaluator, (dict, list)):
            return evaluator
        cfgs = evaluator if isinstance(evaluator, list) else [evaluator]
        swapped = []
        for cfg in cfgs:
            cfg = dict(cfg)
            if cfg.get('type') in ('IoUMetric', 'mmseg.IoUMetric'):
                cfg = dict(
                    type='RobustnessMetric',
                    ignore_index=cfg.get('ignore_index', 255),
                    nan_to_num=cfg.get('nan_to_num'),
                    prefix=cfg.get('prefix'))
            swapped.append(cfg)
        return runner.build_evaluator(swapped)

    def _metrics(self) -> List[RobustnessMetric]:
        metrics = [
            m for m in self.evaluator.metrics
            if isinstance(m, RobustnessMetric)
        ]
        if not metrics:
            raise ValueError(
                'The robustness loops need a RobustnessMetric in the '
                "evaluator (e.g. test_evaluator = dict(type='"
                "RobustnessMetric')) or an IoUMetric to replace")
        return metrics

    def _prepare_report(self) -> None:
        runner = self.runner
        for metric in self._metrics():
            if metric.output_dir is None:
                metric.output_dir = runner.log_dir
            config = getattr(runner.cfg, 'filename', None)
            metric.source.update(
                checkpoint=runner._load_from,
                config=None if config is None else osp.abspath(config),
                attacks={
                    k: repr(v)
                    for k, v in self.attacks.items()
                })

    def _attacked_outputs(self, data_batch: dict, step_fn, progress=None):
        """Clean outputs of a batch with every setting's predictions and
        costs attached as ``adv_preds`` and ``adv_costs``."""
        model = self.runner.model
        with torch.no_grad():
            outputs = step_fn(data_batch)
        preds: List[Dict[Tuple[str, float],
                         torch.Tensor]] = [{} for _ in outputs]
        costs: List[Dict[Tuple[str, float],
                         Tuple[float, ...]]] = [{} for _ in outputs]
        for name, attack in self.attacks.items():
            sweep = self.attacker.sweep(model, attack, data_batch,
                                        self.epsilons)
            for expected in self.epsilons:
                if progress is not None:
                    progress.begin(name, expected)
                start = time.perf_counter()
                eps, inputs, out = next(sweep)
                seconds = _synchronized_time(start) / len(outputs)
                if eps == 0:
                    continue  # the clean outputs are radius 0
                adv_batch = dict(
                    inputs=inputs,
                    data_samples=[
                        s.clone() for s in data_batch['data_samples']
                    ])
                with torch.no_grad():
                    adv_outputs = step_fn(adv_batch)
                for i, adv in enumerate(adv_outputs):
                    pred = adv.pred_sem_seg.data
                    # uint8 keeps K predictions per image affordable.
                    if pred.max() < 256:
                        pred = pred.to(torch.uint8)
                    preds[i][(name, eps)] = pred
                    costs[i][(name, eps)] = (float(out.forwards[i]),
                                             float(out.backwards[i]), seconds)
                if progress is not None:
                    progress.advance(attack_weight(attack))
        for out, pred, cost in zip(outputs, preds, costs):
            out.set_field(pred, ADV_PREDS)
            out.set_field(cost, ADV_COSTS)
        return outputs

    def _iterate(self, mode: str, idx: int, data_batch: dict) -> None:
        """One batch: mmengine's ``run_iter`` with the sweep inside."""
        if idx == 0:
            self._prepare_report()
            self._progress = self._start_progress()
        step_fn = getattr(self.runner.model, f'{mode}_step')
        self.runner.call_hook(
            f'before_{mode}_iter', batch_idx=idx, data_batch=data_batch)
        outputs = self._attacked_outputs(data_batch, step_fn, self._progress)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(
            f'after_{mode}_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=outputs)

    def _start_progress(self) -> Optional[SweepProgress]:
        """Progress of the sweep with the time left (rank 0): a SEA sweep
        takes hours."""
        if not is_main_process():
            return None
        per_batch = sum(
            attack_weight(attack) for attack in self.attacks.values()) * sum(
                eps > 0 for eps in self.epsilons)
        return SweepProgress(len(self.dataloader) * per_batch)

    def _finish(self, run, send_curves: bool) -> dict:
        """Run mmengine's loop, then close the bar (and send the curves)."""
        self._progress = None
        try:
            metrics = run()
        finally:
            if self._progress is not None:
                self._progress.stop()
        if send_curves:
            self._send_curves(metrics, 'robustness')
        return metrics

    def _send_curves(self, metrics: dict, tag: str) -> None:
        """Curves to the visualizer backends: x = radius in 1/1000."""
        visualizer = self.runner.visualizer
        for key, value in metrics.items():
            parts = key.split('/')
            if len(parts) == 3 and parts[1].startswith('eps_'):
                step = int(round(float(parts[1][4:]) * 1000))
                visualizer.add_scalar(
                    f'{tag}/{parts[0]}/{parts[2]}', value, step=step)


@LOOPS.register_module()
class RobustnessTestLoop(RobustnessLoopMixin, TestLoop):
    """Test loop that reports mIoU under attack over a sweep of radii.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The test dataloader.
        evaluator (Evaluator | dict | list): The evaluator; an
            ``IoUMetric`` is replaced by a ``RobustnessMetric``.
        attacks (list[dict]): Attacks to sweep. Defaults to FGSM and BIM
            (N=10, alpha=0.004), the paper's evaluation.
        epsilons (list[float]): Radii. Defaults to 0, 0.005, ..., 0.04.
        fp16 (bool): Unused (attacks run in full precision); kept for
            mmengine's signature.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List],
                 attacks: Sequence[dict] = DEFAULT_ATTACKS,
                 epsilons: Sequence[float] = DEFAULT_EPSILONS,
                 fp16: bool = False) -> None:
        evaluator = self._init_robustness(runner, evaluator, attacks, epsilons,
                                          'test_cfg')
        super().__init__(runner, dataloader, evaluator, fp16)
        self._metrics()  # fail at build time, before any image
        self._progress: Optional[SweepProgress] = None

    def run(self) -> dict:
        # Test metrics do not reach the visualizer backends by themselves.
        return self._finish(super().run, send_curves=True)

    def run_iter(self, idx: int, data_batch: dict) -> None:
        self._iterate('test', idx, data_batch)


@LOOPS.register_module()
class RobustnessValLoop(RobustnessLoopMixin, ValLoop):
    """Validation loop with an attack sweep, to run during training.

    Its ``mIoU`` key is the clean mIoU (for ``save_best``); the curves are
    logged as ``<attack>/eps_<r>/mIoU``.  Same arguments as
    :class:`RobustnessTestLoop`.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List],
                 attacks: Sequence[dict] = DEFAULT_ATTACKS,
                 epsilons: Sequence[float] = DEFAULT_EPSILONS,
                 fp16: bool = False) -> None:
        evaluator = self._init_robustness(runner, evaluator, attacks, epsilons,
                                          'val_cfg')
        super().__init__(runner, dataloader, evaluator, fp16)
        self._metrics()
        self._progress: Optional[SweepProgress] = None

    def run(self) -> dict:
        # LoggerHook sends val metrics to the backends at the training
        # step; a radius axis would be overwritten by every validation.
        return self._finish(super().run, send_curves=False)

    def run_iter(self, idx: int, data_batch: dict) -> None:
        self._iterate('val', idx, data_batch)
