import importlib.util
import os.path as osp

import pytest

from mmseg_fnm.utils.testing import write_tiny_seg_dataset

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load_tool(name):
    # tools/ is not a package: import tools/{name}.py by path.
    spec = importlib.util.spec_from_file_location(
        f'mmseg_fnm_tools_{name}', osp.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A tiny dataset in mmseg layout, shared by the tools' tests."""
    return write_tiny_seg_dataset(str(tmp_path_factory.mktemp('tiny_data')))


@pytest.fixture(scope='session')
def tools_train():
    """tools/train.py as a module (``main(argv)`` returns the Runner)."""
    return _load_tool('train')


@pytest.fixture(scope='session')
def tools_test():
    """tools/test.py as a module (``main(argv)`` returns the metrics)."""
    return _load_tool('test')


@pytest.fixture(scope='session')
def tools_convert():
    """tools/convert_checkpoint.py as a module."""
    return _load_tool('convert_checkpoint')
