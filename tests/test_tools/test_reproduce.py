"""tools/reproduce.py --quick end to end: real trainings, sweeps, files."""
import json
import os
import os.path as osp
import re
import subprocess
import time

import matplotlib.image
import numpy as np
import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODELS = [
    'basic', 'fgsm', 'rfgsm', 'bim3', 'fnm', 'fnm_cap0.03', 'fnm_cap0.06'
]
SEEDS = [0, 1]
EPSILONS = [0, 0.02, 0.04]
ATTACKS = ['FGSM', 'BIM']
OUTPUTS = ('summary.json', 'summary.md', 'figure3a_fgsm.png',
           'figure3b_bim.png', 'fnm_radius.png')


def run_dir(work_dir, model, seed):
    return osp.join(work_dir, model, f'seed_{seed}')


def run_curve(work_dir, model, seed, attack):
    """mIoU at EPSILONS from a run's own robustness.json."""
    with open(osp.join(run_dir(work_dir, model, seed),
                       'robustness.json')) as f:
        records = json.load(f)['records']
    lookup = {(r['attack'], r['eps']): r['mIoU'] for r in records}
    return [lookup[attack, eps] for eps in EPSILONS]


def markdown_tables(path):
    """``{attack: {(model, eps): (mean, std)}}`` parsed from summary.md."""
    with open(path) as f:
        text = f.read()
    tables = {}
    for attack, body in re.findall(
            r'## (\w+): mIoU \(%\) per radius\n\n(.*?)\n\n', text, re.S):
        rows = [[c.strip() for c in line.strip('|').split('|')]
                for line in body.splitlines()]
        header, data = rows[0], rows[2:]
        cells = {}
        for row in data:
            for model, value in zip(header[1:], row[1:]):
                mean, std = value.split(' ± ')
                cells[model, float(row[0])] = (float(mean), float(std))
        tables[attack] = cells
    return tables


def check_summary(work_dir):
    """summary.json and summary.md agree with the runs' own files."""
    with open(osp.join(work_dir, 'summary.json')) as f:
        summary = json.load(f)
    assert list(summary['models']) == MODELS
    assert summary['seeds'] == SEEDS and summary['epsilons'] == EPSILONS
    assert summary['attacks'] == ATTACKS
    tables = markdown_tables(osp.join(work_dir, 'summary.md'))
    assert sorted(tables) == sorted(ATTACKS)
    for model, result in summary['models'].items():
        assert result['seeds'] == SEEDS
        for attack in ATTACKS:
            per_seed = [run_curve(work_dir, model, s, attack) for s in SEEDS]
            curve = result['robustness'][attack]
            assert curve['eps'] == EPSILONS
            np.testing.assert_allclose(curve['per_seed'], per_seed)
            np.testing.assert_allclose(curve['mean'],
                                       np.mean(per_seed, axis=0))
            np.testing.assert_allclose(curve['std'],
                                       np.std(per_seed, axis=0, ddof=1))
            for i, eps in enumerate(EPSILONS):
                mean, std = tables[attack][model, eps]
                assert mean == pytest.approx(curve['mean'][i], abs=0.006)
                assert std == pytest.approx(curve['std'][i], abs=0.006)
        seconds = []
        for seed in SEEDS:
            with open(osp.join(run_dir(work_dir, model, seed),
                               'train.json')) as f:
                seconds.append(json.load(f)['seconds'])
        assert result['train_seconds']['per_seed'] == seconds
        assert result['train_seconds']['mean'] == pytest.approx(
            np.mean(seconds))
    return summary


def test_quick_end_to_end_and_restart(reproduce, tmp_path, monkeypatch):
    # A relative work dir keeps the paths in the configs short: mmengine
    # formats a config (yapf) several times per Runner, which takes
    # seconds with pytest's long tmp paths.
    monkeypatch.chdir(tmp_path)
    work_dir = 'reproduce'
    argv = ['--quick', '--work-dir', work_dir]
    reproduce.main(argv)

    for name in OUTPUTS:
        path = osp.join(work_dir, name)
        assert osp.isfile(path), name
        if name.endswith('.png'):
            assert matplotlib.image.imread(path).ndim == 3
    for model in MODELS:
        for seed in SEEDS:
            folder = run_dir(work_dir, model, seed)
            for name in ('iter_20.pth', 'train.json', 'robustness.json'):
                assert osp.isfile(osp.join(folder, name)), (folder, name)
    summary = check_summary(work_dir)
    models = summary['models']
    assert models['basic']['time_ratio_to_basic'] == pytest.approx(1)
    assert 'train_radius' not in models['basic']  # clean training
    # The training radius is logged every iteration (from the first one
    # with an adversarial sample on), and the cap reaches the training.
    for model in ('fnm', 'fnm_cap0.03', 'fnm_cap0.06', 'fgsm'):
        radius = models[model]['train_radius']
        assert radius['iters'] == list(range(radius['iters'][0], 21))
        assert len(radius['iters']) >= 15 and max(radius['mean']) > 0
    assert models['fnm_cap0.03']['attack'] == dict(
        type='FastNewton', max_eps=0.03)
    assert max(models['fnm_cap0.03']['train_radius']['mean']) <= 0.03 + 1e-6
    assert models['fgsm']['train_radius']['mean'] == pytest.approx(
        [0.03] * len(models['fgsm']['train_radius']['mean']))
    with open(osp.join(work_dir, 'summary.md')) as f:
        text = f.read()
    assert '## Training time' in text and '| fnm_cap0.06 |' in text
    assert '## FNM training radius' in text
    # Provenance: the command and the commit that made the numbers.
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'],
                            cwd=REPO_ROOT,
                            capture_output=True,
                            text=True).stdout.strip()
    assert summary['commits'] == [commit or 'None']
    assert summary['command'] == 'python tools/reproduce.py ' + ' '.join(argv)
    assert f'`{summary["command"]}`' in text and commit in text

    # Distinct numbers in every report, so that a mix-up of models or
    # seeds in the summary shows; a second call trains and sweeps nothing.
    stamps = {}
    for index, model in enumerate(MODELS):
        for seed in SEEDS:
            folder = run_dir(work_dir, model, seed)
            report_path = osp.join(folder, 'robustness.json')
            with open(report_path) as f:
                report = json.load(f)
            for record in report['records']:
                record['mIoU'] = 10 * index + 3 * seed + 100 * record['eps']
            with open(report_path, 'w') as f:
                json.dump(report, f)
            stamps[folder] = [
                os.stat(osp.join(folder, n)).st_mtime_ns
                for n in ('iter_20.pth', 'train.json', 'robustness.json')
            ]
    start = time.perf_counter()
    reproduce.main(argv)
    assert time.perf_counter() - start < 30
    for folder, before in stamps.items():
        assert [
            os.stat(osp.join(folder, n)).st_mtime_ns
            for n in ('iter_20.pth', 'train.json', 'robustness.json')
        ] == before, folder
    check_summary(work_dir)

    # Finished runs trained with another config are not mixed in.
    with pytest.raises(RuntimeError, match='another config.*--force'):
        reproduce.main(argv +
                       ['--cfg-options', 'model.decode_head.dropout_ratio=0'])

    # --force redoes what is asked for, and only that.
    reproduce.main(argv + ['--models', 'basic', '--seeds', '0', '--force'])
    redone = run_dir(work_dir, 'basic', 0)
    assert os.stat(osp.join(redone,
                            'train.json')).st_mtime_ns > stamps[redone][1]
    kept = run_dir(work_dir, 'basic', 1)
    assert os.stat(osp.join(kept, 'train.json')).st_mtime_ns == stamps[kept][1]


@pytest.mark.multiprocess
def test_quick_with_distributed_launcher(reproduce, tmp_path, monkeypatch):
    """--launcher pytorch runs tools/dist_train.sh and dist_test.sh (gloo
    processes on a CPU-only machine)."""
    monkeypatch.chdir(tmp_path)
    work_dir = 'reproduce'
    summary = reproduce.main([
        '--quick', '--work-dir', work_dir, '--launcher', 'pytorch', '--gpus',
        '2', '--models', 'fnm_cap0.03', '--seeds', '0', '--test-images', '2'
    ])
    with open(osp.join(run_dir(work_dir, 'fnm_cap0.03', 0),
                       'train.json')) as f:
        record = json.load(f)
    assert record['launcher'] == 'pytorch' and record['gpus'] == 2
    assert osp.isfile(record['checkpoint'])
    curve = summary['models']['fnm_cap0.03']['robustness']['BIM']
    assert curve['per_seed'] == [run_curve(work_dir, 'fnm_cap0.03', 0, 'BIM')]
    assert curve['std'] == [None] * len(EPSILONS)  # one seed: no spread
    with open(
            osp.join(run_dir(work_dir, 'fnm_cap0.03', 0),
                     'robustness.json')) as f:
        assert json.load(f)['sweep']['test_images'] == 2
    for name in OUTPUTS:
        assert osp.isfile(osp.join(work_dir, name)), name


@pytest.mark.parametrize('argv, error, message', [
    (['--models', 'fnm', 'pgd'], ValueError,
     r"Unknown model 'pgd': choose from basic, fgsm, rfgsm, bim3, fnm "
     r'or fnm_cap<R>'),
    (['--models', 'fnm_cap2'], ValueError, 'Unknown model'),
    (['--dataset', 'ade20k'], ValueError,
     "--dataset 'ade20k' is unknown; choose one of demo, demo_textures, "
     'cityscapes, voc'),
    (['--seeds'], ValueError, '--seeds needs at least one seed'),
    (['--seeds', '1', '1'], ValueError, 'duplicates'),
    (['--gpus', '2'], ValueError, 'needs --launcher pytorch or slurm'),
    (['--launcher', 'slurm'], ValueError, 'needs --partition'),
    (['--epsilons', '0', '1.5'], ValueError, r'radii must be'),
    (['--attacks', 'FGSM', 'PGD'], KeyError, '--attacks PGD'),
    (['--dataset', 'cityscapes', '--data-root', '{missing}'
      ], FileNotFoundError, r'missing.*cityscapes-dataset\.com.*--data-root'),
    (['--dataset', 'voc', '--data-root', '{missing}'
      ], FileNotFoundError, r'host\.robots\.ox\.ac\.uk.*voc_aug\.py'),
])
def test_bad_arguments_fail_before_any_run(reproduce, tmp_path, argv, error,
                                           message):
    work_dir = tmp_path / 'reproduce'
    argv = [a.format(missing=tmp_path / 'missing') for a in argv]
    with pytest.raises(error, match=message):
        reproduce.main(argv + ['--work-dir', str(work_dir)])
    assert not work_dir.exists()


def test_quick_demo_textures_configs_and_data(reproduce, tmp_path):
    # No training: the runs' configs and the generated data they read.
    args = reproduce.parse_args([
        '--quick', '--dataset', 'demo_textures', '--models', 'basic',
        'fnm_cap0.03', '--work-dir',
        str(tmp_path / 'reproduce')
    ])
    reproduce.check_args(args)
    cfgs = [
        reproduce.build_run_config(args, model, 0) for model in args.models
    ]
    root = str(tmp_path / 'reproduce' / 'data' / 'demo_textures')
    for cfg in cfgs:
        for data in reproduce.dataset_cfgs(cfg):
            assert data['type'] == 'DemoTexturesDataset'
            assert data['data_root'] == root
        assert cfg.model.decode_head.num_classes == 9
    assert cfgs[1].train_cfg.attack == dict(type='FastNewton', max_eps=0.03)
    reproduce.prepare_data(cfgs)
    with open(osp.join(root, 'manifest.json')) as f:
        manifest = json.load(f)
    assert manifest['format'] == 'mmseg_fnm.demo_textures'
    assert manifest['params']['num_train'] == 16
    assert len(os.listdir(osp.join(root, 'img_dir', 'train'))) == 16
