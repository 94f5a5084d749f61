# Overlay the robustness curves of several models (the paper's figure 3):
# one figure per attack, one line per model, and a markdown table per attack.
#
#   python tools/plot_robustness.py \
#       basic=work_dirs/basic/20240101_000000/robustness.json \
#       fnm=work_dirs/fnm/20240101_000000/robustness.json --out-dir plots
#
# Each robustness.json is the report that tools/test.py --robustness (the
# RobustnessTestLoop) writes into the run's log directory.
import argparse
import json
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List

from mmengine.utils import mkdir_or_exist

from mmseg_fnm.evaluation.robustness_metric import CLEAN, curve_table
from mmseg_fnm.visualization import plot_robustness_curves

REPORT = 'robustness.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Overlay several models\' robustness curves: one figure '
        'per attack and a markdown table on stdout')
    parser.add_argument(
        'reports',
        nargs='+',
        metavar='NAME=PATH',
        help='a model name and its robustness.json (or the log directory '
        'holding it); without NAME=, the config\'s file name is used')
    parser.add_argument(
        '--out-dir', required=True, help='where robustness_<attack>.png go')
    parser.add_argument(
        '--metric',
        default='mIoU',
        help='record key to plot: mIoU (default), aAcc or mAcc')
    return parser.parse_args(argv)


def load_report(path):
    """The records of one ``robustness.json`` (or of a directory's)."""
    if osp.isdir(path):
        path = osp.join(path, REPORT)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: pass the robustness.json that '
            'tools/test.py --robustness writes into the log directory')
    try:
        with open(path) as f:
            report = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f'{path} is not a JSON file: {error}') from None
    records = report.get('records') if isinstance(report, dict) else None
    if not records or not all(
            isinstance(r, dict) and {'attack', 'eps'} <= set(r)
            for r in records):
        raise ValueError(
            f'{path} has no robustness records (a "records" list of '
            'dicts with "attack", "eps" and the metrics); is it a report '
            'of tools/test.py --robustness?')
    return report, records


def load_reports(specs, metric='mIoU'):
    """``['name=path', ...]`` -> ``{name: records}``, in the given order."""
    models = OrderedDict()
    for spec in specs:
        name, sep, path = spec.partition('=')
        if not sep:
            name, path = '', spec
        report, records = load_report(path)
        if not name:
            config = report.get('config') or osp.dirname(osp.abspath(path))
            name = osp.splitext(osp.basename(config))[0]
        if name in models:
            raise ValueError(f'The model name {name!r} is given twice; '
                             'name the reports: NAME=PATH')
        if not all(isinstance(r.get(metric), (int, float)) for r in records):
            keys = sorted(k for k, v in records[0].items()
                          if isinstance(v, (int, float)) and k != 'eps')
            raise ValueError(f'{path} has records without {metric!r}; '
                             f'--metric must be one of {keys}')
        models[name] = records
    return models


def attacks_of(models):
    """Attacks of all reports, in order of appearance (no clean row)."""
    return list(
        OrderedDict.fromkeys(r['attack'] for records in models.values()
                             for r in records if r['attack'] != CLEAN))


def markdown_table(models: Dict[str, List[dict]],
                   attack: str,
                   metric: str = 'mIoU') -> str:
    """One row per radius, one column per model; empty cells where a
    model was not evaluated at that radius."""
    curves = OrderedDict()
    for name, records in models.items():
        curves[name] = {
            r['eps']: r[metric]
            for r in records if r['attack'] == attack
        }
    return curve_table(curves, f'{attack}: {metric} (%)')


def figure_name(attack):
    """``robustness_<attack>.png`` with a file-system-safe attack name."""
    return f'robustness_{re.sub(r"[^A-Za-z0-9_.-]+", "_", attack)}.png'


def main(argv=None):
    """Write the figures and print the tables; returns the figure paths."""
    args = parse_args(argv)
    models = load_reports(args.reports, args.metric)
    mkdir_or_exist(args.out_dir)
    paths = []
    tables = []
    for attack in attacks_of(models):
        path = osp.join(args.out_dir, figure_name(attack))
        plot_robustness_curves(
            models, path, attacks=[attack], metric=args.metric, title=attack)
        paths.append(path)
        tables.append(markdown_table(models, attack, args.metric))
    print('\n\n'.join(tables))
    return paths


if __name__ == '__main__':
    main()
