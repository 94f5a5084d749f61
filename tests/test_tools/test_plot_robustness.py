"""tools/plot_robustness.py on reports written by RobustnessMetric."""
import json
import os
import os.path as osp
from collections import OrderedDict

import pytest
import torch

from mmseg_fnm.evaluation import RobustnessMetric
from mmseg_fnm.evaluation.robustness_metric import CLEAN

CLASSES = ('background', 'disc', 'square')


def write_report(out_dir, settings, seed, config=None):
    """A robustness.json written by RobustnessMetric itself, from random
    confusion areas of 3 images; returns its path and records."""
    generator = torch.Generator().manual_seed(seed)

    def areas():
        label = torch.randint(50, 100, (len(CLASSES), ), generator=generator)
        pred = torch.randint(50, 100, (len(CLASSES), ), generator=generator)
        inter = torch.minimum(label, pred) - torch.randint(
            0, 40, (len(CLASSES), ), generator=generator)
        return torch.stack([inter, label + pred - inter, pred, label]).float()

    results = []
    for _ in range(3):
        image = OrderedDict([((CLEAN, 0.0), areas())])
        image.update((s, areas()) for s in settings)
        RobustnessMetric._add_worst(image, {})  # as process() does
        results.append(dict(areas=image, costs={}))
    metric = RobustnessMetric(
        output_dir=out_dir, source=dict(config=config) if config else None)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.compute_metrics(results)
    path = osp.join(out_dir, 'robustness.json')
    with open(path) as f:
        return path, json.load(f)['records']


def value(records, attack, eps):
    [record
     ] = [r for r in records if r['attack'] == attack and r['eps'] == eps]
    return f'{record["mIoU"]:.2f}'


def table_rows(text, title):
    """The rows of the markdown table under ``title``."""
    lines = text.split('\n')
    start = lines.index(title)
    rows = []
    for line in lines[start + 3:]:
        if not line.startswith('|'):
            break
        rows.append([cell.strip() for cell in line.strip('|').split('|')])
    return lines[start + 1], rows


def test_one_figure_per_attack_and_the_tables(tmp_path, plot_tool, capsys):
    basic, basic_records = write_report(
        str(tmp_path / 'basic'), [('FGSM', 0.01), ('FGSM', 0.03),
                                  ('BIM', 0.01), ('BIM', 0.03)],
        seed=0)
    fnm, fnm_records = write_report(
        str(tmp_path / 'fnm'), [('FGSM', 0.01), ('FGSM', 0.02)],
        seed=1,
        config='/configs/pspnet_r18_demo_fnm.py')
    out_dir = str(tmp_path / 'plots')
    paths = plot_tool.main(
        [f'basic={basic}',
         osp.dirname(fnm), '--out-dir', out_dir])
    expected = [
        'robustness_FGSM.png', 'robustness_BIM.png', 'robustness_worst.png'
    ]
    assert [osp.basename(p) for p in paths] == expected
    assert sorted(os.listdir(out_dir)) == sorted(expected)
    for path in paths:
        assert osp.getsize(path) > 5000

    text = capsys.readouterr().out
    # a bare path is named after the report's config
    header, rows = table_rows(text, 'FGSM: mIoU (%)')
    assert header == '| eps | basic | pspnet_r18_demo_fnm |'
    assert rows == [
        [
            '0.000',
            value(basic_records, 'FGSM', 0),
            value(fnm_records, 'FGSM', 0)
        ],
        [
            '0.010',
            value(basic_records, 'FGSM', 0.01),
            value(fnm_records, 'FGSM', 0.01)
        ],
        ['0.020', '', value(fnm_records, 'FGSM', 0.02)],
        ['0.030', value(basic_records, 'FGSM', 0.03), ''],
    ]
    _, rows = table_rows(text, 'BIM: mIoU (%)')
    assert rows[-1] == ['0.030', value(basic_records, 'BIM', 0.03), '']
    # the numbers are the reports', not a copy of the clean row
    assert rows[-1][1] != rows[0][1]


def test_another_metric(tmp_path, plot_tool, capsys):
    path, records = write_report(str(tmp_path), [('FGSM', 0.01)], seed=2)
    plot_tool.main(
        [f'm={path}', '--out-dir',
         str(tmp_path), '--metric', 'aAcc'])
    _, rows = table_rows(capsys.readouterr().out, 'FGSM: aAcc (%)')
    [fgsm] = [r for r in records if r['attack'] == 'FGSM' and r['eps']]
    assert rows[1] == ['0.010', f'{fgsm["aAcc"]:.2f}']


def test_bad_reports_are_named(tmp_path, plot_tool):
    out = ['--out-dir', str(tmp_path / 'plots')]
    missing = str(tmp_path / 'nowhere' / 'robustness.json')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        plot_tool.main([f'a={missing}', *out])
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(dict(classes=[], records=[])))
    with pytest.raises(ValueError, match='empty.json has no robustness'):
        plot_tool.main([f'a={empty}', *out])
    broken = tmp_path / 'broken.json'
    broken.write_text('{"records": [')
    with pytest.raises(ValueError, match='broken.json is not a JSON'):
        plot_tool.main([f'a={broken}', *out])
    good, _ = write_report(str(tmp_path / 'good'), [('FGSM', 0.01)], seed=3)
    with pytest.raises(ValueError, match='given twice'):
        plot_tool.main([f'a={good}', f'a={good}', *out])
    with pytest.raises(ValueError, match="'mAcc', 'mIoU'"):
        plot_tool.main([f'a={good}', *out, '--metric', 'IoU.disc'])
    assert not osp.exists(tmp_path / 'plots')
