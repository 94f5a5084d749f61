# Test (and evaluate) a segmentor with mmseg_fnm. Same command line as
# mmseg's tools/test.py; besides, it loads the plugin, loads checkpoints with
# torch.load(weights_only=True), refuses checkpoints that do not fit the
# config, runs distributed on CPU, and sweeps attacks over radii without
# editing the config (--robustness, --attacks, --epsilons).
import argparse
import ast
import os
import os.path as osp
import warnings

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import mmseg_fnm  # noqa: F401  (registers the plugin's components)
from mmseg_fnm.attacks import build_attack
from mmseg_fnm.engine.loops.robustness_loop import DEFAULT_ATTACKS
from mmseg_fnm.registry import ATTACKS
from mmseg_fnm.utils import distributed_session
from mmseg_fnm.utils.checkpoint_match import check_state_dict

ROBUSTNESS_LOOP = 'RobustnessTestLoop'
# --attacks NAME: the paper's settings for FGSM and BIM (alpha=0.004, N=10).
CLI_ATTACKS = {cfg['type']: cfg for cfg in DEFAULT_ATTACKS}


# TODO: support fuse_conv_bn, visualization, and format_only
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help=('if specified, the evaluation metric results will be dumped'
              'into the directory as json'))
    parser.add_argument(
        '--out',
        type=str,
        help='The directory to save output prediction for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='Test time augmentation')
    parser.add_argument(
        '--robustness',
        action='store_true',
        help='evaluate under attack: run RobustnessTestLoop (the paper\'s '
        'sweep: FGSM and BIM, eps 0 to 0.04) instead of the config\'s '
        'test loop; writes robustness.json/.csv/.png into the log dir')
    parser.add_argument(
        '--attacks',
        nargs='+',
        metavar='NAME[:KEY=VALUE,...]',
        help='attacks of the sweep (implies --robustness), e.g. FGSM BIM '
        'SegPGD APGD:loss=js SEA, or BIM:steps=20,alpha=0.002, '
        'SEA:iters=100 and "SEA:losses=[\'masked-ce\',\'js\']"; FGSM and '
        'BIM default to the paper\'s settings, SegPGD, APGD and SEA to '
        'theirs')
    parser.add_argument(
        '--epsilons',
        nargs='+',
        type=float,
        metavar='R',
        help='radii of the sweep in [0, 1] pixel units (implies '
        '--robustness), e.g. 0 0.01 0.02 0.03')
    parser.add_argument(
        '--test-images',
        type=int,
        metavar='N',
        help='score only the first N images of the test set (e.g. to '
        'measure what a strong attack costs before the full run)')
    # When using PyTorch version >= 2.0.0, the `torch.distributed.launch`
    # will pass the `--local-rank` parameter to `tools/train.py` instead
    # of `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)

    return args


def trigger_visualization_hook(cfg, args):
    default_hooks = cfg.default_hooks
    if 'visualization' in default_hooks:
        visualization_hook = default_hooks['visualization']
        # Turn on visualization
        visualization_hook['draw'] = True
        if args.show:
            visualization_hook['show'] = True
            visualization_hook['wait_time'] = args.wait_time
        if args.show_dir:
            visualizer = cfg.visualizer
            visualizer['save_dir'] = args.show_dir
    else:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks.'
            'refer to usage '
            '"visualization=dict(type=\'VisualizationHook\')"')

    return cfg


def build_cfg(args):
    """Load the config and apply the command-line options."""
    robustness = args.robustness or args.attacks or args.epsilons
    if robustness and (args.tta or args.out is not None):
        raise ValueError(
            '--robustness (--attacks, --epsilons) cannot be combined with '
            '--tta or --out: the sweep attacks the plain model and writes '
            'its report (robustness.json) into the log dir')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        # update configs according to CLI args if args.work_dir is not None
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        # use config filename as default work_dir if cfg.work_dir is None
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    if args.test_images is not None:
        if args.test_images < 1:
            raise ValueError(
                f'--test-images must be >= 1, got {args.test_images}')
        # mmengine's BaseDataset keeps the first N samples.
        cfg.test_dataloader.dataset.indices = args.test_images

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    # add output_dir in metric
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    if robustness:
        cfg.test_cfg = robustness_test_cfg(
            cfg.get('test_cfg'), args.attacks, args.epsilons)
    return cfg


def parse_attack(spec):
    """``'BIM:steps=20'`` -> ``dict(type='BIM', alpha=0.004, steps=20)``.

    Names are matched case-insensitively against the registered attacks;
    an unknown name is kept, so that building it lists the registered ones.
    """
    name, _, options = spec.partition(':')
    registered = {key.lower(): key for key in ATTACKS.module_dict}
    name = registered.get(name.strip().lower(), name.strip())
    cfg = dict(CLI_ATTACKS.get(name, dict(type=name)))
    for option in filter(None, split_options(options)):
        key, sep, value = option.partition('=')
        if not sep or not key.strip():
            raise ValueError(
                f'--attacks {spec}: expected NAME or NAME:KEY=VALUE,..., '
                'e.g. BIM:steps=20,alpha=0.002')
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            value = value.strip()  # a plain string
        cfg[key.strip()] = value
    return cfg


def split_options(options):
    """Split ``KEY=VALUE,...`` at the commas outside brackets and quotes,
    so that ``losses=['js','ce'],iters=50`` is two options."""
    parts, depth, quote, current = [], 0, None, ''
    for char in options:
        if quote:
            quote = None if char == quote else quote
        elif char in '\'"':
            quote = char
        elif char in '([{':
            depth += 1
        elif char in ')]}':
            depth -= 1
        elif char == ',' and depth == 0:
            parts.append(current)
            current = ''
            continue
        current += char
    return parts + [current]


def robustness_test_cfg(test_cfg, attacks=None, epsilons=None):
    """The ``test_cfg`` of ``--robustness`` / ``--attacks`` / ``--epsilons``.

    A config that already sweeps keeps its attacks and radii unless they
    are given; any other test loop becomes ``RobustnessTestLoop`` with its
    defaults (the paper's sweep).  The loop swaps the config's IoUMetric
    for RobustnessMetric itself.  Attacks given here are built once, so
    that a wrong name or argument fails before the Runner is built.
    """
    test_cfg = dict(test_cfg or {})
    if str(test_cfg.get('type', '')).split('.')[-1] == ROBUSTNESS_LOOP:
        sweep = test_cfg
    else:
        sweep = dict(type=ROBUSTNESS_LOOP)
    if attacks:
        sweep['attacks'] = [parse_attack(spec) for spec in attacks]
        for spec, cfg in zip(attacks, sweep['attacks']):
            cfg = {k: v for k, v in cfg.items() if k != 'name'}
            try:
                with warnings.catch_warnings():
                    # The loop warns about radii out of reach.
                    warnings.simplefilter('ignore', UserWarning)
                    build_attack(cfg)
            except (KeyError, TypeError, ValueError) as error:
                message = error.args[0] if error.args else error
                raise type(error)(f'--attacks {spec}: {message}') from None
    if epsilons:
        sweep['epsilons'] = list(epsilons)
    return ConfigDict(sweep)


class CheckpointMatchHook(Hook):
    """Refuse a checkpoint that does not fit the config's model.

    ``Runner.load_checkpoint`` hands the loaded checkpoint to this hook
    before it loads it with ``strict=False`` (which would only warn), so a
    wrong checkpoint fails before any image is processed, without being
    read twice.
    """

    priority = 'VERY_HIGH'

    def __init__(self, config=None, checkpoint=None):
        self.config = config
        self.checkpoint = checkpoint

    def after_load_checkpoint(self, runner, checkpoint):
        check_state_dict(runner.model, checkpoint, self.checkpoint,
                         self.config)


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)

    # On CPU-only machines: gloo process group and CPU DDP. Either way the
    # process group ends cleanly when testing ends.
    with distributed_session(cfg, args.launcher):
        # build the runner from config
        if 'runner_type' not in cfg:
            runner = Runner.from_cfg(cfg)
        else:
            runner = RUNNERS.build(cfg)
        runner.register_hook(CheckpointMatchHook(args.config, args.checkpoint))

        # start testing
        metrics = runner.test()
    return metrics


if __name__ == '__main__':
    main()
