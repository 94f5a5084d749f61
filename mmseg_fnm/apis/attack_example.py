"""Attack single images of a trained segmentor, for pictures and checks.

The image goes through the config's test pipeline; the attack runs on the
prediction as it is evaluated (``SegmentorAttacker``, objective
``'predict'``). Without a label map the clean prediction serves as the
label.
"""
import copy
import inspect
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS

from mmseg_fnm.attacks import BaseAttack, SegmentorAttacker
from mmseg_fnm.utils import load_safe
from mmseg_fnm.utils.checkpoint_match import check_state_dict, state_dict_of
from mmseg_fnm.visualization.attack_figure import default_palette

# Transforms that need a label map; dropped when none is given.
LABEL_TRANSFORMS = ('LoadAnnotations', 'CheckSegMapShape')


def init_segmentor(config: str,
                   checkpoint: str,
                   device: str = 'cpu'
                   ) -> Tuple[torch.nn.Module, Config, dict]:
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


def dataset_metainfo(cfg: Config) -> dict:
    """METAINFO of the test data set's class (checkpoints without meta)."""
    dataset_cls = DATASETS.get(cfg.test_dataloader.dataset.type)
    return dict(getattr(dataset_cls, 'METAINFO', {}))


def reduce_zero_label_of(cfg: Config) -> bool:
    """The test data set's ``reduce_zero_label`` (config, else class
    default), which ``LoadAnnotations`` reads from the results."""
    dataset = cfg.test_dataloader.dataset
    if 'reduce_zero_label' in dataset:
        return bool(dataset.reduce_zero_label)
    dataset_cls = DATASETS.get(dataset.type)
    param = inspect.signature(
        dataset_cls.__init__).parameters.get('reduce_zero_label')
    return bool(param.default) if param is not None else False


def load_sample(cfg: Config, image: str, label: Optional[str] = None) -> dict:
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


def attack_sample(model: torch.nn.Module,
                  batch: dict,
                  attack: BaseAttack,
                  seed: int = 0) -> Dict:
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


def changed_fraction(result: Dict) -> float:
    """Fraction of pixels whose predicted class the attack changed."""
    return float(np.mean(result['clean_pred'] != result['adv_pred']))


def most_changed_test_image(model: torch.nn.Module,
                            cfg: Config,
                            attack: BaseAttack,
                            num_images: Optional[int] = None,
                            seed: int = 0) -> Tuple[Dict, str, List[float]]:
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
