"""Robustness sweeps in a real Runner on the demo data."""
import copy
import csv
import glob
import json
import os.path as osp

import pytest
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import HOOKS

from mmseg_fnm.evaluation import setting_key

SMALL_SWEEP = dict(
    type='RobustnessTestLoop',
    attacks=[dict(type='FGSM'),
             dict(type='BIM', alpha=0.01, steps=3)],
    epsilons=[0, 0.01, 0.03])


def run_test(trained_demo, tmp_path, test_cfg=None, name='sweep'):
    cfg, checkpoint = trained_demo
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(tmp_path / name)
    cfg.visualizer.name = f'visualizer_{cfg.work_dir}'
    cfg.load_from = checkpoint
    if test_cfg is not None:
        cfg.test_cfg = test_cfg
    runner = Runner.from_cfg(cfg)
    return runner, runner.test()


def test_clean_row_equals_mmseg_iou_metric(trained_demo, tmp_path):
    _, stock = run_test(trained_demo, tmp_path, name='stock')
    runner, robust = run_test(trained_demo, tmp_path, SMALL_SWEEP)
    assert type(runner.test_loop).__name__ == 'RobustnessTestLoop'
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert robust[key] == stock[key]
        assert robust[f'FGSM/eps_0.000/{key}'] == stock[key]
        assert robust[f'BIM/eps_0.000/{key}'] == stock[key]
    for attack in ('FGSM', 'BIM', 'worst'):
        for eps in (0.01, 0.03):
            assert f'{setting_key(attack, eps)}/mIoU' in robust


def test_attacks_lower_miou_and_bim_is_strongest(trained_demo, tmp_path):
    sweep = dict(SMALL_SWEEP, epsilons=[0, 0.04])
    sweep['attacks'] = [
        dict(type='FGSM'),
        dict(type='BIM', alpha=0.004, steps=10)
    ]
    _, metrics = run_test(trained_demo, tmp_path, sweep)
    clean = metrics['mIoU']
    fgsm = metrics['FGSM/eps_0.040/mIoU']
    bim = metrics['BIM/eps_0.040/mIoU']
    assert bim < fgsm and bim < clean
    # per image the prediction with fewer correct pixels: the worst case
    # keeps no more pixels right than either attack
    assert metrics['worst/eps_0.040/aAcc'] <= min(
        metrics['FGSM/eps_0.040/aAcc'], metrics['BIM/eps_0.040/aAcc'])


def test_fgsm_gradient_reuse_matches_radius_by_radius(trained_demo, tmp_path):
    swept = dict(
        type='RobustnessTestLoop',
        attacks=[dict(type='FGSM')],
        epsilons=[0, 0.01, 0.03])
    _, together = run_test(trained_demo, tmp_path, swept, 'together')
    for eps in (0.01, 0.03):
        single = dict(swept, epsilons=[eps])
        _, alone = run_test(trained_demo, tmp_path, single, f'alone{eps}')
        for key in ('aAcc', 'mIoU', 'mAcc'):
            name = f'{setting_key("FGSM", eps)}/{key}'
            assert together[name] == alone[name]


def test_report_files_have_the_documented_schema(trained_demo, tmp_path):
    runner, metrics = run_test(trained_demo, tmp_path, SMALL_SWEEP)
    log_dir = runner.log_dir
    with open(osp.join(log_dir, 'robustness.json')) as f:
        report = json.load(f)
    cfg, checkpoint = trained_demo
    assert report['checkpoint'] == checkpoint
    assert report['config']
    classes = report['classes']
    assert classes == list(
        runner.test_loop.dataloader.dataset.metainfo['classes'])
    records = report['records']
    for record in records:
        # today's keys, and the budget of every record
        keys = {'attack', 'eps', 'aAcc', 'mIoU', 'mAcc', 'IoU'} | {
            'forwards', 'backwards', 'seconds', 'images'
        }
        if record['attack'] == 'worst' and record['eps'] > 0:
            keys.add('rule')
        assert set(record) == keys
        assert set(record['IoU']) == set(classes)
        assert record['images'] == len(runner.test_loop.dataloader.dataset)
    budget = {(r['attack'], r['eps']): r for r in records}
    # FGSM: one gradient for all radii; BIM-3 here: 3 passes each way
    assert budget[('FGSM', 0.03)]['backwards'] == 1
    assert budget[('BIM', 0.03)]['forwards'] == 3
    assert budget[('worst', 0.03)]['backwards'] == 4
    assert budget[('clean', 0.0)]['backwards'] == 0
    assert budget[('BIM', 0.03)]['seconds'] > 0
    pairs = {(r['attack'], r['eps']) for r in records}
    for attack in ('FGSM', 'BIM', 'worst'):
        for eps in (0.0, 0.01, 0.03):
            assert (attack, eps) in pairs
    fgsm = {r['eps']: r for r in records if r['attack'] == 'FGSM'}
    assert fgsm[0.03]['mIoU'] == metrics['FGSM/eps_0.030/mIoU']
    with open(osp.join(log_dir, 'robustness.csv')) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    assert float(rows[0]['mIoU']) == records[0]['mIoU']
    assert osp.getsize(osp.join(log_dir, 'robustness.png')) > 1000
    # the curves also reach the visualizer backends, x = radius in 1/1000
    [scalars] = glob.glob(osp.join(log_dir, 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        logged = [json.loads(line) for line in f]
    curve = {
        r['step']: r['robustness/FGSM/mIoU']
        for r in logged if 'robustness/FGSM/mIoU' in r
    }
    assert curve[30] == metrics['FGSM/eps_0.030/mIoU']


@HOOKS.register_module()
class _InterruptHook(Hook):

    def after_test_iter(self,
                        runner,
                        batch_idx,
                        data_batch=None,
                        outputs=None):
        raise KeyboardInterrupt


def test_interrupted_sweep_leaves_no_report(trained_demo, tmp_path):
    cfg, checkpoint = trained_demo
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(tmp_path / 'interrupted')
    cfg.visualizer.name = f'visualizer_{cfg.work_dir}'
    cfg.load_from = checkpoint
    cfg.test_cfg = SMALL_SWEEP
    cfg.custom_hooks = [dict(type='_InterruptHook')]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(KeyboardInterrupt):
        runner.test()
    assert not glob.glob(
        osp.join(cfg.work_dir, '**', 'robustness*'), recursive=True)


@pytest.mark.parametrize('change, error, words', [
    (dict(epsilons=[]), ValueError, 'epsilons'),
    (dict(epsilons=[0, -0.01]), ValueError, '-0.01'),
    (dict(epsilons=[0, 0.01, 0.01]), ValueError, 'duplicates'),
    (dict(epsilons='0.01'), ValueError, 'epsilons'),
    (dict(attacks=[]), ValueError, 'attacks'),
    (dict(attacks=[dict(type='PGD')]), KeyError, 'FastNewton'),
    (dict(attacks=[dict(type='FastNewton')]), ValueError, 'swept'),
    (dict(attacks=[dict(type='FGSM'), dict(type='FGSM')]), ValueError,
     'twice'),
])
def test_bad_sweeps_are_refused_before_any_image(trained_demo, tmp_path,
                                                 change, error, words):
    cfg, _ = trained_demo
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(tmp_path / 'bad')
    cfg.test_cfg = dict(SMALL_SWEEP, **change)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(error, match=words):
        runner.test()


def test_unreachable_radius_warns(trained_demo, tmp_path):
    sweep = dict(
        SMALL_SWEEP,
        attacks=[dict(type='BIM', alpha=0.001, steps=2)],
        epsilons=[0, 0.01])
    with pytest.warns(UserWarning, match='cannot reach'):
        run_test(trained_demo, tmp_path, sweep)


def test_validation_variant_keeps_a_plain_miou(demo_cfg):
    cfg = demo_cfg('basic', max_iters=2)
    cfg.val_cfg = dict(
        type='RobustnessValLoop',
        attacks=[dict(type='FGSM')],
        epsilons=[0, 0.02])
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    assert 'mIoU' in metrics and 'FGSM/eps_0.020/mIoU' in metrics


def test_progress_weighs_settings_by_gradient_passes():
    from mmseg_fnm.attacks import APGD, BIM, FGSM, SEA
    from mmseg_fnm.engine.loops.robustness_loop import attack_weight
    assert attack_weight(FGSM()) == 1
    assert attack_weight(BIM(0.03, 0.004, 10)) == 10
    assert attack_weight(APGD(iters=50)) == 50
    assert attack_weight(SEA()) == 900  # 3 losses x 300 iterations
