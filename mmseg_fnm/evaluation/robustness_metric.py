"""mIoU under attack, for every attack and radius of a sweep."""
import csv
import json
import os
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

CLEAN = 'clean'
WORST = 'worst'
ADV_PREDS = 'adv_preds'
SUMMARY = ('aAcc', 'mIoU', 'mAcc')


def format_eps(eps: float) -> str:
    """Radius as used in metric keys: ``0.01 -> '0.010'``."""
    text = f'{eps:.3f}'
    return text if float(text) == eps else f'{eps:g}'


def setting_key(attack: str, eps: float) -> str:
    """Key of one attack setting, e.g. ``'FGSM/eps_0.010'``."""
    return f'{attack}/eps_{format_eps(eps)}'


def curve_table(curves: Dict[str, Dict[float, float]], title: str) -> str:
    """Markdown table of robustness curves: one row per radius, one column
    per curve.

    The one table of the project: the metric logs one column per attack,
    ``tools/plot_robustness.py`` prints one column per model.

    Args:
        curves (dict): ``{column name: {eps: value}}``, in column order. A
            curve without a value at some radius gets an empty cell there.
        title (str): Line written above the table.

    Returns:
        str: The title and the table, values with two decimals.
    """
    epsilons = sorted({eps for curve in curves.values() for eps in curve})
    lines = [
        title,
        '| eps | ' + ' | '.join(curves) + ' |',
        '|---:|' + '---:|' * len(curves),
    ]
    for eps in epsilons:
        cells = [
            f'{curve[eps]:.2f}' if eps in curve else ''
            for curve in curves.values()
        ]
        lines.append(f'| {format_eps(eps)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


@METRICS.register_module()
class RobustnessMetric(IoUMetric):
    """aAcc, mIoU, mAcc and per-class IoU for every setting of a sweep.

    Used with :class:`RobustnessTestLoop` / :class:`RobustnessValLoop`,
    which attach each image's predictions under attack to its data sample
    (``adv_preds``: ``{(attack, eps): prediction}``).  The confusion areas
    are accumulated over the whole data set per setting with mmseg's own
    :meth:`IoUMetric.intersect_and_union` and
    :meth:`IoUMetric.total_area_to_metrics`, so the clean row equals what
    :class:`IoUMetric` reports (percent, two decimals).  One result entry is
    stored per image, which keeps mmengine's cross-rank collection exact.

    Returned keys: ``aAcc``, ``mIoU``, ``mAcc`` of the clean images (for
    ``save_best``), ``<attack>/eps_<r>/<metric>`` for every setting, and
    ``worst/eps_<r>/<metric>``: the lowest value over the attacks at that
    radius.  With ``output_dir`` the report is written there:
    ``robustness.json``, ``robustness.csv`` and ``robustness.png``.

    Args:
        ignore_index (int): Label that is not evaluated. Defaults to 255.
        output_dir (str, optional): Where the report files go. The
            robustness loops set it to the run's log directory.
        source (dict, optional): Provenance written into the JSON report
            (checkpoint, config); the loops fill it in.
        **kwargs: Further :class:`IoUMetric` arguments (``nan_to_num``,
            ``collect_device``, ``prefix``).
    """

    def __init__(self,
                 ignore_index: int = 255,
                 output_dir: Optional[str] = None,
                 source: Optional[dict] = None,
                 **kwargs) -> None:
        kwargs.pop('iou_metrics', None)
        kwargs.pop('format_only', None)
        super().__init__(ignore_index=ignore_index, **kwargs)
        # IoUMetric's output_dir means "save prediction PNGs": ours is the
        # report's directory, and is created when the report is written.
        self.output_dir = output_dir
        self.source = dict(source or {})

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].squeeze()
            label = sample['gt_sem_seg']['data'].squeeze().to(pred)
            areas = OrderedDict()
            areas[(CLEAN,
                   0.0)] = self.intersect_and_union(pred, label, num_classes,
                                                    self.ignore_index)
            for setting, adv_pred in sample.get(ADV_PREDS, {}).items():
                areas[tuple(setting)] = self.intersect_and_union(
                    adv_pred.squeeze().to(pred), label, num_classes,
                    self.ignore_index)
            self.results.append({
                k: torch.stack(v).cpu()
                for k, v in areas.items()
            })

    def compute_metrics(self, results: list) -> Dict[str, float]:
        summaries = OrderedDict()
        for setting in results[0]:
            total = sum(result[setting] for result in results)
            summaries[setting] = self._summarise(total)
        records = self._records(summaries)
        metrics = OrderedDict(
            (key, summaries[(CLEAN, 0.0)][key]) for key in SUMMARY)
        curves = OrderedDict()  # mIoU per radius of each attack, for the log
        for record in records:
            if record['attack'] == CLEAN:
                continue
            prefix = setting_key(record['attack'], record['eps'])
            for key in SUMMARY:
                metrics[f'{prefix}/{key}'] = record[key]
            curves.setdefault(record['attack'],
                              {})[record['eps']] = record['mIoU']
        print_log(
            '\n' + curve_table(curves, 'mIoU under attack (percent)'),
            logger='current')
        if self.output_dir:
            self.write_report(records, self.output_dir)
        return metrics

    def _summarise(self, total: torch.Tensor) -> dict:
        """mmseg's summary of accumulated areas, in percent."""
        scores = self.total_area_to_metrics(*total, ['mIoU'], self.nan_to_num,
                                            self.beta)
        iou = np.asarray(scores['IoU'], dtype=float) * 100
        return dict(
            aAcc=float(np.round(np.nanmean(scores['aAcc']) * 100, 2)),
            mIoU=float(np.round(np.nanmean(scores['IoU']) * 100, 2)),
            mAcc=float(np.round(np.nanmean(scores['Acc']) * 100, 2)),
            IoU={
                name: (None if np.isnan(v) else float(np.round(v, 2)))
                for name, v in zip(self.dataset_meta['classes'], iou)
            })

    def _records(self, summaries: dict) -> List[dict]:
        """One record per (attack, radius), radius 0 = clean, plus the
        worst case over attacks at each radius."""
        clean = summaries[(CLEAN, 0.0)]
        attacks = list(
            OrderedDict.fromkeys(a for a, _ in summaries if a != CLEAN))
        epsilons = sorted({0.0} | {e for a, e in summaries if a != CLEAN})
        records = [dict(attack=CLEAN, eps=0.0, **clean)]
        for attack in attacks:
            for eps in epsilons:
                summary = clean if eps == 0 else summaries.get((attack, eps))
                if summary is not None:
                    records.append(dict(attack=attack, eps=eps, **summary))
        for eps in epsilons:
            rows = [
                r for r in records if r['eps'] == eps and r['attack'] != CLEAN
            ] or [records[0]]
            worst = dict(attack=WORST, eps=eps)
            for key in SUMMARY:
                worst[key] = min(r[key] for r in rows)
            worst['IoU'] = min(rows, key=lambda r: r['mIoU'])['IoU']
            records.append(worst)
        return records

    def write_report(self, records: List[dict], output_dir: str) -> None:
        """Write robustness.json / .csv / .png atomically: a file that
        exists is complete (an interrupted run leaves none half-written)."""
        from mmseg_fnm.visualization import plot_robustness_curves
        mkdir_or_exist(output_dir)
        classes = list(self.dataset_meta['classes'])
        report = dict(self.source, classes=classes, records=records)

        def write(name: str, writer) -> str:
            path = osp.join(output_dir, name)
            fd, tmp = tempfile.mkstemp(
                dir=output_dir,
                prefix=f'.{name}.',
                suffix=osp.splitext(name)[1])
            os.close(fd)
            try:
                writer(tmp)
                os.replace(tmp, path)
            finally:
                if osp.exists(tmp):
                    os.remove(tmp)
            return path

        def write_json(path: str) -> None:
            with open(path, 'w') as f:
                json.dump(report, f, indent=2)

        def write_csv(path: str) -> None:
            with open(path, 'w', newline='') as f:
                out = csv.writer(f)
                out.writerow(['attack', 'eps', *SUMMARY] +
                             [f'IoU.{c}' for c in classes])
                for r in records:
                    out.writerow([r['attack'], r['eps']] +
                                 [r[k] for k in SUMMARY] +
                                 [r['IoU'][c] for c in classes])

        written = [
            write('robustness.csv', write_csv),
            write('robustness.png',
                  lambda p: plot_robustness_curves({'': records}, p)),
            write('robustness.json', write_json),
        ]
        print_log(f'Robustness report: {", ".join(written)}', logger='current')
