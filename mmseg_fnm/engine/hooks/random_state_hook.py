import logging
from typing import Callable, Iterator, Optional

from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from mmseg.registry import HOOKS

from mmseg_fnm.utils.random_state import get_random_state, set_random_state

CHECKPOINT_KEY = 'random_states'


class _RestoreAfterSkip:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator`` on resume: passes
    the ``skip`` batches mmengine fetches to skip the trained ones, then
    restores the random states, puts the loop's iterator back and fetches
    the first batch to train on, as the uninterrupted run did."""

    def __init__(self, loop, skip: int, restore: Callable[[], None]):
        self.loop = loop
        self.iterator = loop.dataloader_iterator
        self.skip = skip
        self.restore = restore

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip > 0:
            self.skip -= 1
        else:
            self.loop.dataloader_iterator = self.iterator
            self.restore()
        return next(self.iterator)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Store the global random generators with each checkpoint, per rank,
    and restore them on ``--resume``, so that a killed and resumed training
    ends bit-identical to an uninterrupted one.

    What else a resumed run needs is already in place: mmengine stores the
    seed, the iteration, the optimizer, the schedulers and the message hub,
    and replays the sampler up to the resumed iteration; data loader
    workers are seeded by mmengine's ``worker_init_fn`` and replay their
    augmentations with the skipped batches; our adversarial train loops draw
    from generators seeded by (seed, iteration, rank).

    * Saving: the states are taken right after the training iteration (or
      epoch) that the checkpoint ends, where ``CheckpointHook`` saves. With
      several processes every rank's states are gathered then, because
      mmengine writes the checkpoint on rank 0 only; only iterations at
      which a ``CheckpointHook`` saves pay for the gather.
    * Restoring: epoch-based loops restore in ``before_train_epoch``.
      Iteration-based loops restore after mmengine's ``IterBasedTrainLoop``
      skipped the trained batches by loading them (which, with
      ``num_workers=0``, draws from the main process's generators) and
      before it loads the first batch to train on; no hook runs there, so
      the loop's ``dataloader_iterator`` is wrapped for those fetches.
    * Validation runs between ``before_val`` and ``after_val`` with the
      states put back afterwards, so validating, or resuming past a
      validation, does not change the training's random streams.

    A checkpoint without states (older ones, or one saved off the
    ``CheckpointHook`` schedule in a multi-process run) resumes with a
    warning; a different number of processes restores nothing.

    Examples:
        >>> default_hooks = dict(random_state=dict(type='RandomStateHook'))
    """

    # Before CheckpointHook (VERY_LOW) in after_train_iter/epoch, and before
    # SafeCheckpointHook (LOWEST) in before_save_checkpoint.
    priority = 'LOW'

    def __init__(self) -> None:
        self._snapshot: Optional[dict] = None
        self._pending: Optional[dict] = None
        self._val_state: Optional[dict] = None

    # -- saving -----------------------------------------------------------
    @staticmethod
    def _checkpoint_hooks(runner):
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def _take_snapshot(self, meta_iter: int, meta_epoch: int,
                       saves: bool) -> None:
        """Take the states, labelled with the checkpoint meta's ``iter``
        and ``epoch`` (one past the runner's counters, as
        ``Runner.save_checkpoint`` writes them)."""
        if not saves:
            # Every rank takes the same decision, so the gathers match up.
            return
        _, world_size = get_dist_info()
        states = [get_random_state()]
        if world_size > 1:
            states = all_gather_object(states[0])
        self._snapshot = dict(
            iter=meta_iter, epoch=meta_epoch, states=states)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        """Take the states (gathered over ranks) where a checkpoint is due.

        ``runner.iter`` still counts the iteration just run, as it does in
        ``CheckpointHook.after_train_iter``.
        """
        saves = any(
            not hook.by_epoch and (hook.every_n_train_iters(
                runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_iter(runner)))
            for hook in self._checkpoint_hooks(runner))
        self._take_snapshot(runner.iter + 1, runner.epoch, saves)

    def after_train_epoch(self, runner) -> None:
        """Take the states (gathered over ranks) where a checkpoint is due
        at the end of an epoch."""
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return
        saves = any(
            hook.by_epoch and (hook.every_n_epochs(
                runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_epoch(runner)))
            for hook in self._checkpoint_hooks(runner))
        self._take_snapshot(runner.iter, runner.epoch + 1, saves)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add the states of every rank to ``checkpoint``.

        Args:
            runner (Runner): The runner.
            checkpoint (dict): The checkpoint about to be written (rank 0).
        """
        meta = checkpoint.get('meta', {})
        snapshot = self._snapshot
        if snapshot is None or snapshot['iter'] != meta.get('iter') or \
                snapshot['epoch'] != meta.get('epoch'):
            _, world_size = get_dist_info()
            if world_size > 1:
                print_log(
                    'RandomStateHook: this checkpoint is saved off the '
                    "CheckpointHook's schedule, so the other ranks' random "
                    'states are not in it; resuming from it will not be '
                    'bit-identical.',
                    logger='current',
                    level=logging.WARNING)
                return
            # Inside validation (a best checkpoint) the training's states
            # are the ones validation will put back.
            snapshot = dict(states=[self._val_state or get_random_state()])
        checkpoint[CHECKPOINT_KEY] = snapshot['states']

    # -- restoring --------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the loaded states until training goes on.

        ``load_from`` (fine-tuning) calls this too; those states are never
        used, because training then starts at another iteration than the
        checkpoint's.
        """
        meta = checkpoint.get('meta', {})
        self._pending = dict(
            iter=meta.get('iter'),
            epoch=meta.get('epoch'),
            states=checkpoint.get(CHECKPOINT_KEY))

    def _is_resume(self, runner) -> bool:
        """Whether training goes on from the loaded checkpoint (and not,
        as after ``load_from``, from iteration 0)."""
        pending = self._pending
        return runner.iter > 0 and pending['iter'] == runner.iter and \
            pending['epoch'] == runner.epoch

    def _restore(self) -> None:
        pending, self._pending = self._pending, None
        states = pending['states']
        rank, world_size = get_dist_info()
        if states is None:
            print_log(
                'RandomStateHook: the resumed checkpoint holds no random '
                'states (written without this hook); training goes on with '
                'freshly seeded generators and will not be bit-identical to '
                'an uninterrupted run.',
                logger='current',
                level=logging.WARNING)
            return
        if len(states) != world_size:
            print_log(
                f'RandomStateHook: the checkpoint holds the random states of '
                f'{len(states)} processes, this run has {world_size}; they '
                'are not restored.',
                logger='current',
                level=logging.WARNING)
            return
        try:
            set_random_state(states[rank])
        except ValueError as error:
            print_log(
                f'RandomStateHook: {error} CUDA random states are not '
                'restored.',
                logger='current',
                level=logging.WARNING)

    def before_train_epoch(self, runner) -> None:
        """Restore the resumed states (epoch-based loops), or arrange it
        for after mmengine's skipping of trained batches (iteration-based
        loops)."""
        if self._pending is None:
            return
        if not self._is_resume(runner):
            self._pending = None
            return
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            self._restore()
        elif isinstance(getattr(loop, 'dataloader_iterator', None),
                        Iterator):
            loop.dataloader_iterator = _RestoreAfterSkip(
                loop, skip=runner.iter, restore=self._restore)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        """Restore the resumed states now if a loop without mmengine's
        ``dataloader_iterator`` left them pending."""
        loop = runner.train_loop
        if isinstance(getattr(loop, 'dataloader_iterator', None),
                      _RestoreAfterSkip):
            loop.dataloader_iterator = loop.dataloader_iterator.iterator
        if self._pending is not None and self._is_resume(runner):
            self._restore()
        self._pending = None

    # -- validation ---------------------------------------------------------
    def before_val(self, runner) -> None:
        """Remember the states, so that validation leaves them as they
        were."""
        self._val_state = get_random_state()

    def after_val(self, runner) -> None:
        """Put back the states of :meth:`before_val`."""
        if self._val_state is not None:
            set_random_state(self._val_state)
            self._val_state = None
