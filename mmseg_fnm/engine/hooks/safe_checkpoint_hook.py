from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from mmseg_fnm.utils.checkpoint import make_checkpoint_safe, restore_checkpoint


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Make Runner checkpoints loadable with ``weights_only=True``.

    Before a checkpoint is written, objects that the restricted unpickler
    of ``torch.load(weights_only=True)`` refuses (the message hub's
    ``HistoryBuffer`` objects, numpy arrays and scalars) are rewritten into
    tensors, Python scalars and tagged dicts; after loading they are turned
    back, before the Runner hands the message hub state to
    ``MessageHub.load_state_dict``. See :mod:`mmseg_fnm.utils.checkpoint`.

    The hook runs last (priority ``LOWEST``), so it also covers what other
    hooks add in their own ``before_save_checkpoint``.  Loading local files
    restores the values already in the checkpoint loader, so other hooks'
    ``after_load_checkpoint`` see the original objects; restoring again
    here covers other storage backends and is a no-op otherwise.

    Examples:
        >>> default_hooks = dict(safe_checkpoint=dict(
        ...     type='SafeCheckpointHook'))
    """

    priority = 'LOWEST'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Rewrite ``checkpoint`` in place into weights-only-safe values.

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The checkpoint about to be written.
        """
        make_checkpoint_safe(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the values rewritten by :meth:`before_save_checkpoint`.

        Args:
            runner (Runner): The runner.
            checkpoint (dict): The loaded checkpoint, changed in place.
        """
        restore_checkpoint(checkpoint)
