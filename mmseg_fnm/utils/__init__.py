from .checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                         convert_checkpoint, ensure_safe_checkpoint_hook,
                         from_weights_only_safe, has_safe_checkpoint_hook,
                         load_safe, make_checkpoint_safe, restore_checkpoint,
                         to_weights_only_safe)
from .checkpoint_match import CheckpointMismatchError, check_state_dict
from .dist import distributed_session, end_distributed, setup_cpu_distributed

__all__ = [
    'CorruptCheckpointError', 'CheckpointMismatchError', 'check_state_dict',
    'UnsafeCheckpointError', 'convert_checkpoint', 'distributed_session',
    'end_distributed', 'ensure_safe_checkpoint_hook', 'from_weights_only_safe',
    'has_safe_checkpoint_hook', 'load_safe', 'make_checkpoint_safe',
    'restore_checkpoint', 'setup_cpu_distributed', 'to_weights_only_safe'
]
