# Draw an adversarial example as in the paper's figure 1: the clean image,
# its prediction, the adversarial image, its prediction and the
# perturbation magnified.
#
#   python tools/visualize_attack.py CONFIG CHECKPOINT IMAGE \
#       [--label LABEL_PNG] [--attack BIM --eps 0.03] --out fig.png
#   python tools/visualize_attack.py CONFIG CHECKPOINT [--num-images N] \
#       --out fig.png
#
# Without IMAGE, the first N images of the config's test data set (all by
# default) are attacked with their label maps, and the figure shows the one
# whose prediction the attack changes most; the command also prints the
# median change over all of them, so the pick is not mistaken for typical.
#
# The image goes through the config's test pipeline; the attack runs on the
# prediction as it is evaluated (SegmentorAttacker, objective 'predict').
# Without a label map the clean prediction serves as the label.
import argparse
import os.path as osp

import numpy as np
import torch
from mmengine.utils import mkdir_or_exist

import mmseg_fnm  # noqa: F401  (registers the plugin's components)
from mmseg_fnm.apis import (attack_sample, changed_fraction, init_segmentor,
                            load_sample, most_changed_test_image)
from mmseg_fnm.attacks import build_attack
from mmseg_fnm.engine.loops.robustness_loop import DEFAULT_ATTACKS
from mmseg_fnm.visualization.attack_figure import draw_attack_figure


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw an image, its adversarial version and both '
        'predictions (the paper\'s figure 1)')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        'image',
        nargs='?',
        help='image file; without it, the image of the config\'s test data '
        'set whose prediction the attack changes most')
    parser.add_argument(
        '--label',
        help='label map of the image (PNG of class indices, 255 = ignore); '
        'without it the clean prediction is attacked')
    parser.add_argument(
        '--num-images',
        type=int,
        help='without IMAGE: how many test images (from the first) to '
        'attack in search of the most changed one (default: all)')
    parser.add_argument(
        '--attack',
        default='BIM',
        help='registered attack type (default: BIM; FGSM, RandomFGSM, '
        'FastNewton, ...)')
    parser.add_argument(
        '--eps',
        type=float,
        default=0.03,
        help='L-inf radius in [0, 1] pixel units (default: 0.03); ignored '
        'by attacks that choose their own radius (FastNewton)')
    parser.add_argument(
        '--alpha',
        type=float,
        help='step size of iterative attacks (BIM default: 0.004)')
    parser.add_argument(
        '--steps',
        type=int,
        help='iterations of iterative attacks (BIM default: 10)')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of random attacks')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='device to run on (default: cuda if available, else cpu)')
    parser.add_argument('--out', required=True, help='output figure file')
    return parser.parse_args(argv)


def build_attack_from_args(args):
    """The attack of the command line; BIM keeps the paper's evaluation
    settings (alpha 0.004, 10 steps) unless given."""
    defaults = {cfg['type']: cfg for cfg in DEFAULT_ATTACKS}
    cfg = dict(defaults.get(args.attack, dict(type=args.attack)))
    if args.alpha is not None:
        cfg['alpha'] = args.alpha
    if args.steps is not None:
        cfg['steps'] = args.steps
    attack = build_attack(cfg)
    return attack.with_radius(args.eps) if attack.has_radius else attack


def main(argv=None):
    """Draw the figure; returns :func:`attack_sample`'s dict plus
    ``title``, ``out`` and ``image_file`` (the file drawn), and without an
    IMAGE ``fractions`` (changed fraction of every test image attacked)."""
    args = parse_args(argv)
    for path, what in ((args.checkpoint, 'checkpoint'), (args.image, 'image'),
                       (args.label, 'label map')):
        if path is not None and not osp.isfile(path):
            raise FileNotFoundError(f'The {what} {path} does not exist')
    if args.image is None and args.label is not None:
        raise ValueError('--label belongs to an IMAGE; without IMAGE the '
                         'test data set\'s label maps are used')
    if args.image is not None and args.num_images is not None:
        raise ValueError('--num-images picks from the test data set; drop '
                         'it or the IMAGE')
    if args.num_images is not None and args.num_images < 1:
        raise ValueError(
            f'--num-images must be at least 1, got {args.num_images}')
    attack = build_attack_from_args(args)
    model, cfg, meta = init_segmentor(args.config, args.checkpoint,
                                      args.device)
    extra = {}
    if args.image is None:
        result, image, fractions = most_changed_test_image(
            model, cfg, attack, args.num_images, args.seed)
        extra = dict(fractions=fractions)
        picked = (f' (most changed of {len(fractions)} test images; median '
                  f'{np.median(fractions) * 100:.1f}% changed)')
    else:
        image, picked = args.image, ''
        batch = load_sample(cfg, image, args.label)
        result = attack_sample(model, batch, attack, args.seed)
    if result['pseudo_label']:
        labels = 'labels: clean prediction (no label map given)'
    elif args.image is None:
        labels = 'labels: the data set\'s label maps'
    else:
        labels = f'labels: {osp.basename(args.label)}'
    title = f'{attack!r} on {osp.basename(image)}{picked}; {labels}'
    if osp.dirname(args.out):
        mkdir_or_exist(osp.dirname(args.out))
    draw_attack_figure(
        result['image'],
        result['clean_pred'],
        result['adv_image'],
        result['adv_pred'],
        args.out,
        meta['palette'],
        result['eps'],
        classes=meta['classes'],
        title=title)
    print(f'{title}\nradius {result["eps"]:.4f}; prediction changed on '
          f'{changed_fraction(result) * 100:.1f}% of the pixels of {image}; '
          f'figure: {args.out}')
    return dict(result, title=title, out=args.out, image_file=image, **extra)


if __name__ == '__main__':
    main()
