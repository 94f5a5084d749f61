"""Models of mmseg_fnm (registered into ``mmseg.registry.MODELS``)."""
from .backbones import (PreActBasicBlock, PreActBottleneck, PreActResNet,
                        convert_timm_resnetv2, load_safetensors,
                        load_weights_only)

__all__ = [
    'PreActResNet', 'PreActBasicBlock', 'PreActBottleneck',
    'convert_timm_resnetv2', 'load_safetensors', 'load_weights_only'
]
