"""Pre-activation ResNet (ResNet v2) backbone.

He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016: every
residual unit computes ``x + F(x)`` with ``F = conv(relu(bn(...)))``, i.e.
normalisation and activation come *before* each convolution, and the sum
leaves a unit un-normalised.  The paper reproduced by this project uses it
(ResNet-50 v2) under PSPNet.

Module names follow timm's ``ResNetV2`` (``stem.conv``,
``stages.{i}.blocks.{j}.{norm1,conv1,norm2,conv2,norm3,conv3}``,
``stages.{i}.blocks.0.downsample.conv``, ``norm``), so ImageNet weights of
timm's ``resnetv2_18/34/50/101`` load after dropping the classifier; see
:func:`convert_timm_resnetv2`.

Stage outputs: the sum leaving a pre-activation stage is not normalised.
The network itself only ever consumes a stage's output through the next
unit's ``relu(bn(.))`` (``norm1`` of the next stage's first block; the
final ``norm`` after the last stage).  The features returned for
``out_indices`` are exactly these pre-activations, so they are normalised
by *pretrained* layers that the network uses anyway, and each one is
computed once and shared with the next stage.  This is what timm returns
for the last stage with ``norm=True``; for earlier stages timm returns the
raw sums.
"""
import json
import logging
import os
import os.path as osp
import struct
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm
from mmseg.registry import MODELS


class PreActBasicBlock(BaseModule):
    """Pre-activation basic block (two 3x3 convolutions).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first 3x3 convolution. Defaults to 1.
        dilation (int): Dilation of the second 3x3 convolution.
            Defaults to 1.
        first_dilation (int, optional): Dilation of the first 3x3
            convolution; ``dilation`` if None. Defaults to None.
        downsample (bool): Give the shortcut a strided 1x1 projection of
            the pre-activated input. Defaults to False.
        with_cp (bool): Checkpoint activations when the input requires
            grad. Defaults to False.
        conv_cfg (dict, optional): Config of convolutions. Defaults to None.
        norm_cfg (dict): Config of norm layers. Defaults to BN.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    expansion = 1

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 dilation: int = 1,
                 first_dilation: Optional[int] = None,
                 downsample: bool = False,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        first_dilation = first_dilation or dilation
        self.with_cp = with_cp
        self.add_module('norm1', build_norm_layer(norm_cfg, in_channels)[1])
        self.conv1 = build_conv_layer(
            conv_cfg,
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=first_dilation,
            dilation=first_dilation,
            bias=False)
        self.add_module('norm2', build_norm_layer(norm_cfg, out_channels)[1])
        self.conv2 = build_conv_layer(
            conv_cfg,
            out_channels,
            out_channels,
            3,
            padding=dilation,
            dilation=dilation,
            bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(conv_cfg, in_channels, out_channels,
                                      stride) if downsample else None

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(norm1(x))``, the input the convolutions see."""
        return self.relu(self.norm1(x))

    def _residual(self, x_preact: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x_preact)
        return self.conv2(self.relu(self.norm2(out)))

    def forward(self,
                x: torch.Tensor,
                x_preact: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Forward.

        Args:
            x (Tensor): Un-normalised input (the previous unit's sum).
            x_preact (Tensor, optional): ``self.preact(x)`` if the caller
                has already computed it (the backbone does so for the
                features it returns). Defaults to None.

        Returns:
            Tensor: Un-normalised output.
        """

        def _inner_forward(x, x_preact):
            if x_preact is None:
                x_preact = self.preact(x)
            # Units with a projection see only the pre-activated input.
            shortcut = x if self.downsample is None else self.downsample(
                x_preact)
            return self._residual(x_preact) + shortcut

        needs_grad = x.requires_grad or (x_preact is not None
                                         and x_preact.requires_grad)
        if self.with_cp and needs_grad:
            return cp.checkpoint(
                _inner_forward, x, x_preact, use_reentrant=False)
        return _inner_forward(x, x_preact)


class PreActBottleneck(PreActBasicBlock):
    """Pre-activation bottleneck block (1x1, 3x3, 1x1 convolutions).

    As in timm (and mmseg's ``style='pytorch'``), the stride sits on the
    3x3 convolution. Arguments are those of :class:`PreActBasicBlock`.
    """

    expansion = 4

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 dilation: int = 1,
                 first_dilation: Optional[int] = None,
                 downsample: bool = False,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        BaseModule.__init__(self, init_cfg)
        first_dilation = first_dilation or dilation
        mid_channels = out_channels // self.expansion
        self.with_cp = with_cp
        self.add_module('norm1', build_norm_layer(norm_cfg, in_channels)[1])
        self.conv1 = build_conv_layer(
            conv_cfg, in_channels, mid_channels, 1, bias=False)
        self.add_module('norm2', build_norm_layer(norm_cfg, mid_channels)[1])
        self.conv2 = build_conv_layer(
            conv_cfg,
            mid_channels,
            mid_channels,
            3,
            stride=stride,
            padding=first_dilation,
            dilation=first_dilation,
            bias=False)
        self.add_module('norm3', build_norm_layer(norm_cfg, mid_channels)[1])
        self.conv3 = build_conv_layer(
            conv_cfg, mid_channels, out_channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(conv_cfg, in_channels, out_channels,
                                      stride) if downsample else None

    def _residual(self, x_preact: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x_preact)
        out = self.conv2(self.relu(self.norm2(out)))
        return self.conv3(self.relu(self.norm3(out)))


def _projection(conv_cfg: Optional[dict], in_channels: int, out_channels: int,
                stride: int) -> nn.Sequential:
    """1x1 projection shortcut, named ``downsample.conv`` as in timm."""
    return nn.Sequential(
        OrderedDict(
            conv=build_conv_layer(
                conv_cfg,
                in_channels,
                out_channels,
                1,
                stride=stride,
                bias=False)))


class PreActStage(BaseModule):
    """A stage of pre-activation blocks (``stages.{i}.blocks.{j}``).

    Args:
        block (type): :class:`PreActBasicBlock` or :class:`PreActBottleneck`.
        num_blocks (int): Number of blocks.
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first block.
        dilation (int): Dilation of the blocks after the first.
        contract_dilation (bool): Halve the first block's dilation (when
            above 1), as mmseg's ResNet and timm do.
        **kwargs: ``with_cp``, ``conv_cfg``, ``norm_cfg`` of the blocks.
    """

    def __init__(self, block: type, num_blocks: int, in_channels: int,
                 out_channels: int, stride: int, dilation: int,
                 contract_dilation: bool, **kwargs):
        super().__init__()
        first_dilation = dilation
        if contract_dilation and dilation > 1:
            first_dilation = dilation // 2
        # timm's rule (hence its checkpoints' keys): bottleneck stages
        # always project in their first block, basic stages only where the
        # shape or the dilation changes.
        downsample = (
            issubclass(block, PreActBottleneck) or stride != 1
            or first_dilation != dilation or in_channels != out_channels)
        self.blocks = nn.Sequential(*[
            block(
                in_channels if j == 0 else out_channels,
                out_channels,
                stride=stride if j == 0 else 1,
                dilation=dilation,
                first_dilation=first_dilation if j == 0 else dilation,
                downsample=downsample and j == 0,
                **kwargs) for j in range(num_blocks)
        ])

    def forward(self,
                x: torch.Tensor,
                x_preact: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the blocks; ``x_preact`` feeds the first one (see there)."""
        for j, blk in enumerate(self.blocks):
            x = blk(x, x_preact if j == 0 else None)
        return x


@MODELS.register_module()
class PreActResNet(BaseModule):
    """Pre-activation ResNet (v2) backbone for mmseg.

    Layout and parameter names follow timm's ``resnetv2_{18,34,50,101}``
    (7x7 stem without norm, stride on the 3x3 convolution, projection on
    the pre-activated input, final ``norm``), so their ImageNet weights
    load through ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
    ``strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)`` gives output stride
    8, as in mmseg's ``*-d8`` configs.

    Each returned feature ``i`` is the pre-activation ``relu(bn(x_i))`` of
    stage ``i``'s output ``x_i``, by the batch norm the network applies to
    it anyway: the next stage's first ``norm1``, or the final ``norm``
    after the last stage (see the module docstring).

    Args:
        depth (int): 18, 34, 50 or 101.
        in_channels (int): Input channels. Defaults to 3.
        stem_channels (int): Stem output channels. Defaults to 64.
        strides (Sequence[int]): Stride of each stage's first block.
            Defaults to (1, 2, 2, 2).
        dilations (Sequence[int]): Dilation of each stage.
            Defaults to (1, 1, 1, 1).
        contract_dilation (bool): Halve the dilation of each stage's first
            block when above 1, as mmseg's d8 configs and (for dilations up
            to 4) timm do. Defaults to True.
        out_indices (Sequence[int]): Stages whose features are returned.
            Defaults to (0, 1, 2, 3).
        frozen_stages (int): Freeze the stem (>= 0) and stages
            ``0 .. frozen_stages - 1`` (the final ``norm`` too at 4);
            -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep batch norms in eval mode while training.
            Defaults to False.
        with_cp (bool): Checkpoint each block's activations when its input
            requires grad (saves memory, costs a second forward). As with
            mmseg's ResNet, batch norms in train mode update their running
            statistics again when a block is recomputed. Defaults to False.
        conv_cfg (dict, optional): Config of convolutions.
        norm_cfg (dict): Config of norm layers. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialization config;
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL,
            prefix=None)`` loads a timm ``resnetv2_*`` ``.pth``/``.bin``
            or ``.safetensors`` file (or a checkpoint of this class) with
            ``torch.load(weights_only=True)``. Defaults to Kaiming/constant
            initialisation.
    """

    arch_settings = {
        18: (PreActBasicBlock, (2, 2, 2, 2)),
        34: (PreActBasicBlock, (3, 4, 6, 3)),
        50: (PreActBottleneck, (3, 4, 6, 3)),
        101: (PreActBottleneck, (3, 4, 23, 3)),
    }

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 contract_dilation: bool = True,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 init_cfg: Optional[Union[dict, list]] = None):
        if depth not in self.arch_settings:
            raise KeyError(f'PreActResNet: invalid depth={depth!r}; choose '
                           f'one of {sorted(self.arch_settings)}.')
        num_stages = 4
        if len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(
                f'PreActResNet: strides={tuple(strides)} and '
                f'dilations={tuple(dilations)} need one entry per stage '
                f'({num_stages}).')
        if not out_indices or any(
                i not in range(num_stages) for i in out_indices):
            raise ValueError(
                f'PreActResNet: out_indices={tuple(out_indices)} must be a '
                f'non-empty subset of 0..{num_stages - 1}.')
        if frozen_stages not in range(-1, num_stages + 1):
            raise ValueError(
                f'PreActResNet: frozen_stages={frozen_stages} must be in '
                f'-1..{num_stages}.')
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(
                    type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg)
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        block, stage_blocks = self.arch_settings[depth]
        # Pre-activation: the stem has no norm; the first block's norm1
        # normalises the pooled stem output.
        self.stem = nn.Sequential(
            OrderedDict(
                conv=build_conv_layer(
                    conv_cfg,
                    in_channels,
                    stem_channels,
                    7,
                    stride=2,
                    padding=3,
                    bias=False),
                pool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
        self.stages = nn.ModuleList()
        channels = stem_channels
        base = 64
        for i, num_blocks in enumerate(stage_blocks):
            out_channels = base * 2**i * block.expansion
            self.stages.append(
                PreActStage(
                    block,
                    num_blocks,
                    channels,
                    out_channels,
                    stride=strides[i],
                    dilation=dilations[i],
                    contract_dilation=contract_dilation,
                    with_cp=with_cp,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg))
            channels = out_channels
        self.add_module('norm', build_norm_layer(norm_cfg, channels)[1])
        self.relu = nn.ReLU(inplace=True)
        self.feat_channels = tuple(base * 2**i * block.expansion
                                   for i in range(num_stages))
        self._freeze_stages()

    def _out_norm(self, i: int) -> nn.Module:
        """The norm that pre-activates stage ``i``'s output."""
        if i == len(self.stages) - 1:
            return self.norm
        return self.stages[i + 1].blocks[0].norm1

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the pre-activated features of ``out_indices``."""
        x = self.stem(x)
        outs = []
        x_preact = None
        for i, stage in enumerate(self.stages):
            x = stage(x, x_preact)
            x_preact = None
            if i in self.out_indices:
                x_preact = self.relu(self._out_norm(i)(x))
                outs.append(x_preact)
            if i == max(self.out_indices):
                break
        return tuple(outs)

    def _freeze_stages(self):
        """Freeze parameters and norm statistics of the first stages."""
        if self.frozen_stages < 0:
            return
        modules = [self.stem] + list(self.stages[:self.frozen_stages])
        if self.frozen_stages == len(self.stages):
            modules.append(self.norm)
        for m in modules:
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        """Switch mode, keeping frozen stages and (optionally) norms in
        eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self):
        """Initialise, loading pretrained weights for a ``Pretrained``
        ``init_cfg`` (timm naming converted, ``weights_only`` loading)."""
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        if 'checkpoint' not in cfg:
            raise KeyError('PreActResNet: init_cfg of type Pretrained needs '
                           "'checkpoint' (a path or URL of timm resnetv2 "
                           'weights).')
        state_dict = load_weights_only(cfg['checkpoint'])
        state_dict = convert_timm_resnetv2(
            state_dict, prefix=cfg.get('prefix'))
        load_converted_state_dict(self, state_dict, cfg['checkpoint'])
        self._is_init = True


# --------------------------------------------------------------- weights --

# safetensors dtype names (https://github.com/huggingface/safetensors).
_SAFETENSORS_DTYPES = {
    'F64': torch.float64,
    'F32': torch.float32,
    'F16': torch.float16,
    'BF16': torch.bfloat16,
    'I64': torch.int64,
    'I32': torch.int32,
    'I16': torch.int16,
    'I8': torch.int8,
    'U8': torch.uint8,
    'BOOL': torch.bool,
}


def load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into a dict of CPU tensors.

    The format is an 8-byte little-endian header length, a JSON header of
    ``{name: {dtype, shape, data_offsets}}`` and the raw little-endian
    tensor bytes; parsing it needs no pickle and no extra dependency.

    Args:
        path (str): File path.

    Returns:
        dict[str, Tensor]: The tensors.
    """
    with open(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f'{path} is too short to be a safetensors file.')
    (header_len, ) = struct.unpack('<Q', raw[:8])
    try:
        header = json.loads(raw[8:8 + header_len])
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f'{path}: unreadable safetensors header '
                         f'({e}).') from e
    data = memoryview(raw)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        dtype = _SAFETENSORS_DTYPES.get(info['dtype'])
        if dtype is None:
            raise ValueError(f'{path}: tensor {name!r} has unsupported '
                             f"dtype {info['dtype']}.")
        begin, end = info['data_offsets']
        buf = data[begin:end]
        if len(buf):
            t = torch.frombuffer(bytearray(buf), dtype=dtype)
        else:
            t = torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info['shape'])
    return tensors


def load_weights_only(checkpoint: str) -> Dict[str, torch.Tensor]:
    """Load a state dict without running pickled code.

    ``.safetensors`` files are parsed directly; anything else goes through
    ``torch.load(..., weights_only=True)``.  ``http(s)://`` URLs are
    downloaded once into ``$TORCH_HOME/hub/checkpoints`` (torch.hub's
    cache).

    Args:
        checkpoint (str): Local path or URL.

    Returns:
        dict: The loaded object (a state dict, possibly wrapped in
        ``state_dict``/``model``).
    """
    if checkpoint.startswith(('http://', 'https://')):
        name = osp.basename(urlparse(checkpoint).path)
        cache_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
        os.makedirs(cache_dir, exist_ok=True)
        local = osp.join(cache_dir, name)
        if not osp.exists(local):
            print_log(f'Downloading {checkpoint} to {local}', logger='current')
            torch.hub.download_url_to_file(checkpoint, local)
        checkpoint = local
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(
            f'Pretrained checkpoint {checkpoint!r} not found: give a local '
            'path or an http(s) URL in init_cfg.checkpoint.')
    if checkpoint.endswith('.safetensors'):
        return load_safetensors(checkpoint)
    return torch.load(checkpoint, map_location='cpu', weights_only=True)


def convert_timm_resnetv2(state_dict: dict,
                          prefix: Optional[str] = None
                          ) -> 'OrderedDict[str, torch.Tensor]':
    """Turn a timm ``resnetv2_*`` state dict into :class:`PreActResNet`'s.

    Parameter names are shared (see the module docstring), so the
    conversion unwraps ``state_dict``/``model`` containers, strips a
    ``module.`` (DDP) prefix or the given ``prefix`` (e.g. ``'backbone.'``
    for a segmentor checkpoint) and drops timm's classifier ``head.*``.
    BiT checkpoints (``resnetv2_*_bit``: GroupNorm and weight-standardised
    convolutions) are refused: they do not fit a BatchNorm network.

    Args:
        state_dict (dict): Loaded checkpoint.
        prefix (str, optional): Keep only keys under this prefix, without
            it. Defaults to None.

    Returns:
        OrderedDict[str, Tensor]: Keys of :class:`PreActResNet`.
    """
    for wrapper in ('state_dict', 'model'):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    if any(k.startswith('resnet/') for k in state_dict):
        raise ValueError(
            'This looks like an original BiT .npz checkpoint (keys '
            "'resnet/...'); BiT uses GroupNorm and weight standardisation, "
            "which PreActResNet's BatchNorm layout cannot load. Use timm's "
            'resnetv2_50 (BatchNorm) ImageNet weights instead.')
    out = OrderedDict()
    for key, value in state_dict.items():
        if prefix:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
        if key.startswith('module.'):
            key = key[len('module.'):]
        if key.startswith('head.'):
            continue
        out[key] = value
    norm_keys = [k for k in out if k.startswith('norm.')]
    if norm_keys and 'norm.running_mean' not in out:
        raise ValueError(
            'The checkpoint has norm layers without running statistics: '
            'probably a BiT (GroupNorm) resnetv2 checkpoint. PreActResNet '
            "uses BatchNorm: use timm's resnetv2_50 (a1h_in1k) weights.")
    return out


def load_converted_state_dict(module: nn.Module, state_dict: dict,
                              source: str) -> None:
    """Load converted weights; missing weights are an error.

    A silently random backbone would invalidate a run, so every parameter
    and running statistic must come from the checkpoint
    (``num_batches_tracked`` may be absent). Keys the module does not have
    are reported and ignored.

    Args:
        module (nn.Module): The backbone.
        state_dict (dict): Converted state dict.
        source (str): Checkpoint name for messages.
    """
    own = module.state_dict()
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items() if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(
            f'{source}: shapes differ from PreActResNet (wrong depth or a '
            'non-timm layout?):\n  ' + '\n  '.join(mismatched[:10]))
    result = module.load_state_dict(state_dict, strict=False)
    missing = [
        k for k in result.missing_keys if not k.endswith('num_batches_tracked')
    ]
    if missing:
        raise KeyError(
            f'{source} lacks {len(missing)} weights of PreActResNet, e.g. '
            f'{missing[:5]}; expected a timm resnetv2_{{18,34,50,101}} '
            'checkpoint of the configured depth (set init_cfg.prefix for '
            'a checkpoint whose keys carry a prefix).')
    if result.unexpected_keys:
        print_log(
            f'{source}: ignored {len(result.unexpected_keys)} keys that '
            f'PreActResNet does not have, e.g. '
            f'{result.unexpected_keys[:5]}',
            logger='current',
            level=logging.WARNING)
    print_log(
        f'PreActResNet: loaded {len(state_dict)} tensors from {source}',
        logger='current')
