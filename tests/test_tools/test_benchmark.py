"""tools/benchmark.py runs end to end on a tiny setting and writes a
well-formed JSON.  The speed targets are read from its output, not
asserted here."""
import json
import math
import os.path as osp
import statistics

import pytest
import torch

VARIANTS = ('FGSM', 'RandomFGSM', 'FNM', 'BIM-3')
SWEEPS = ('clean prediction', 'FGSM, gradient reuse', 'FGSM, radius by radius',
          'BIM-10')


def _positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def _run(tool, cfg, tmp_path, *extra):
    cfg_file = str(tmp_path / 'bench_cfg.py')
    cfg.dump(cfg_file)
    out = tmp_path / 'out' / 'bench.json'
    returned = tool.main([
        '--config', cfg_file, '--quick', '--threads', '1', '--work-dir',
        str(tmp_path / 'work'), '--out',
        str(out), *extra
    ])
    with open(out) as f:
        written = json.load(f)
    with open(osp.splitext(out)[0] + '.md') as f:
        assert f.read().strip() == written['table']
    return returned, written


def test_benchmark_writes_well_formed_json(benchmark_tool, demo_cfg, tmp_path):
    returned, result = _run(benchmark_tool, demo_cfg('basic'), tmp_path)

    assert set(result) >= {
        'machine', 'versions', 'settings', 'training', 'breakdown', 'sweep',
        'ratios', 'table'
    }
    assert result['versions']['torch'] == torch.__version__
    assert result['machine']['cpu_count'] >= 1
    assert result['machine']['device'] == 'cpu'
    settings = result['settings']
    assert settings['quick'] is True
    assert settings['data'] == dict(train='config', test='config')
    assert settings['batch_size'] == 2
    assert settings['adv_probs'] == [0.5, 1.0]
    assert 'perf_counter' in settings['timing']

    training = result['training']
    names = ['clean'] + [f'{v} p={p}' for v in VARIANTS for p in ('0.5', '1')]
    assert sorted(training) == sorted(names)
    for name, entry in training.items():
        assert len(entry['seconds']) == settings['rounds']
        assert all(_positive(s) for s in entry['seconds'])
        assert entry['stats']['median'] == pytest.approx(
            statistics.median(entry['seconds']))
        # On a CPU the profiler reports allocations: peak above baseline.
        memory = entry['memory'][0]
        assert memory['peak'] > memory['baseline'] > 0
    assert training['clean']['attacked_fraction'] == 0
    assert training['clean']['attack'] is None
    for variant in VARIANTS:
        assert training[f'{variant} p=1']['attacked_fraction'] == 1
        assert 0 <= training[f'{variant} p=0.5']['attacked_fraction'] <= 1
    assert 'FastNewton' in training['FNM p=1']['attack']

    for name in ('FNM p=0.5', 'FNM p=1'):
        stats = result['breakdown'][name]['stats']
        for part in ('data', 'attack_forward', 'train_step', 'total'):
            assert _positive(stats[part]['median']), part
        assert stats['attack_backward']['median'] >= 0
    # At p=1 the attack runs every iteration: it has forward time.
    parts = result['breakdown']['FNM p=1']['seconds']
    assert all(f > 0 for f in parts['attack_forward'])
    assert all(f == 1 for f in parts['fraction'])

    sweep = result['sweep']
    assert sweep['epsilons'] == [
        0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04
    ]
    assert sweep['images'] == 1
    assert sorted(sweep['settings']) == sorted(SWEEPS)
    for entry in sweep['settings'].values():
        assert all(_positive(s) for s in entry['seconds_per_image'])

    ratios = {r['name']: r for r in result['ratios']}
    for row in ratios.values():
        assert set(row) == {'name', 'value', 'target', 'met', 'note'}
        assert isinstance(row['value'], float), row
        assert math.isfinite(row['value']), row
        if row['name'].startswith(('time', 'peak memory', 'floor')):
            assert _positive(row['value']), row
        assert (row['met'] is None) == (row['target'] is None)
        if row['target'] is not None:
            assert row['met'] == (row['value'] <= row['target'])
    fnm_fgsm = ratios['time FNM / FGSM (p=0.5)']
    assert fnm_fgsm['target'] == 1.05
    assert fnm_fgsm['value'] == pytest.approx(
        training['FNM p=0.5']['stats']['median'] /
        training['FGSM p=0.5']['stats']['median'])
    assert ratios['time FNM p=0.5 / clean']['target'] == 1.375
    assert ratios['peak memory FNM p=1 / clean']['target'] == 1.10
    assert ratios['sweep FGSM with / without gradient reuse']['target'] == 0.4
    strong = result['strong_attacks']
    # gradient steps per image: BIM-10, APGD 20, SEA 3 losses x 20
    assert {
        k: v['gradient_steps']
        for k, v in strong.items()
    } == {
        'BIM-10': 10,
        'APGD-ce (20 iters)': 20,
        'SEA (20 iters per loss)': 60
    }
    for name in ('APGD-ce (20 iters)', 'SEA (20 iters per loss)'):
        row = ratios[f'time per gradient step {name} / BIM-10']
        assert row['target'] == 1.15
        assert row['value'] == pytest.approx(
            strong[name]['stats']['median'] /
            strong['BIM-10']['stats']['median'])
    assert '### Strong attacks per gradient step' in result['table']
    assert '### Ratios' in result['table']
    assert returned['ratios'] == result['ratios']


def test_benchmark_falls_back_to_synthetic_data(benchmark_tool, demo_cfg,
                                                tmp_path):
    cfg = demo_cfg('basic')
    for split in ('train', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        dataset.data_root = str(tmp_path / 'missing')
        dataset.auto_generate = False
    _, result = _run(benchmark_tool, cfg, tmp_path, '--adv-probs', '1',
                     '--cpu-time')

    assert result['settings']['data'] == dict(
        train='synthetic', test='synthetic')
    assert 'process_time' in result['settings']['timing']
    # Synthetic data take the config's sizes: crop and test Resize scale.
    assert result['settings']['input_size'] == [32, 32]
    assert result['sweep']['image_size'] == [48, 48]
    assert sorted(result['training']) == sorted(['clean'] +
                                                [f'{v} p=1' for v in VARIANTS])
    assert list(result['breakdown']) == ['FNM p=1']


@pytest.mark.parametrize('argv, message', [
    (['--adv-probs', '0'], '--adv-probs'),
    (['--rounds', '0'], '--rounds'),
])
def test_benchmark_rejects_bad_arguments(benchmark_tool, argv, message,
                                         capsys):
    with pytest.raises(SystemExit):
        benchmark_tool.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a CPU build')
def test_benchmark_refuses_cuda_without_gpu(benchmark_tool, capsys):
    with pytest.raises(SystemExit):
        benchmark_tool.parse_args(['--device', 'cuda'])
    assert 'no GPU' in capsys.readouterr().err
