"""Train loops that mix clean and adversarial samples (paper, section 4.1).

Each sample of a batch is replaced by its adversarial example with
probability ``adv_prob``; the attack runs only on the chosen samples.  The
choice (and any randomness of the attack) is drawn from a generator seeded
with ``(runner seed, iteration, rank)``, so it is reproducible and goes on
identically after ``--resume`` without any state in the checkpoint.

Only ``run_iter`` is overridden: resume skipping, ``stop_training``,
dynamic intervals and the final validation stay mmengine's.
"""
import numbers
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmseg.registry import LOOPS
from torch import Tensor
from torch.utils.data import DataLoader

from mmseg_fnm.attacks import BaseAttack, SegmentorAttacker, build_attack
from mmseg_fnm.attacks.segmentor import unwrap_model


@dataclass
class AttackRecord:
    """What the attack did in one iteration (read by hooks).

    Attributes:
        batch_size (int): Samples in the batch (this rank).
        indices (list[int]): Positions of the adversarial samples.
        eps (Tensor): Radius of each adversarial sample, on the CPU.
        seconds (float): Wall time spent generating them.
    """
    batch_size: int
    indices: List[int]
    eps: Tensor
    seconds: float

    @property
    def fraction(self) -> float:
        return len(self.indices) / max(self.batch_size, 1)


def _check_adv_prob(adv_prob) -> float:
    if isinstance(adv_prob, bool) or not isinstance(
            adv_prob, numbers.Real) or not 0 <= adv_prob <= 1:
        raise ValueError('train_cfg.adv_prob must be a probability in '
                         f'[0, 1] (paper: 0.5), got {adv_prob!r}')
    return float(adv_prob)


class AdversarialTrainingMixin:
    """Shared part of the adversarial train loops.

    Args:
        attack (dict | BaseAttack): The attack, e.g.
            ``dict(type='FastNewton')``.
        adv_prob (float): Probability that a sample is replaced by its
            adversarial example. Paper: 0.5.
        norm_mode (str): How norm layers behave while attacking: ``'eval'``
            (default) or ``'train'``; see
            :class:`mmseg_fnm.attacks.SegmentorAttacker`.
    """

    def _init_adversarial(self, attack: Union[dict, BaseAttack],
                          adv_prob: float, norm_mode: str) -> None:
        if attack is None:
            raise ValueError(
                "train_cfg.attack is missing: set e.g. attack=dict(type="
                "'FastNewton') or use the stock IterBasedTrainLoop")
        try:
            self.attack = build_attack(attack)
        except (KeyError, TypeError, ValueError) as error:
            raise type(error)(f'train_cfg.attack: {error}') from error
        self.adv_prob = _check_adv_prob(adv_prob)
        self.attacker = SegmentorAttacker(norm_mode=norm_mode)
        self.last_attack: Optional[AttackRecord] = None
        self.last_clean_batch: Optional[dict] = None
        self._lockstep: Optional[bool] = None

    def _generator(self) -> torch.Generator:
        seed = self.runner.seed if self.runner.seed is not None else 0
        rank, _ = get_dist_info()
        state = np.random.SeedSequence([seed, self._iter, rank])
        return torch.Generator().manual_seed(
            int(state.generate_state(1, dtype=np.uint64)[0] >> 1))

    def _needs_lockstep(self) -> bool:
        """Whether every rank must run the attack every iteration: norm
        layers in train mode that synchronise across ranks (SyncBN) would
        otherwise wait for a rank that chose no adversarial sample."""
        if self._lockstep is None:
            _, world_size = get_dist_info()
            model = unwrap_model(self.runner.model)
            self._lockstep = (
                world_size > 1 and self.attacker.norm_mode == 'train'
                and any('SyncBatchNorm' in type(m).__name__
                        for m in model.modules()))
        return self._lockstep

    def make_adversarial(self, data_batch: dict) -> dict:
        """Replace the chosen samples of ``data_batch`` by adversarial ones.

        Returns a new batch dict; the dataloader's batch is not modified.
        """
        inputs: Sequence[Tensor] = data_batch['inputs']
        samples = data_batch['data_samples']
        self.last_clean_batch = data_batch
        generator = self._generator()
        chosen = torch.rand(len(inputs), generator=generator) < self.adv_prob
        indices = chosen.nonzero().flatten().tolist()
        attacked = indices or ([0] if self._needs_lockstep() else [])
        if not attacked:
            self.last_attack = AttackRecord(
                len(inputs), [], torch.zeros(0), 0.)
            return data_batch

        optim_wrapper = self.runner.optim_wrapper
        self.attacker.autocast_dtype = (
            optim_wrapper.cast_dtype or torch.float16) if isinstance(
                optim_wrapper, AmpOptimWrapper) else None
        start = time.perf_counter()
        adv_inputs, eps = self.attacker.attack(
            self.runner.model,
            self.attack,
            dict(
                inputs=[inputs[i] for i in attacked],
                data_samples=[samples[i] for i in attacked]),
            objective='loss',
            generator=generator)
        if eps.is_cuda:
            torch.cuda.synchronize(eps.device)
        seconds = time.perf_counter() - start
        if not indices:  # lockstep pass only: nothing is replaced
            self.last_attack = AttackRecord(
                len(inputs), [], torch.zeros(0), seconds)
            return data_batch
        new_inputs = list(inputs)
        for i, adv in zip(indices, adv_inputs):
            new_inputs[i] = adv
        self.last_attack = AttackRecord(
            len(inputs), indices,
            eps.detach().cpu(), seconds)
        return dict(data_batch, inputs=new_inputs)

    def _train_on(self, idx: int, data_batch: dict) -> None:
        """mmengine's ``run_iter`` body with the adversarial replacement."""
        self.runner.call_hook(
            'before_train_iter', batch_idx=idx, data_batch=data_batch)
        data_batch = self.make_adversarial(data_batch)
        outputs = self.runner.model.train_step(
            data_batch, optim_wrapper=self.runner.optim_wrapper)
        self.runner.call_hook(
            'after_train_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=outputs)
        self._iter += 1


@LOOPS.register_module()
class AdversarialIterBasedTrainLoop(AdversarialTrainingMixin,
                                    IterBasedTrainLoop):
    """:class:`IterBasedTrainLoop` with adversarial training.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The training dataloader.
        max_iters (int): Total training iterations.
        val_begin (int): Iteration that starts validation. Defaults to 1.
        val_interval (int): Validation interval. Defaults to 1000.
        dynamic_intervals (list[tuple[int, int]], optional): Dynamic
            validation intervals. Defaults to None.
        attack (dict | BaseAttack): The attack. Defaults to the paper's
            ``dict(type='FastNewton')``.
        adv_prob (float): Probability of an adversarial sample. Defaults to
            0.5 (paper).
        norm_mode (str): Norm layers while attacking. Defaults to 'eval'.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 max_iters: int,
                 val_begin: int = 1,
                 val_interval: int = 1000,
                 dynamic_intervals: Optional[List] = None,
                 attack: Union[dict, BaseAttack] = dict(type='FastNewton'),
                 adv_prob: float = 0.5,
                 norm_mode: str = 'eval') -> None:
        # Validate first: bad settings must fail before data is touched.
        self._init_adversarial(attack, adv_prob, norm_mode)
        super().__init__(runner, dataloader, max_iters, val_begin,
                         val_interval, dynamic_intervals)

    def run_iter(self, data_batch: dict) -> None:
        self._train_on(self._iter, data_batch)


@LOOPS.register_module()
class AdversarialEpochBasedTrainLoop(AdversarialTrainingMixin,
                                     EpochBasedTrainLoop):
    """:class:`EpochBasedTrainLoop` with adversarial training.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The training dataloader.
        max_epochs (int): Total training epochs.
        val_begin (int): Epoch that starts validation. Defaults to 1.
        val_interval (int): Validation interval. Defaults to 1.
        dynamic_intervals (list[tuple[int, int]], optional): Dynamic
            validation intervals. Defaults to None.
        attack (dict | BaseAttack): The attack. Defaults to
            ``dict(type='FastNewton')``.
        adv_prob (float): Probability of an adversarial sample. Defaults to
            0.5.
        norm_mode (str): Norm layers while attacking. Defaults to 'eval'.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 max_epochs: int,
                 val_begin: int = 1,
                 val_interval: int = 1,
                 dynamic_intervals: Optional[List] = None,
                 attack: Union[dict, BaseAttack] = dict(type='FastNewton'),
                 adv_prob: float = 0.5,
                 norm_mode: str = 'eval') -> None:
        self._init_adversarial(attack, adv_prob, norm_mode)
        super().__init__(runner, dataloader, max_epochs, val_begin,
                         val_interval, dynamic_intervals)

    def run_iter(self, idx: int, data_batch: dict) -> None:
        self._train_on(idx, data_batch)
