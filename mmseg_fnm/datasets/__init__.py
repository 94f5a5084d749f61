"""Data sets and transforms of mmseg_fnm."""
from .demo_shapes import DemoShapesDataset
from .synthetic import check_demo_dataset, prepare_demo_dataset, render_sample
from .transforms import CheckSegMapShape, RandomGaussianBlur

__all__ = [
    'DemoShapesDataset', 'CheckSegMapShape', 'RandomGaussianBlur',
    'prepare_demo_dataset', 'check_demo_dataset', 'render_sample'
]
