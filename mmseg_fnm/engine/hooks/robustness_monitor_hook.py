"""Watch for catastrophic overfitting while training."""
import numbers
from typing import Dict, List, Optional, Union

import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import all_reduce, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from mmseg_fnm.attacks import BaseAttack, SegmentorAttacker, build_attack
from mmseg_fnm.attacks.segmentor import ignore_index_of, unwrap_model

ACTIONS = ('warn', 'stop')


@HOOKS.register_module()
class RobustnessMonitorHook(Hook):
    """Measure FGSM and BIM robustness on a fixed held-out set while
    training, and react when BIM robustness collapses but FGSM's does not.

    That divergence is catastrophic overfitting (Wong et al. 2020; paper,
    section 2.2): the model has learned to defeat the single-step attack
    it trains on, not to be robust.  Every ``interval`` iterations the
    model (in eval mode) is attacked on the first ``num_samples`` images of
    the validation set, and pixel accuracy over labelled pixels is logged
    as ``monitor/clean_acc``, ``monitor/fgsm_acc`` and ``monitor/bim_acc``
    to the text log and every visualizer backend.  A collapse is declared
    when BIM accuracy falls below ``(1 - drop)`` times its best value so far
    while FGSM accuracy stays at or above ``(1 - drop)`` times its best.
    The samples are split across ranks and the counts summed, so every
    rank takes the same decision.

    Args:
        interval (int): Iterations between measurements. Defaults to 500.
        num_samples (int): Held-out images. Defaults to 8.
        fgsm (dict): The single-step attack. Defaults to FGSM at 0.03.
        bim (dict): The multi-step attack. Defaults to BIM at 0.03 with
            alpha 0.004 and 10 steps (the paper's evaluation attack).
        drop (float): Relative drop that counts as a collapse, in (0, 1).
            Defaults to 0.3.
        action (str): ``'warn'`` (default) or ``'stop'`` (ends training
            through the loop's ``stop_training`` flag, after a warning).
    """

    priority = 'NORMAL'

    def __init__(self,
                 interval: int = 500,
                 num_samples: int = 8,
                 fgsm: Union[dict, BaseAttack] = dict(type='FGSM', eps=0.03),
                 bim: Union[dict, BaseAttack] = dict(
                     type='BIM', eps=0.03, alpha=0.004, steps=10),
                 drop: float = 0.3,
                 action: str = 'warn') -> None:
        for name, value in (('interval', interval), ('num_samples',
                                                     num_samples)):
            if isinstance(value,
                          bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'RobustnessMonitorHook.{name} must be an '
                                 f'integer >= 1, got {value!r}')
        if isinstance(drop, bool) or not isinstance(
                drop, numbers.Real) or not 0 < drop < 1:
            raise ValueError('RobustnessMonitorHook.drop must be in (0, 1), '
                             f'got {drop!r}')
        if action not in ACTIONS:
            raise ValueError(f'RobustnessMonitorHook.action must be one of '
                             f'{ACTIONS}, got {action!r}')
        self.interval = interval
        self.num_samples = num_samples
        self.attacks: Dict[str, BaseAttack] = dict(
            fgsm=build_attack(fgsm), bim=build_attack(bim))
        self.drop = float(drop)
        self.action = action
        self.attacker = SegmentorAttacker(norm_mode='eval')
        self.best: Dict[str, float] = {}
        self.history: List[Dict[str, float]] = []
        self._samples: Optional[list] = None

    def before_train(self, runner) -> None:
        if runner.val_loop is None:
            raise ValueError('RobustnessMonitorHook needs a val_dataloader '
                             '(with val_cfg and val_evaluator) for its '
                             'held-out images; configure one or remove the '
                             'hook')
        dataset = runner.val_loop.dataloader.dataset
        rank, world_size = get_dist_info()
        count = min(self.num_samples, len(dataset))
        self._samples = [dataset[i] for i in range(rank, count, world_size)]

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self.check(runner)

    def check(self, runner) -> Dict[str, float]:
        """Measure, log and react; returns the accuracies."""
        accuracy = self.measure(runner.model)
        step = runner.iter + 1
        runner.visualizer.add_scalars(
            {
                f'monitor/{k}_acc': v
                for k, v in accuracy.items()
            }, step=step)
        print_log(
            f'Robustness monitor (iter {step}): clean '
            f'{accuracy["clean"]:.4f}, FGSM {accuracy["fgsm"]:.4f}, BIM '
            f'{accuracy["bim"]:.4f} pixel accuracy on '
            f'{self.num_samples} held-out images',
            logger='current')
        for key, value in accuracy.items():
            self.best[key] = max(self.best.get(key, value), value)
        self.history.append(dict(accuracy, iter=step))
        keep = 1 - self.drop
        if accuracy['bim'] < keep * self.best['bim'] and \
                accuracy['fgsm'] >= keep * self.best['fgsm']:
            message = (
                f'Catastrophic overfitting suspected at iter {step}: BIM '
                f'accuracy {accuracy["bim"]:.4f} fell below {keep:.2f} x its '
                f'best {self.best["bim"]:.4f} while FGSM accuracy '
                f'{accuracy["fgsm"]:.4f} held (best '
                f'{self.best["fgsm"]:.4f}).')
            if self.action == 'stop':
                message += ' Stopping training (action="stop").'
                runner.train_loop.stop_training = True
            print_log(message, logger='current', level=30)
        return accuracy

    def measure(self, model) -> Dict[str, float]:
        """Pixel accuracy (labelled pixels) clean, under FGSM and BIM."""
        if self._samples is None:
            raise RuntimeError('RobustnessMonitorHook.measure() before '
                               'before_train()')
        segmentor = unwrap_model(model)
        ignore_index = ignore_index_of(segmentor)
        was_training = segmentor.training
        names = ['clean', *self.attacks]
        device = next(segmentor.parameters()).device
        counts = torch.zeros(len(names), 2, dtype=torch.float64, device=device)
        segmentor.eval()
        try:
            for sample in self._samples:
                batch = pseudo_collate([sample])
                for row, name in enumerate(names):
                    inputs = batch['inputs']
                    if name != 'clean':
                        inputs, _ = self.attacker.attack(
                            model, self.attacks[name], batch, 'predict')
                    with torch.no_grad():
                        result = model.test_step(
                            dict(
                                inputs=inputs,
                                data_samples=[
                                    s.clone() for s in batch['data_samples']
                                ]))[0]
                    pred = result.pred_sem_seg.data[0]
                    label = result.gt_sem_seg.data[0].to(pred.device)
                    mask = label != ignore_index
                    counts[row, 0] += (pred[mask] == label[mask]).sum()
                    counts[row, 1] += mask.sum()
        finally:
            segmentor.train(was_training)
        all_reduce(counts)
        accuracy = counts[:, 0] / counts[:, 1].clamp_min(1)
        return {name: float(acc) for name, acc in zip(names, accuracy)}

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['robustness_monitor'] = dict(best=dict(self.best))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('robustness_monitor')
        if state:
            self.best = dict(state['best'])
