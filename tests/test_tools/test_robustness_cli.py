"""tools/test.py: the robustness switch and the checkpoint check."""
import copy
import glob
import json
import os.path as osp
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import HOOKS, MODELS

from mmseg_fnm.engine.loops.robustness_loop import DEFAULT_EPSILONS
from mmseg_fnm.evaluation import RobustnessMetric, setting_key
from mmseg_fnm.utils.checkpoint_match import CheckpointMismatchError

SWEEP = [
    '--attacks', 'FGSM', 'BIM:steps=3,alpha=0.01', '--epsilons', '0', '0.01',
    '0.03'
]


@HOOKS.register_module()
class _NoImageExpectedHook(Hook):
    """Fails the test loop's first iteration."""

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        raise AssertionError('an image reached the test loop')


@pytest.fixture
def demo_files(trained_demo, tmp_path):
    """The trained demo's config as a file, and its checkpoint."""
    cfg, checkpoint = trained_demo
    cfg_file = str(tmp_path / 'demo.py')
    cfg.dump(cfg_file)
    return cfg_file, checkpoint


def unique(tag):
    """--cfg-options that give each in-process Runner its own logger and
    visualizer (mmengine keeps one instance per name)."""
    stamp = time.time_ns()
    return [
        '--cfg-options', f'experiment_name={tag}_{stamp}',
        f'visualizer.name=vis_{tag}_{stamp}'
    ]


def test_switch_runs_the_sweep_and_writes_the_report(demo_files, tmp_path,
                                                     tools_test, one_thread):
    cfg_file, checkpoint = demo_files
    work_dir = str(tmp_path / 'sweep')
    metrics = tools_test.main(
        [cfg_file, checkpoint, '--work-dir', work_dir, *SWEEP] +
        unique('sweep'))
    [path] = glob.glob(osp.join(work_dir, '*', 'robustness.json'))
    with open(path) as f:
        report = json.load(f)
    assert report['checkpoint'] == checkpoint
    assert 'steps=3' in report['attacks']['BIM']
    assert 'alpha=0.01' in report['attacks']['BIM']
    records = report['records']
    settings = {(r['attack'], r['eps']) for r in records}
    for attack in ('FGSM', 'BIM', 'worst'):
        for eps in (0.0, 0.01, 0.03):
            assert (attack, eps) in settings
    for record in records:
        if record['attack'] != 'clean':
            key = setting_key(record['attack'], record['eps'])
            assert metrics[f'{key}/mIoU'] == record['mIoU']


@pytest.mark.parametrize('argv, attacks, epsilons', [
    (['--robustness'], None, None),
    (['--epsilons', '0', '0.02'], None, [0, 0.02]),
    (['--attacks', 'fgsm', 'bim:steps=3'
      ], [dict(type='FGSM'),
          dict(type='BIM', alpha=0.004, steps=3)], None),
    (['--attacks', 'RandomFGSM:name="R-FGSM"'
      ], [dict(type='RandomFGSM', name='R-FGSM')], None),
    (['--attacks', 'SegPGD', 'apgd:loss=js', 'SEA:iters=100'], [
        dict(type='SegPGD'),
        dict(type='APGD', loss='js'),
        dict(type='SEA', iters=100)
    ], None),
    (['--attacks', "SEA:losses=['masked-ce','tsallis'],iters=50"
      ], [dict(type='SEA', losses=['masked-ce', 'tsallis'], iters=50)], None),
])
def test_switch_sets_the_test_loop(demo_files, tools_test, tmp_path, argv,
                                   attacks, epsilons):
    cfg_file, checkpoint = demo_files
    args = tools_test.parse_args(
        [cfg_file, checkpoint, '--work-dir',
         str(tmp_path), *argv])
    test_cfg = tools_test.build_cfg(args).test_cfg
    expected = dict(type='RobustnessTestLoop')
    if attacks is not None:
        expected['attacks'] = attacks
    if epsilons is not None:
        expected['epsilons'] = epsilons
    assert test_cfg == expected


def test_plain_switch_builds_the_papers_sweep(demo_files, tools_test,
                                              tmp_path):
    cfg_file, checkpoint = demo_files
    args = tools_test.parse_args(
        [cfg_file, checkpoint, '--work-dir',
         str(tmp_path), '--robustness'] + unique('defaults'))
    cfg = tools_test.build_cfg(args)
    runner = Runner.from_cfg(cfg)
    loop = runner.build_test_loop(cfg.test_cfg)
    assert list(loop.attacks) == ['FGSM', 'BIM']
    bim = loop.attacks['BIM']
    assert (bim.alpha, bim.steps) == (0.004, 10)
    assert loop.epsilons == sorted(float(e) for e in DEFAULT_EPSILONS)
    # the config's IoUMetric was swapped by the loop itself
    assert any(isinstance(m, RobustnessMetric) for m in loop.evaluator.metrics)


def test_a_sweeping_config_keeps_what_is_not_given(tools_test):
    sweep = dict(
        type='RobustnessTestLoop',
        attacks=[dict(type='FGSM')],
        epsilons=[0, 0.1])
    test_cfg = tools_test.robustness_test_cfg(sweep, epsilons=[0, 0.02])
    assert test_cfg == dict(sweep, epsilons=[0, 0.02])
    assert tools_test.robustness_test_cfg(sweep) == sweep


@pytest.mark.parametrize('argv, error, words', [
    (['--attacks', 'PGD'], KeyError,
     ['--attacks PGD', 'Registered attacks', 'BIM', 'FGSM', 'FastNewton']),
    (['--attacks', 'BIM:steps'], ValueError, ['BIM:steps', 'KEY=VALUE']),
    (['--attacks', 'BIM:stepz=3'], TypeError, ['BIM:stepz=3', 'stepz']),
    (['--attacks', 'APGD:loss=dice'], ValueError,
     ['APGD:loss=dice', 'masked-ce', 'balanced-masked-ce', 'js', 'tsallis']),
    (['--attacks', 'SEA:iters=2'], ValueError, ['SEA:iters=2', 'too few']),
    (['--robustness', '--test-images', '0'], ValueError, ['--test-images']),
    (['--robustness', '--tta'], ValueError, ['--tta']),
    (['--epsilons', '0.01', '--out', 'x'], ValueError, ['--out']),
])
def test_bad_switches_fail_before_the_runner(demo_files, tools_test, tmp_path,
                                             argv, error, words):
    cfg_file, checkpoint = demo_files
    with pytest.raises(error) as info:
        tools_test.main(
            [cfg_file, checkpoint, '--work-dir',
             str(tmp_path / 'bad'), *argv])
    for word in words:
        assert word in str(info.value)
    assert not osp.exists(tmp_path / 'bad')  # no Runner was built


def test_mismatched_checkpoint_fails_before_any_image(demo_files, tmp_path,
                                                      tools_test):
    cfg_file, checkpoint = demo_files
    cfg = Config.fromfile(cfg_file)
    cfg.custom_hooks = [dict(type='_NoImageExpectedHook')]
    cfg_file = str(tmp_path / 'demo_guarded.py')
    cfg.dump(cfg_file)
    # A model of twice the width: every convolution has another shape.
    wider = copy.deepcopy(cfg.model)
    width = cfg.model.backbone.stem_channels
    wider.backbone.stem_channels = wider.backbone.base_channels = 2 * width
    wider.decode_head.in_channels *= 2
    wrong = str(tmp_path / 'wider.pth')
    torch.save(dict(state_dict=MODELS.build(wider).state_dict()), wrong)

    # control: the right checkpoint reaches the first image
    with pytest.raises(AssertionError, match='reached the test loop'):
        tools_test.main(
            [cfg_file, checkpoint, '--work-dir',
             str(tmp_path / 'ok')] + unique('ok'))
    for switch in ([], ['--robustness']):
        with pytest.raises(CheckpointMismatchError) as info:
            tools_test.main([
                cfg_file, wrong, '--work-dir',
                str(tmp_path / 'wrong'), *switch
            ] + unique('wrong'))
        message = str(info.value)
        assert wrong in message and cfg_file in message
        assert 'weights with another shape' in message
        assert (f'backbone.stem.0.weight: checkpoint ({width}, 3, 3, 3) vs '
                f'model ({width // 2}, 3, 3, 3)') in message


def test_strong_attacks_on_the_first_images(demo_files, tmp_path, tools_test,
                                            one_thread):
    cfg_file, checkpoint = demo_files
    work_dir = str(tmp_path / 'strong')
    metrics = tools_test.main([
        cfg_file, checkpoint, '--work-dir', work_dir, '--attacks', 'BIM',
        'APGD:iters=4', 'APGD:loss=js,iters=4', 'SEA:iters=5', '--epsilons',
        '0', '0.03', '--test-images', '3'
    ] + unique('strong') + ['log_level=INFO'])
    [path] = glob.glob(osp.join(work_dir, '*', 'robustness.json'))
    with open(path) as f:
        records = {(r['attack'], r['eps']): r for r in json.load(f)['records']}
    assert {a
            for a, _ in records
            } == {'clean', 'BIM', 'APGD-ce', 'APGD-js', 'SEA', 'worst'}
    assert all(r['images'] == 3 for r in records.values())
    # nominal budgets (early stop can only lower them)
    assert records[('BIM', 0.03)]['backwards'] == 10
    assert 0 < records[('APGD-ce', 0.03)]['backwards'] <= 4
    assert 0 < records[('SEA', 0.03)]['backwards'] <= 15
    assert records[('worst', 0.03)]['rule'] == 'pixel_accuracy'
    # progress weighted by gradient passes, with the time left, in the log
    # (not a terminal here)
    [log] = glob.glob(osp.join(work_dir, '*', '*.log'))
    with open(log) as f:
        assert 'robustness [SEA eps 0.03]: 100% of the sweep' in f.read()
    assert metrics['worst/eps_0.030/aAcc'] <= min(
        metrics[f'{a}/eps_0.030/aAcc']
        for a in ('BIM', 'APGD-ce', 'APGD-js', 'SEA'))
