import importlib.util
import os.path as osp

import pytest
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load_tool(name):
    # tools/ is not a package: import tools/{name}.py by path.
    spec = importlib.util.spec_from_file_location(
        f'mmseg_fnm_tools_{name}', osp.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dump_cfg(tmp_path):
    """``dump_cfg(cfg)``: write a config (e.g. from ``demo_cfg``) to a file
    in the test's directory, for the tools' command lines; returns its path.

    The visualizer is left unnamed: mmengine keeps one visualizer per name
    and process, and a Runner names an unnamed one after its experiment,
    so every run of the file (each with its own ``experiment_name``) gets
    a visualizer of its own.
    """

    def dump(cfg: Config, filename: str = 'demo.py') -> str:
        cfg.visualizer.pop('name', None)
        path = str(tmp_path / filename)
        cfg.dump(path)
        return path

    return dump


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


@pytest.fixture(scope='session')
def plot_tool():
    """tools/plot_robustness.py as a module."""
    return _load_tool('plot_robustness')


@pytest.fixture(scope='session')
def benchmark_tool():
    """tools/benchmark.py as a module."""
    return _load_tool('benchmark')


@pytest.fixture(scope='session')
def reproduce():
    """tools/reproduce.py as a module."""
    return _load_tool('reproduce')


@pytest.fixture(scope='session')
def visualize_tool():
    """tools/visualize_attack.py as a module."""
    return _load_tool('visualize_attack')
