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
ADV_COSTS = 'adv_costs'
SUMMARY = ('aAcc', 'mIoU', 'mAcc')
#: Budget of a setting: forward and backward passes of the attack per
#: image (mean over images) and its wall time (seconds, summed over images
#: and ranks).
BUDGET = ('forwards', 'backwards', 'seconds')
#: How the worst case over the attacks of a sweep is formed, and how its
#: records name the rule.
WORST_RULES = {
    'pixel_accuracy': 'per image: the attack of lowest pixel accuracy',
    'greedy_miou': 'per image: the attack of lowest pixel accuracy, then '
    'single images moved while that lowers the mIoU (SEA)',
}


def _miou(total: torch.Tensor) -> float:
    """mmseg's mIoU (classes without union left out) of summed areas."""
    return float(torch.nanmean(total[0] / total[1]))


def greedy_worst_areas(results: List[dict], eps: float) -> torch.Tensor:
    """Summed areas of SEA's greedy worst case at radius ``eps``.

    Starts from each image's prediction of lowest pixel accuracy (ties:
    the first attack) and moves single images to another attack's
    prediction while that lowers the data-set mIoU, until no move does.

    Args:
        results (list[dict]): Per-image entries of
            :meth:`RobustnessMetric.process`.
        eps (float): The radius.

    Returns:
        Tensor: ``(4, C)`` summed intersect, union, prediction and label
        areas of the chosen predictions.
    """
    settings = [
        s for s in results[0]['areas'] if s[1] == eps and s[0] != WORST
        and s[0] != CLEAN
    ]
    areas = torch.stack([
        torch.stack([r['areas'][s] for s in settings]) for r in results
    ]).double()  # (N, K, 4, C)
    correct = areas[:, :, 0].sum(-1)
    # argmin returns the first of equal values: ties go to the first attack
    choice = correct.argmin(1).tolist()
    rows = torch.arange(len(results))
    total = areas[rows, torch.tensor(choice)].sum(0)
    best = _miou(total)
    changed = True
    while changed:
        changed = False
        for i in range(len(results)):
            for k in range(len(settings)):
                if k == choice[i]:
                    continue
                moved = total - areas[i, choice[i]] + areas[i, k]
                value = _miou(moved)
                if value < best - 1e-12:
                    total, best, choice[i], changed = moved, value, k, True
    return total


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
    (``adv_preds``: ``{(attack, eps): prediction}``) and the attack's cost
    (``adv_costs``: ``{(attack, eps): (forwards, backwards, seconds)}``).
    The confusion areas
    are accumulated over the whole data set per setting with mmseg's own
    :meth:`IoUMetric.intersect_and_union` and
    :meth:`IoUMetric.total_area_to_metrics`, so the clean row equals what
    :class:`IoUMetric` reports (percent, two decimals).  One result entry is
    stored per image, which keeps mmengine's cross-rank collection exact.

    Returned keys: ``aAcc``, ``mIoU``, ``mAcc`` of the clean images (for
    ``save_best``), ``<attack>/eps_<r>/<metric>`` for every setting, and
    ``worst/eps_<r>/<metric>``: the per-image worst case at that radius,
    as SEA scores (Croce et al., ECCV 2024): for each image the prediction
    with the lowest pixel accuracy over the attacks of the sweep (ties: the
    first attack), then the data-set metrics of those predictions.  mIoU
    is not a per-image quantity, so with ``worst_rule='greedy_miou'`` (SEA's
    own evaluation) single images then move to another attack's prediction
    while that lowers the data-set mIoU.  Worst-case records name their
    ``rule``.  Every record states its budget: ``forwards`` and
    ``backwards`` (passes per image, mean), ``seconds`` (wall time of the
    attack, summed over images and ranks; the worst case costs the sum of
    its attacks) and ``images``.  With ``output_dir`` the report is
    written there: ``robustness.json``, ``robustness.csv`` and
    ``robustness.png``.

    Args:
        ignore_index (int): Label that is not evaluated. Defaults to 255.
        output_dir (str, optional): Where the report files go. The
            robustness loops set it to the run's log directory.
        source (dict, optional): Provenance written into the JSON report
            (checkpoint, config); the loops fill it in.
        worst_rule (str): ``'pixel_accuracy'`` (default) or
            ``'greedy_miou'``; see above.
        **kwargs: Further :class:`IoUMetric` arguments (``nan_to_num``,
            ``collect_device``, ``prefix``).
    """

    def __init__(self,
                 ignore_index: int = 255,
                 output_dir: Optional[str] = None,
                 source: Optional[dict] = None,
                 worst_rule: str = 'pixel_accuracy',
                 **kwargs) -> None:
        if worst_rule not in WORST_RULES:
            raise ValueError(f'worst_rule must be one of '
                             f'{", ".join(WORST_RULES)}, got {worst_rule!r}')
        self.worst_rule = worst_rule
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
            costs = {
                tuple(setting): torch.tensor(cost, dtype=torch.float64)
                for setting, cost in sample.get(ADV_COSTS, {}).items()
            }
            self._add_worst(areas, costs)
            self.results.append(
                dict(
                    areas={
                        k: torch.stack(v).cpu()
                        for k, v in areas.items()
                    },
                    costs=costs))

    @staticmethod
    def _add_worst(areas: OrderedDict, costs: dict) -> None:
        """Add this image's worst case at every radius: the setting with
        the fewest correct pixels (its lowest pixel accuracy; all settings
        share the labelled pixels), ties to the first attack."""
        by_eps = OrderedDict()
        for setting in areas:
            if setting[0] != CLEAN:
                by_eps.setdefault(setting[1], []).append(setting)
        for eps, settings in by_eps.items():
            chosen = min(settings, key=lambda k: float(areas[k][0].sum()))
            areas[(WORST, eps)] = areas[chosen]
            budget = [costs[k] for k in settings if k in costs]
            if budget:
                costs[(WORST, eps)] = sum(budget)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        summaries = OrderedDict()
        for setting in results[0]['areas']:
            if setting[0] == WORST and self.worst_rule == 'greedy_miou':
                total = greedy_worst_areas(results, setting[1])
            else:
                total = sum(result['areas'][setting] for result in results)
            summaries[setting] = self._summarise(total)
            summaries[setting].update(self._budget(results, setting))
            if setting[0] == WORST:
                summaries[setting]['rule'] = self.worst_rule
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

    @staticmethod
    def _budget(results: list, setting: tuple) -> dict:
        """Passes per image (mean) and seconds (sum) of one setting."""
        total = sum(
            (r['costs'].get(setting, torch.zeros(3, dtype=torch.float64))
             for r in results), torch.zeros(3, dtype=torch.float64))
        forwards, backwards, seconds = total.tolist()
        images = len(results)
        return dict(
            forwards=round(forwards / images, 2),
            backwards=round(backwards / images, 2),
            seconds=round(seconds, 2),
            images=images)

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
        """One record per (attack, radius), radius 0 = clean, then the
        per-image worst case at each radius."""
        clean = summaries[(CLEAN, 0.0)]
        attacks = list(
            OrderedDict.fromkeys(a for a, _ in summaries
                                 if a not in (CLEAN, WORST)))
        epsilons = sorted({0.0} | {e for a, e in summaries if a != CLEAN})
        records = [dict(attack=CLEAN, eps=0.0, **clean)]
        for attack in attacks + [WORST]:
            for eps in epsilons:
                summary = clean if eps == 0 else summaries.get((attack, eps))
                if summary is not None:
                    records.append(dict(attack=attack, eps=eps, **summary))
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
                             [f'IoU.{c}' for c in classes] + list(BUDGET) +
                             ['images', 'rule'])
                for r in records:
                    out.writerow([r['attack'], r['eps']] +
                                 [r[k] for k in SUMMARY] +
                                 [r['IoU'][c] for c in classes] +
                                 [r.get(k) for k in BUDGET] +
                                 [r.get('images'), r.get('rule', '')])

        written = [
            write('robustness.csv', write_csv),
            write('robustness.png',
                  lambda p: plot_robustness_curves({'': records}, p)),
            write('robustness.json', write_json),
        ]
        print_log(f'Robustness report: {", ".join(written)}', logger='current')
