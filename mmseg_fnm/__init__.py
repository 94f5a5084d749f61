"""mmseg_fnm: single-step adversarial training for mmsegmentation.

Importing the package registers every component (attacks, datasets,
models, loops, hooks, metrics) into mmseg's registries, so a config only
needs ``custom_imports = dict(imports=['mmseg_fnm'])``.
"""
from . import attacks, datasets, engine, evaluation, models, utils  # noqa
from .version import __version__

__all__ = ['__version__']
