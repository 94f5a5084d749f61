"""Registries of mmseg_fnm.

Everything that plugs into the Runner (datasets, models, loops, hooks,
metrics) is registered into mmseg's own registries, because configs that
inherit mmseg's stamp ``_scope_='mmseg'``.  Attacks are not an OpenMMLab
concept, so they get a registry of their own whose build function skips
mmengine's scope switching and names the registered attacks when a type is
unknown.
"""
import copy
import inspect
from typing import Any

from mmengine.registry import Registry


def build_attack_from_cfg(cfg: Any, registry: Registry) -> Any:
    """Build an attack from a config dict, with errors that name the fix.

    Args:
        cfg (dict | BaseAttack): ``dict(type='FGSM', eps=0.03)`` or an
            already built attack, which is returned unchanged.
        registry (Registry): The attack registry.

    Returns:
        BaseAttack: The attack.
    """
    if not isinstance(cfg, dict):
        if callable(cfg):
            return cfg
        raise TypeError('An attack must be a dict like '
                        "dict(type='FastNewton') or an attack object, "
                        f'but got {type(cfg).__name__}: {cfg!r}')
    args = copy.deepcopy(dict(cfg))
    args.pop('_scope_', None)
    registered = ', '.join(sorted(registry.module_dict))
    if 'type' not in args:
        raise KeyError(f'The attack config {cfg!r} has no "type". '
                       f'Registered attacks: {registered}.')
    attack_type = args.pop('type')
    attack_cls = attack_type if inspect.isclass(attack_type) else \
        registry.get(attack_type)
    if attack_cls is None:
        raise KeyError(f'Unknown attack type {attack_type!r}. '
                       f'Registered attacks: {registered}.')
    try:
        return attack_cls(**args)
    except TypeError as error:
        raise TypeError(f'Cannot build attack {attack_cls.__name__} from '
                        f'{cfg!r}: {error}') from error


ATTACKS = Registry(
    'attack',
    build_func=build_attack_from_cfg,
    locations=['mmseg_fnm.attacks'])
