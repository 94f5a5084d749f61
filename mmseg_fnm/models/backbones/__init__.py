"""Backbones of mmseg_fnm."""
from .preact_resnet import (PreActBasicBlock, PreActBottleneck, PreActResNet,
                            convert_timm_resnetv2, load_safetensors,
                            load_weights_only)

__all__ = [
    'PreActResNet', 'PreActBasicBlock', 'PreActBottleneck',
    'convert_timm_resnetv2', 'load_safetensors', 'load_weights_only'
]
