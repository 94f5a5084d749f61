"""RobustnessMetric: the curve table, the worst case over attacks and
the budgets, on hand-made predictions."""
import itertools
import json
from collections import OrderedDict

import pytest
import torch
from mmseg.evaluation import IoUMetric

from mmseg_fnm.evaluation import RobustnessMetric
from mmseg_fnm.evaluation.robustness_metric import ADV_COSTS, curve_table


def test_curve_table_rows_columns_and_gaps():
    # columns keep the given order; radii are sorted across all curves
    curves = OrderedDict([
        ('FGSM', {
            0.03: 10.0,
            0.0: 62.349,
            0.01: 40.5
        }),
        ('BIM', {
            0.0: 62.349,
            0.0005: 61.0
        }),
        ('never evaluated', {}),
    ])
    assert curve_table(curves, 'mIoU under attack (percent)') == '\n'.join([
        'mIoU under attack (percent)',
        '| eps | FGSM | BIM | never evaluated |',
        '|---:|---:|---:|---:|',
        '| 0.000 | 62.35 | 62.35 |  |',
        '| 0.0005 |  | 61.00 |  |',
        '| 0.010 | 40.50 |  |  |',
        '| 0.030 | 10.00 |  |  |',
    ])


def _metric(rule='pixel_accuracy', classes=('road', 'car', 'sign')):
    metric = RobustnessMetric(worst_rule=rule)
    metric.dataset_meta = dict(classes=classes)
    return metric


def _sample(label, clean, adv, costs=None):
    """A data sample as the robustness loops hand it to the metric."""
    as_map = lambda x: dict(data=torch.tensor(x).unsqueeze(0))  # noqa: E731
    sample = dict(
        gt_sem_seg=as_map(label),
        pred_sem_seg=as_map(clean),
        adv_preds={k: torch.tensor(v).unsqueeze(0)
                   for k, v in adv.items()})
    if costs is not None:
        sample[ADV_COSTS] = costs
    return sample


def _iou_metric(labels, preds, classes=('road', 'car', 'sign')):
    """mmseg's IoUMetric on the given predictions (the reference)."""
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=classes)
    metric.results = [
        metric.intersect_and_union(
            torch.tensor(p), torch.tensor(y), len(classes), 255)
        for p, y in zip(preds, labels)
    ]
    return metric.compute_metrics(metric.results)


LABELS = [[[0, 0, 1, 1]], [[0, 0, 2, 2]]]


def test_worst_case_is_per_image_not_the_minimum_of_data_set_numbers(
        tmp_path):
    # A breaks image 0 only, B image 1 only: each alone keeps half the
    # data set right; per image, the worst case breaks both.
    adv_a = [[[1, 1, 0, 0]], [[0, 0, 2, 2]]]
    adv_b = [[[0, 0, 1, 1]], [[2, 2, 0, 0]]]
    metric = _metric()
    metric.output_dir = str(tmp_path)
    metric.process({}, [
        _sample(LABELS[i], LABELS[i], {
            ('A', 0.03): adv_a[i],
            ('B', 0.03): adv_b[i]
        }, {
            ('A', 0.03): (2., 1., 0.5),
            ('B', 0.03): (11., 10., 2.0)
        }) for i in range(2)
    ])
    metrics = metric.compute_metrics(metric.results)
    worst = _iou_metric(LABELS, [adv_a[0], adv_b[1]])
    assert metrics['worst/eps_0.030/mIoU'] == worst['mIoU']
    assert metrics['worst/eps_0.030/aAcc'] == worst['aAcc'] == 0
    # today's rule would have said min(A, B), far above
    assert min(metrics['A/eps_0.030/mIoU'],
               metrics['B/eps_0.030/mIoU']) > worst['mIoU'] + 10
    with open(tmp_path / 'robustness.json') as f:
        report = json.load(f)
    records = {(r['attack'], r['eps']): r for r in report['records']}
    a, b, w = (records[(n, 0.03)] for n in ('A', 'B', 'worst'))
    assert (a['forwards'], a['backwards'], a['seconds']) == (2, 1, 1.0)
    assert (b['forwards'], b['backwards'], b['seconds']) == (11, 10, 4.0)
    assert (w['forwards'], w['backwards'], w['seconds']) == (13, 11, 5.0)
    assert w['images'] == 2 and w['rule'] == 'pixel_accuracy'
    assert 'rule' not in a


def test_greedy_rule_moves_images_while_the_miou_falls():
    # Image 0: A leaves 1 pixel right (a 'sign' pixel), B 2 (road): by
    # pixel accuracy A is worse, but B wipes out the rare class 'sign' of
    # the data set, which lowers the mIoU more.
    labels = [[[0, 0, 0, 2]], [[0, 0, 1, 1]]]
    adv = {
        ('A', 0.03): [[[1, 1, 1, 2]], [[1, 1, 0, 0]]],
        ('B', 0.03): [[[0, 0, 1, 1]], [[1, 1, 0, 1]]],
    }
    samples = [
        _sample(labels[i], labels[i], {k: v[i]
                                       for k, v in adv.items()})
        for i in range(2)
    ]
    results = {}
    for rule in ('pixel_accuracy', 'greedy_miou'):
        metric = _metric(rule)
        metric.process({}, samples)
        results[rule] = metric.compute_metrics(metric.results)
    by_pixels = results['pixel_accuracy']['worst/eps_0.030/mIoU']
    greedy = results['greedy_miou']['worst/eps_0.030/mIoU']
    # brute force over the 4 assignments of attacks to images
    best = min(
        _iou_metric(labels, [adv[a][0], adv[b][1]])['mIoU']
        for a, b in itertools.product(adv, adv))
    assert by_pixels == _iou_metric(
        labels, [adv[('A', 0.03)][0], adv[('A', 0.03)][1]])['mIoU']
    assert greedy == best < by_pixels


def test_unknown_worst_rule_lists_the_rules():
    with pytest.raises(ValueError, match='pixel_accuracy, greedy_miou'):
        RobustnessMetric(worst_rule='min')
