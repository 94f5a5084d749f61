import os
import pickle
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from mmseg_fnm.utils import (CorruptCheckpointError, UnsafeCheckpointError,
                             checkpoint_to_resume, convert_checkpoint,
                             ensure_hook, ensure_safe_checkpoint_hook,
                             from_weights_only_safe, has_safe_checkpoint_hook,
                             load_safe, make_checkpoint_safe,
                             to_weights_only_safe)

Pair = namedtuple('Pair', ['a', 'b'])


def _runner_like_checkpoint():
    """What mmengine's Runner puts into a checkpoint, plus numpy extras."""
    loss = HistoryBuffer()
    for value in (1.5, 1.25, 1.0):
        loss.update(value)
    count = HistoryBuffer([1, 2, 3], [1, 1, 1], max_length=10)
    # Pickling a HistoryBuffer adds its statistics methods (the source of
    # `builtins.getattr` in the pickle) to its __dict__.
    pickle.dumps(loss)
    return {
        'meta': {
            'seed': np.int64(7),
            'iter': 3,
            'dataset_meta': {
                'classes': ('a', 'b'),
                'palette': np.array([[0, 0, 0], [255, 0, 0]], np.uint8),
            },
            'cfg': ConfigDict(a=1),
        },
        'state_dict':
        OrderedDict(
            w=torch.arange(4.).reshape(2, 2),
            p=torch.nn.Parameter(torch.ones(1))),
        'message_hub': {
            'log_scalars':
            OrderedDict([('train/loss', loss), ('train/count', count)]),
            'runtime_info':
            OrderedDict(
                best_score=np.float64(0.25),
                names=np.array(['x', 'yz']),
                flags=np.array([True, False]),
                pair=Pair(np.float32(1.0), 2)),
            'resumed_keys':
            OrderedDict([('train/loss', True)]),
        },
        'optimizer': {
            'state': {
                0: {
                    'momentum_buffer': torch.zeros(2)
                }
            },
            'param_groups': [{
                'lr': 0.01,
                'params': [0]
            }]
        },
    }


def test_round_trip_through_weights_only_load(tmp_path):
    original = _runner_like_checkpoint()
    unsafe = tmp_path / 'unsafe.pth'
    torch.save(original, unsafe)
    # The premise: torch refuses what mmengine writes.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(unsafe, weights_only=True)

    safe = make_checkpoint_safe(_runner_like_checkpoint())
    path = tmp_path / 'safe.pth'
    torch.save(safe, path)
    loaded = torch.load(path, weights_only=True)
    assert not isinstance(loaded['message_hub']['log_scalars']['train/loss'],
                          HistoryBuffer)
    restored = from_weights_only_safe(loaded)

    hub = restored['message_hub']
    for key in ('train/loss', 'train/count'):
        buffer = hub['log_scalars'][key]
        expected = original['message_hub']['log_scalars'][key]
        assert isinstance(buffer, HistoryBuffer)
        assert buffer.max_length == expected.max_length
        for got, want in zip(buffer.data, expected.data):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    assert hub['log_scalars']['train/loss'].mean() == pytest.approx(1.25)
    assert hub['log_scalars']['train/loss'].current() == 1.0

    info = hub['runtime_info']
    assert type(info['best_score']) is float and info['best_score'] == 0.25
    np.testing.assert_array_equal(info['names'], np.array(['x', 'yz']))
    assert info['names'].dtype == np.array(['x', 'yz']).dtype
    assert info['flags'].dtype == np.bool_
    assert info['pair'] == (1.0, 2) and type(info['pair']) is tuple

    meta = restored['meta']
    assert meta['seed'] == 7 and type(meta['seed']) is int
    palette = meta['dataset_meta']['palette']
    assert palette.dtype == np.uint8 and palette.shape == (2, 3)
    assert palette[1, 0] == 255
    assert type(meta['cfg']) is dict and meta['cfg'] == {'a': 1}
    assert meta['dataset_meta']['classes'] == ('a', 'b')
    torch.testing.assert_close(restored['state_dict']['w'],
                               original['state_dict']['w'])
    assert isinstance(restored['state_dict'], OrderedDict)
    assert restored['optimizer']['param_groups'][0]['lr'] == 0.01


def test_unsupported_value_names_its_place():
    checkpoint = {'meta': {'hook': {'callback': object()}}}
    with pytest.raises(TypeError, match=r"checkpoint\['meta'\]\['hook'\]"):
        make_checkpoint_safe(checkpoint)
    with pytest.raises(TypeError, match='object array'):
        to_weights_only_safe(np.array([object()]), 'object array')


def test_getattr_is_never_allowlisted():
    import mmseg_fnm  # noqa: F401
    names = {
        getattr(g, '__name__', str(g))
        for g in torch.serialization.get_safe_globals()
    }
    assert 'getattr' not in names


def _mmengine_checkpoint():
    """What mmengine's Runner writes without SafeCheckpointHook."""
    loss = HistoryBuffer()
    for value in (1.5, 1.25, 1.0):
        loss.update(value)
    pickle.dumps(loss)  # adds the statistics methods to its __dict__
    return {
        'meta': {
            'cfg': 'a = 1',  # the Runner stores pretty_text
            'seed': np.int64(7),
            'iter': 3,
            'dataset_meta': {
                'classes': ('a', 'b'),
                'palette': np.array([[0, 0, 0], [255, 0, 0]], np.uint8),
            },
        },
        'state_dict': OrderedDict(w=torch.arange(4.).reshape(2, 2)),
        'message_hub': {
            'log_scalars': OrderedDict([('train/loss', loss)]),
            'runtime_info': {
                'iter': 3,
                'best_score': np.float64(0.5)
            },
            'resumed_keys': {
                'iter': True
            },
        },
        'optimizer': {
            'state': {},
            'param_groups': [{
                'lr': 0.01,
                'params': [0]
            }]
        },
    }


def test_plain_mmengine_checkpoint_loads_under_weights_only(tmp_path):
    path = str(tmp_path / 'plain_mmengine.pth')
    torch.save(_mmengine_checkpoint(), path)
    # its pickle needs getattr, HistoryBuffer and numpy
    assert 'builtins.getattr' in \
        torch.serialization.get_unsafe_globals_in_checkpoint(path)
    for loaded in (load_safe(path),
                   CheckpointLoader.load_checkpoint(path, map_location='cpu')):
        buffer = loaded['message_hub']['log_scalars']['train/loss']
        assert isinstance(buffer, HistoryBuffer)
        np.testing.assert_array_equal(buffer.data[0], [1.5, 1.25, 1.0])
        assert buffer.mean() == pytest.approx(1.25)
        assert loaded['meta']['seed'] == 7
        assert loaded['meta']['dataset_meta']['palette'].dtype == np.uint8
    # the allowlist was scoped to that load
    assert 'getattr' not in {
        getattr(g, '__name__', str(g))
        for g in torch.serialization.get_safe_globals()
    }


class _Exploit:

    def __reduce__(self):
        return (os.system, ('echo exploited', ))


@pytest.mark.parametrize('payload, named', [
    ({
        'meta': {
            'fn': print
        }
    }, 'print'),
    ({
        'meta': {
            'hook': _Exploit()
        }
    }, 'system'),
    ({
        'meta': {
            'bound': [1, 2].append
        }
    }, 'getattr(list'),
    ({
        'meta': {
            'array': np.array([None, 1], dtype=object)
        }
    }, 'object'),
])
def test_anything_else_is_refused_with_a_clear_error(tmp_path, payload, named):
    path = str(tmp_path / 'unsafe.pth')
    torch.save(payload, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_safe(path)
    message = str(info.value)
    assert path in message and named in message
    assert 'convert_checkpoint.py --trust-checkpoint' in message
    assert 'unsafe_safe.pth' in message
    # mmengine's loader for local files (load_from, resume, Pretrained
    # init) is ours, so the Runner gives the same error.
    with pytest.raises(UnsafeCheckpointError):
        CheckpointLoader.load_checkpoint(path, map_location='cpu')


def test_convert_checkpoint(tmp_path):
    src = str(tmp_path / 'plain.pth')
    dst = str(tmp_path / 'plain_safe.pth')
    torch.save(_runner_like_checkpoint(), src)
    with pytest.raises(PermissionError, match='trust'):
        convert_checkpoint(src, dst)
    with pytest.raises(ValueError, match='differ'):
        convert_checkpoint(src, src, trust_checkpoint=True)
    converted = convert_checkpoint(src, dst, trust_checkpoint=True)
    assert isinstance(converted['message_hub']['log_scalars']['train/loss'],
                      HistoryBuffer)
    torch.load(dst, weights_only=True)
    loaded = CheckpointLoader.load_checkpoint(dst, map_location='cpu')
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    np.testing.assert_array_equal(buffer.data[0], [1.5, 1.25, 1.0])


@pytest.mark.parametrize('hooks, present', [
    (dict(), False),
    (dict(default_hooks=dict(timer=dict(type='IterTimerHook'))), False),
    (dict(default_hooks=dict(x=dict(type='SafeCheckpointHook'))), True),
    (dict(custom_hooks=[dict(type='mmseg.SafeCheckpointHook')]), True),
])
def test_ensure_safe_checkpoint_hook(hooks, present):
    cfg = Config(hooks)
    assert has_safe_checkpoint_hook(cfg) is present
    assert ensure_safe_checkpoint_hook(cfg) is not present
    assert has_safe_checkpoint_hook(cfg)
    assert not ensure_safe_checkpoint_hook(cfg)
    if not present:
        assert cfg.default_hooks.safe_checkpoint.type == 'SafeCheckpointHook'
    if 'timer' in hooks.get('default_hooks', {}):
        assert cfg.default_hooks.timer.type == 'IterTimerHook'


def test_a_hook_set_to_none_stays_off():
    # --cfg-options default_hooks.random_state=None: off, and no None left
    # for mmengine (which accepts None only for its own default hooks).
    cfg = Config(dict(default_hooks=dict(random_state=None)))
    assert not ensure_hook(cfg, 'RandomStateHook', 'random_state')
    assert 'random_state' not in cfg.default_hooks
    assert ensure_hook(Config(), 'RandomStateHook', 'random_state')


@pytest.mark.parametrize('keep', [0.5, 0.0])
def test_truncated_checkpoint_is_named_with_what_to_do(tmp_path, keep):
    # what a job killed while writing leaves behind
    whole = str(tmp_path / 'whole.pth')
    torch.save(_mmengine_checkpoint(), whole)
    with open(whole, 'rb') as f:
        data = f.read()
    path = str(tmp_path / 'iter_80.pth')
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * keep)])
    for load in (load_safe,
                 lambda p: CheckpointLoader.load_checkpoint(p, 'cpu')):
        with pytest.raises(CorruptCheckpointError) as info:
            load(path)
        message = str(info.value)
        assert path in message and 'truncated or damaged' in message
        assert 'Delete' in message and '--resume' in message


def _work_dir(tmp_path, pointer, files=('iter_4.pth', 'iter_8.pth')):
    for name in files:
        (tmp_path / name).write_bytes(b'checkpoint')
    if pointer is not None:
        (tmp_path / 'last_checkpoint').write_text(pointer)
    return str(tmp_path)


def test_a_sound_or_absent_pointer_is_left_to_mmengine(tmp_path):
    work_dir = _work_dir(tmp_path, None)
    assert checkpoint_to_resume(work_dir) is None  # nothing saved yet
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    assert checkpoint_to_resume(work_dir) is None
    (tmp_path / 'last_checkpoint').write_text('s3://bucket/iter_4.pth')
    assert checkpoint_to_resume(work_dir) is None


@pytest.mark.parametrize('pointer', ['', '/work_dirs/run/iter_1', 'missing'])
def test_a_broken_pointer_resumes_from_the_newest_checkpoint(
        tmp_path, pointer):
    # a kill while mmengine wrote last_checkpoint leaves it empty or cut;
    # temporary files of unfinished writes and other .pth do not count
    work_dir = _work_dir(
        tmp_path, pointer,
        ('iter_4.pth', 'iter_12.pth', 'iter_8.pth', '.tmp-iter_16.pth.x1',
         'best_mIoU_iter_99.pth', 'iter_20.pth.bak'))
    assert checkpoint_to_resume(work_dir) == str(tmp_path / 'iter_12.pth')


def test_a_broken_pointer_without_checkpoints_is_refused(tmp_path):
    work_dir = _work_dir(tmp_path, '', files=('best_mIoU_iter_8.pth', ))
    with pytest.raises(FileNotFoundError) as info:
        checkpoint_to_resume(work_dir)
    message = str(info.value)
    assert 'last_checkpoint is empty' in message
    assert 'holds no iter_N.pth or epoch_N.pth' in message
    assert 'Delete last_checkpoint' in message
