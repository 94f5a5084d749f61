# demo_textures: real photographic textures (8 classes + background, one per
# source photograph in scikit-image), on Voronoi cells and occluding discs.
# Training and validation texture come from disjoint parts of every source.
# Built under data_root on first use (DemoTexturesDataset(auto_generate=True));
# or beforehand:
#   python -m mmseg_fnm.datasets.synthetic --dataset demo_textures
# Pipelines, loaders and metric as for demo_shapes.
_base_ = ['./demo_shapes.py']
dataset_type = 'DemoTexturesDataset'
data_root = 'data/demo_textures'
train_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
