"""Run the tensor-level attacks on an mmseg segmentor and a data batch.

The perturbation lives in the [0, 1] pixel space of the raw image, before
the data preprocessor: ``x = raw / 255`` and the attack's ``forward`` runs
``x * 255`` through the segmentor's own ``data_preprocessor`` (channel
swap, normalisation, padding), so a radius means the same on every data
set and model.  Images of different sizes are zero-padded into one tensor
for the attack; the padded pixels do not reach the model (each image is
cropped back before preprocessing), so they get no gradient, are never
perturbed and never counted.  Padding added by the preprocessor carries
label ``ignore_index``.

Two objectives:

- ``'loss'`` (training): the decode head's logits resized to the size of
  the padded labels, exactly the logits and labels of the model's loss.
- ``'predict'`` (testing): ``segmentor.inference`` (``whole`` or ``slide``
  from ``test_cfg.mode``) followed by ``postprocess_result`` (unpad, unflip,
  resize to ``ori_shape``), against the ground truth at its original size,
  i.e. exactly what the evaluation scores.

No side effects: while an attack runs, parameters are frozen (gradients go
to the input only, nothing is added to ``.grad`` and no DDP hook fires),
and normalisation layers are handled by ``norm_mode``:

- ``'eval'`` (default, as robust-segmentation codebases do): norm layers
  use their running statistics during attack generation; this also makes
  attack passes free of SyncBN collectives.
- ``'train'``: norm layers keep the model's mode (batch statistics while
  training); running statistics are restored afterwards.

Everything else (train/eval mode of the model, data samples of the batch)
is left as it was.  Adversarial images are returned as float tensors on
the 0-255 scale: a step of 0.004 is about one grey level and would be lost
to uint8 rounding.
"""
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import is_model_wrapper
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from mmseg_fnm.registry import ATTACKS
from .base import AttackOutput, BaseAttack

try:  # mmcv's SyncBN is not a torch _NormBase.
    from mmcv.ops import SyncBatchNorm as _MMCVSyncBN
    _NORM_TYPES: tuple = (_NormBase, _MMCVSyncBN)
except ImportError:  # pragma: no cover - mmcv without compiled ops
    _NORM_TYPES = (_NormBase, )

NORM_MODES = ('eval', 'train')
OBJECTIVES = ('loss', 'predict')
_NORM_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')


def build_attack(cfg: Union[dict, BaseAttack]) -> BaseAttack:
    """Build an attack from ``dict(type=..., **args)`` (or pass it through).

    Unknown types raise a ``KeyError`` listing the registered attacks.
    """
    return ATTACKS.build(cfg)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The segmentor inside DDP/FSDP wrappers (attacks bypass the wrapper,
    so they neither synchronise nor touch the reducer)."""
    return model.module if is_model_wrapper(model) else model


def ignore_index_of(segmentor: nn.Module, default: int = 255) -> int:
    """The ignore label of the segmentor's (last) decode head."""
    head = getattr(segmentor, 'decode_head', None)
    if isinstance(head, nn.ModuleList):
        head = head[-1]
    return int(getattr(head, 'ignore_index', default))


@dataclass
class AttackProblem:
    """Everything a tensor-level attack needs for one mmseg batch.

    Attributes:
        forward (callable): ``[0, 1]`` images ``(N, C, H, W)`` -> logits at
            label resolution.
        images (Tensor): Raw images / 255, zero-padded to one size.
        labels (Tensor): ``(N, H', W')`` labels, padding = ignore_index.
        sizes (list[tuple[int, int]]): Each image's own height and width.
        ignore_index (int): Label of pixels that do not count.
    """
    forward: Callable[[Tensor], Tensor]
    images: Tensor
    labels: Tensor
    sizes: List[Tuple[int, int]]
    ignore_index: int

    def to_inputs(self, images: Tensor) -> List[Tensor]:
        """Crop each image back to its size, on the raw 0-255 scale."""
        return [
            images[i, :, :h, :w] * 255 for i, (h, w) in enumerate(self.sizes)
        ]


def _pad_stack(tensors: Sequence[Tensor],
               value: float,
               size: Optional[Sequence[int]] = None) -> Tensor:
    """Stack ``(..., h_i, w_i)`` tensors, padding right/bottom to the max
    (or to ``size``)."""
    height = max(t.shape[-2] for t in tensors) if size is None else size[0]
    width = max(t.shape[-1] for t in tensors) if size is None else size[1]
    return torch.stack([
        F.pad(
            t, (0, width - t.shape[-1], 0, height - t.shape[-2]), value=value)
        for t in tensors
    ])


def _resize_logits(logits: Tensor, size: torch.Size,
                   align_corners: bool) -> Tensor:
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(
        logits, size=size, mode='bilinear', align_corners=align_corners)


class SegmentorAttacker:
    """Attacks an mmseg segmentor on batches as the dataloader yields them.

    Args:
        norm_mode (str): ``'eval'`` or ``'train'``; how normalisation layers
            behave while adversarial examples are generated (see the
            module docstring). Defaults to ``'eval'``.
        autocast_dtype (torch.dtype, optional): Run attack forwards under
            ``torch.autocast`` with this dtype (e.g. when training with
            AMP).  Objectives, step sizes and norms stay float32.
            Defaults to None (full precision).
    """

    def __init__(self,
                 norm_mode: str = 'eval',
                 autocast_dtype: Optional[torch.dtype] = None) -> None:
        if norm_mode not in NORM_MODES:
            raise ValueError(f'norm_mode must be one of {NORM_MODES}, '
                             f'got {norm_mode!r}')
        self.norm_mode = norm_mode
        self.autocast_dtype = autocast_dtype

    # ------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------
    def attack(
        self,
        model: nn.Module,
        attack: BaseAttack,
        data_batch: dict,
        objective: str = 'loss',
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[List[Tensor], Tensor]:
        """Adversarial versions of every image of ``data_batch``.

        Args:
            model (nn.Module): A segmentor, possibly in a model wrapper.
            attack (BaseAttack): The attack to run.
            data_batch (dict): ``inputs`` (list of uint8 CHW tensors as the
                dataloader yields them) and ``data_samples``.
            objective (str): ``'loss'`` (training) or ``'predict'``.
            generator (torch.Generator, optional): For random attacks.

        Returns:
            tuple[list[Tensor], Tensor]: Float adversarial images on the
            0-255 scale (same shapes and channel order as the inputs) and
            the ``(N,)`` radius of each.
        """
        segmentor = unwrap_model(model)
        with self.attack_context(segmentor):
            problem = self.problem(segmentor, data_batch, objective)
            out = attack(problem.forward, problem.images, problem.labels,
                         problem.ignore_index, generator)
        return problem.to_inputs(out.images), out.eps

    def sweep(
        self,
        model: nn.Module,
        attack: BaseAttack,
        data_batch: dict,
        epsilons: Sequence[float],
        objective: str = 'predict',
        generator: Optional[torch.Generator] = None,
    ) -> Iterator[Tuple[float, List[Tensor], AttackOutput]]:
        """Attack one batch at several radii (sharing work where possible).

        At radius 0 the batch's own inputs are returned untouched, so the
        clean row is scored on exactly the images mmseg's test sees.

        Yields:
            tuple[float, list[Tensor], AttackOutput]: Radius, adversarial
            inputs on the 0-255 scale, and the attack's output (``eps``:
            the ``(N,)`` radius each image got; ``forwards``/``backwards``:
            its budget per image).
        """
        segmentor = unwrap_model(model)
        problem = None
        if any(eps > 0 for eps in epsilons):
            with self.attack_context(segmentor):
                problem = self.problem(segmentor, data_batch, objective)
        batch = len(data_batch['inputs'])
        results = None if problem is None else attack.sweep(
            problem.forward, problem.images, problem.labels, epsilons,
            problem.ignore_index, generator)
        for eps in epsilons:
            if eps == 0 and problem is None:
                yield eps, list(data_batch['inputs']), BaseAttack.unchanged(
                    torch.zeros(batch, 1, 1, 1))
                continue
            # Only the attack's own work runs inside the attack context;
            # the caller's evaluation between two yields runs outside it.
            with self.attack_context(segmentor):
                radius, out = next(results)
            assert radius == eps
            inputs = list(data_batch['inputs']) if eps == 0 else \
                problem.to_inputs(out.images)
            yield eps, inputs, out

    # ------------------------------------------------------------------
    # building blocks
    # ------------------------------------------------------------------
    @contextmanager
    def attack_context(self, segmentor: nn.Module) -> Iterator[None]:
        """Freeze parameters, set norm layers, enable grad (and autocast);
        restore everything afterwards, also on error."""
        # One walk over the modules (it is a fixed cost of every attack).
        params, norms = [], []
        for module in segmentor.modules():
            if isinstance(module, _NORM_TYPES):
                norms.append(module)
            params.extend(
                p for p in module.parameters(recurse=False) if p.requires_grad)
        modes = [m.training for m in norms]
        saved = []
        if self.norm_mode == 'train':
            saved = [(m, name, buf.clone()) for m in norms
                     for name in _NORM_BUFFERS
                     if (buf := getattr(m, name, None)) is not None]
        try:
            for param in params:
                param.requires_grad_(False)
            if self.norm_mode == 'eval':
                for module in norms:
                    module.eval()
            with ExitStack() as stack:
                stack.enter_context(torch.enable_grad())
                if self.autocast_dtype is not None:
                    device = _device_of(segmentor)
                    stack.enter_context(
                        torch.autocast(device.type, dtype=self.autocast_dtype))
                yield
        finally:
            for param in params:
                param.requires_grad_(True)
            for module, mode in zip(norms, modes):
                module.train(mode)
            with torch.no_grad():
                for module, name, value in saved:
                    getattr(module, name).copy_(value)

    def problem(self, segmentor: nn.Module, data_batch: dict,
                objective: str) -> AttackProblem:
        """Turn a dataloader batch into an :class:`AttackProblem`."""
        if objective not in OBJECTIVES:
            raise ValueError(f'objective must be one of {OBJECTIVES}, '
                             f'got {objective!r}')
        inputs, samples = data_batch['inputs'], data_batch['data_samples']
        if len(inputs) != len(samples) or not inputs:
            raise ValueError('data_batch needs one data sample per input, '
                             f'got {len(inputs)} inputs and {len(samples)} '
                             'samples')
        device = _device_of(segmentor)
        raw = [img.to(device).float() / 255 for img in inputs]
        sizes = [tuple(img.shape[-2:]) for img in raw]
        # Clones: the preprocessor pads labels and writes metainfo in place.
        samples = [sample.clone() for sample in samples]
        preprocess = segmentor.data_preprocessor
        ignore_index = ignore_index_of(segmentor)
        training = objective == 'loss'

        def crop(x: Tensor) -> List[Tensor]:
            return [x[i, :, :h, :w] * 255 for i, (h, w) in enumerate(sizes)]

        images = _pad_stack(raw, 0)
        with torch.no_grad():
            data = preprocess(
                dict(inputs=crop(images), data_samples=samples), training)
        samples = data['data_samples']
        for sample in samples:
            if 'gt_sem_seg' not in sample:
                raise ValueError('attacks need ground-truth labels: the data '
                                 'samples have no gt_sem_seg (add '
                                 'LoadAnnotations to the pipeline)')
        labels = _pad_stack([s.gt_sem_seg.data[0].long() for s in samples],
                            ignore_index)

        label_size = labels.shape[-2:]
        metainfo = [s.metainfo for s in samples]
        if training:
            # The loss resizes the decode-head logits to the padded labels.
            metainfo = [
                dict(m, img_shape=label_size, pad_shape=label_size)
                for m in metainfo
            ]
        align_corners = _align_corners(segmentor)

        def make_forward(index: List[int]) -> Callable[[Tensor], Tensor]:
            """The forward of the images ``index`` of the batch, with
            ``.subset`` for a smaller sub-batch (early-stopping attacks)."""
            part = [samples[i] for i in index]
            metas = [metainfo[i] for i in index]

            def crop_part(x: Tensor) -> List[Tensor]:
                return [
                    x[j, :, :sizes[i][0], :sizes[i][1]] * 255
                    for j, i in enumerate(index)
                ]

            def forward(x: Tensor) -> Tensor:
                data = preprocess(
                    dict(inputs=crop_part(x), data_samples=part), training)
                if training:
                    logits = segmentor.encode_decode(data['inputs'], metas)
                    return _resize_logits(logits, label_size, align_corners)
                # inference() may write into the metas (slide mode).
                logits = segmentor.inference(data['inputs'],
                                             [s.metainfo for s in part])
                outputs = segmentor.postprocess_result(
                    logits, [s.clone() for s in part])
                # Padded to the labels of the whole batch, whichever
                # images this sub-batch holds.
                return _pad_stack([o.seg_logits.data for o in outputs], 0.,
                                  label_size)

            forward.subset = lambda sub: make_forward(
                [index[int(j)] for j in sub])
            return forward

        forward = make_forward(list(range(len(samples))))
        return AttackProblem(forward, images, labels, list(sizes),
                             ignore_index)


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device('cpu')


def _align_corners(segmentor: nn.Module) -> bool:
    head = getattr(segmentor, 'decode_head', None)
    if isinstance(head, nn.ModuleList):
        head = head[-1]
    return bool(getattr(head, 'align_corners', False))


@contextmanager
def norm_layers_frozen(segmentor: nn.Module) -> Iterator[None]:
    """Put norm layers in eval mode (running statistics untouched) and
    restore their modes afterwards."""
    norms = [m for m in segmentor.modules() if isinstance(m, _NORM_TYPES)]
    modes = [m.training for m in norms]
    try:
        for module in norms:
            module.eval()
        yield
    finally:
        for module, mode in zip(norms, modes):
            module.train(mode)


def decode_loss(model: nn.Module, data_batch: dict) -> float:
    """Decode-head loss of a batch, without gradients or side effects.

    Norm layers use running statistics, so the value is a monitoring
    figure (clean and adversarial versions of the same samples are
    comparable), not the exact training loss.

    Args:
        model (nn.Module): A segmentor, possibly wrapped.
        data_batch (dict): ``inputs`` and ``data_samples``.

    Returns:
        float: Sum of the decode heads' loss terms.
    """
    segmentor = unwrap_model(model)
    batch = dict(
        inputs=list(data_batch['inputs']),
        data_samples=[s.clone() for s in data_batch['data_samples']])
    with torch.no_grad(), norm_layers_frozen(segmentor):
        data = segmentor.data_preprocessor(batch, True)
        losses = segmentor.loss(data['inputs'], data['data_samples'])
    return float(
        sum(value.sum() for key, value in losses.items()
            if key.startswith('decode') and 'loss' in key))
