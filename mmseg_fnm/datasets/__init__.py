"""Data sets and transforms of mmseg_fnm."""
from .demo_shapes import DemoShapesDataset, DemoTexturesDataset
from .synthetic import (SHAPES, TEXTURES, GeneratedDataSpec,
                        check_demo_dataset, check_generated_dataset,
                        prepare_demo_dataset, prepare_generated_dataset,
                        render_sample)
from .textures import render_texture_sample
from .transforms import CheckSegMapShape, RandomGaussianBlur

__all__ = [
    'DemoShapesDataset', 'DemoTexturesDataset', 'CheckSegMapShape',
    'RandomGaussianBlur', 'GeneratedDataSpec', 'SHAPES', 'TEXTURES',
    'prepare_demo_dataset', 'check_demo_dataset', 'prepare_generated_dataset',
    'check_generated_dataset', 'render_sample', 'render_texture_sample'
]
