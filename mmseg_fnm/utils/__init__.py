from .checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                         checkpoint_to_resume, convert_checkpoint, ensure_hook,
                         ensure_safe_checkpoint_hook, from_weights_only_safe,
                         has_hook, has_safe_checkpoint_hook, load_safe,
                         make_checkpoint_safe, restore_checkpoint,
                         to_weights_only_safe)
from .checkpoint_match import CheckpointMismatchError, check_state_dict
from .dist import distributed_session, end_distributed, setup_cpu_distributed
from .fileio import AtomicLocalBackend, atomic_write
from .random_state import get_random_state, set_random_state

__all__ = [
    'AtomicLocalBackend', 'atomic_write', 'checkpoint_to_resume',
    'ensure_hook', 'has_hook', 'get_random_state', 'set_random_state',
    'CorruptCheckpointError', 'CheckpointMismatchError', 'check_state_dict',
    'UnsafeCheckpointError', 'convert_checkpoint', 'distributed_session',
    'end_distributed', 'ensure_safe_checkpoint_hook', 'from_weights_only_safe',
    'has_safe_checkpoint_hook', 'load_safe', 'make_checkpoint_safe',
    'restore_checkpoint', 'setup_cpu_distributed', 'to_weights_only_safe'
]
