"""The markdown table of robustness curves (metric log and plot tool)."""
from collections import OrderedDict

from mmseg_fnm.evaluation.robustness_metric import curve_table


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
