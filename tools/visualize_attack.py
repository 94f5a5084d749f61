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
import copy
import inspect
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmengine.utils import mkdir_or_exist
from mmseg.registry import DATASETS, MODELS

import mmseg_fnm  # noqa: F401  (registers the plugin's components)
from mmseg_fnm.attacks import SegmentorAttacker, build_attack
from mmseg_fnm.engine.loops.robustness_loop import DEFAULT_ATTACKS
from mmseg_fnm.utils import load_safe
from mmseg_fnm.utils.checkpoint_match import check_state_dict, state_dict_of
from mmseg_fnm.visualization.attack_figure import (default_palette,
                                                   draw_attack_figure)

# Transforms that need a label map; dropped when none is given.
LABEL_TRANSFORMS = ('LoadAnnotations', 'CheckSegMapShape')


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


def init_segmentor(config, checkpoint, device='cpu'):
    """Build the config's model and load the checkpoint safely.

    Like mmseg's ``init_model``, but the checkpoint is read with
    ``torch.load(weights_only=True)`` and must fit the model exactly.

    Returns:
        tuple[nn.Module, Config, dict]: The model in eval mode, the config
        and the dataset meta (classes, palette).
    """
    cfg = Config.fromfile(config)
    cfg.model.pretrained = None
    cfg.model.train_cfg = None
    if 'init_cfg' in cfg.model.get('backbone', {}):
        cfg.model.backbone.init_cfg = None  # no download of pretrained
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    loaded = load_safe(checkpoint, map_location='cpu')
    check_state_dict(model, loaded, checkpoint, config)
    # num_batches_tracked may be missing (see check_state_dict).
    model.load_state_dict(state_dict_of(loaded), strict=False)
    meta = (loaded.get('meta') or {}).get('dataset_meta') or \
        dataset_metainfo(cfg)
    meta = dict(meta)
    if not meta.get('classes'):
        head = model.decode_head
        head = head[-1] if isinstance(head, torch.nn.ModuleList) else head
        meta['classes'] = [str(k) for k in range(head.num_classes)]
    if not meta.get('palette'):
        meta['palette'] = default_palette(len(meta['classes']))
    return model.to(device).eval(), cfg, meta


def dataset_metainfo(cfg):
    """METAINFO of the test data set's class (checkpoints without meta)."""
    dataset_cls = DATASETS.get(cfg.test_dataloader.dataset.type)
    return dict(getattr(dataset_cls, 'METAINFO', {}))


def reduce_zero_label_of(cfg):
    """The test data set's ``reduce_zero_label`` (config, else class
    default), which ``LoadAnnotations`` reads from the results."""
    dataset = cfg.test_dataloader.dataset
    if 'reduce_zero_label' in dataset:
        return bool(dataset.reduce_zero_label)
    dataset_cls = DATASETS.get(dataset.type)
    param = inspect.signature(
        dataset_cls.__init__).parameters.get('reduce_zero_label')
    return bool(param.default) if param is not None else False


def load_sample(cfg, image, label=None):
    """The image (and label map) through the config's test pipeline, as a
    batch of one."""
    pipeline = copy.deepcopy(
        cfg.test_dataloader.dataset.get('pipeline') or cfg.test_pipeline)
    results = dict(img_path=image, seg_fields=[])
    if label is None:
        pipeline = [
            t for t in pipeline
            if str(t['type']).split('.')[-1] not in LABEL_TRANSFORMS
        ]
    else:
        results.update(
            seg_map_path=label, reduce_zero_label=reduce_zero_label_of(cfg))
    return pseudo_collate([Compose(pipeline)(results)])


def attack_sample(model, batch, attack, seed=0):
    """Attack one image; without a label map, its clean prediction is the
    label.

    Returns:
        dict: ``clean_pred`` / ``adv_pred`` (class maps at the image's
        original size), ``image`` / ``adv_image`` (RGB ``(H, W, 3)`` in
        [0, 1] at the model's input size), ``eps`` (radius received) and
        ``pseudo_label`` (whether the clean prediction was the label).
    """
    with torch.no_grad():
        [clean] = model.test_step(batch)
    sample = batch['data_samples'][0]
    pseudo_label = 'gt_sem_seg' not in sample
    if pseudo_label:
        sample.gt_sem_seg = PixelData(data=clean.pred_sem_seg.data.clone())
    generator = torch.Generator().manual_seed(seed)
    adv_inputs, eps = SegmentorAttacker().attack(
        model, attack, batch, objective='predict', generator=generator)
    adv_batch = dict(inputs=adv_inputs, data_samples=[sample.clone()])
    with torch.no_grad():
        [adv] = model.test_step(adv_batch)

    def rgb(tensor):
        array = tensor.detach().float().cpu().numpy().transpose(1, 2, 0)
        if array.shape[-1] == 3:
            array = array[..., ::-1]  # LoadImageFromFile reads BGR
        elif array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        return np.clip(array / 255, 0, 1)

    return dict(
        clean_pred=clean.pred_sem_seg.data[0].cpu().numpy(),
        adv_pred=adv.pred_sem_seg.data[0].cpu().numpy(),
        image=rgb(batch['inputs'][0]),
        adv_image=rgb(adv_inputs[0]),
        eps=float(eps[0]),
        pseudo_label=pseudo_label)


def changed_fraction(result):
    """Fraction of pixels whose predicted class the attack changed."""
    return float(np.mean(result['clean_pred'] != result['adv_pred']))


def most_changed_test_image(model, cfg, attack, num_images=None, seed=0):
    """Attack the first ``num_images`` images of the config's test data
    set, each with its label map, and keep the one whose prediction changed
    most (the first of equals).

    Returns:
        tuple[dict, str, list[float]]: :func:`attack_sample`'s dict for
        that image, its file, and the changed fraction of every image
        attacked, in data set order.
    """
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    count = len(dataset) if num_images is None else min(
        num_images, len(dataset))
    if count == 0:
        raise ValueError('The config\'s test data set '
                         f'({cfg.test_dataloader.dataset.type}) is empty; '
                         'pass an IMAGE instead')
    best, best_path, fractions = None, None, []
    for index in range(count):
        batch = pseudo_collate([dataset[index]])
        result = attack_sample(model, batch, attack, seed)
        fractions.append(changed_fraction(result))
        if best is None or fractions[-1] > changed_fraction(best):
            best = result
            best_path = batch['data_samples'][0].img_path
    return best, best_path, fractions


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
    return dict(
        result, title=title, out=args.out, image_file=image, **extra)


if __name__ == '__main__':
    main()
