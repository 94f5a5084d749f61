"""Per-iteration statistics of adversarial training."""
from typing import Optional

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from mmseg_fnm.attacks.segmentor import decode_loss


@HOOKS.register_module()
class AdversarialStatsHook(Hook):
    """Log what the attack of an adversarial train loop did.

    Scalars are written to the message hub under ``train/``, so mmengine's
    ``LoggerHook`` puts them (smoothed over its window) into the text log,
    ``scalars.json`` and every visualizer backend (TensorBoard, W&B, ...):

    - ``adv/fraction``: fraction of the batch that was adversarial;
    - ``adv/time``: seconds spent generating adversarial examples;
    - ``adv/eps_mean``, ``adv/eps_min``, ``adv/eps_max``: radii of the
      adversarial samples (only iterations that had some);
    - ``adv/loss`` and ``adv/clean_loss`` every ``loss_interval``
      iterations: decode-head loss of the adversarial samples and of the
      same samples clean (one extra no-grad forward of each, norm layers
      in eval mode).

    Args:
        loss_interval (int): Interval of the loss measurement; 0 switches
            it off. Defaults to 50.
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL) in the same iter

    def __init__(self, loss_interval: int = 50) -> None:
        if isinstance(loss_interval, bool) or not isinstance(
                loss_interval, int) or loss_interval < 0:
            raise ValueError('AdversarialStatsHook.loss_interval must be an '
                             f'integer >= 0, got {loss_interval!r}')
        self.loss_interval = loss_interval

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        record = getattr(runner.train_loop, 'last_attack', None)
        if record is None:
            return
        hub = runner.message_hub
        hub.update_scalar('train/adv/fraction', record.fraction)
        hub.update_scalar('train/adv/time', record.seconds)
        if not record.indices:
            return
        hub.update_scalar('train/adv/eps_mean', float(record.eps.mean()))
        hub.update_scalar('train/adv/eps_min', float(record.eps.min()))
        hub.update_scalar('train/adv/eps_max', float(record.eps.max()))
        if self.loss_interval and data_batch is not None and \
                self.every_n_train_iters(runner, self.loss_interval):
            # The loop passes the mixed batch: adversarial at `indices`.
            adversarial = self._select(data_batch, record.indices)
            hub.update_scalar('train/adv/loss',
                              decode_loss(runner.model, adversarial))
            clean = getattr(runner.train_loop, 'last_clean_batch', None)
            if clean is not None:
                hub.update_scalar(
                    'train/adv/clean_loss',
                    decode_loss(runner.model,
                                self._select(clean, record.indices)))

    @staticmethod
    def _select(data_batch: dict, indices) -> dict:
        return dict(
            inputs=[data_batch['inputs'][i] for i in indices],
            data_samples=[data_batch['data_samples'][i] for i in indices])
