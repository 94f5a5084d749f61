"""Drawing of the ``demo_textures`` data set: real photographic textures.

Every image is a Voronoi partition, sometimes with an occluding disc, whose
regions are filled with texture cut from real photographs that ship inside
scikit-image's wheel (nothing is downloaded). Every class is one source
photograph, so the classes differ in texture and colour, as land cover
classes do, and a network must read texture to tell them apart: the regime
in which undefended networks fall to small perturbations (paper, figure 3).

Training and validation texture comes from disjoint parts of every source:
each source is cut into square blocks in a checkerboard; training cuts its
patches from the white blocks, validation from the black ones, so
validation measures generalisation, not memorised pixels. Pixels on region
borders are labelled 255 (ignore).

Sources and licences (see each function's docstring in ``skimage.data``):

=============  =======================  ==================================
class          skimage.data file        licence
=============  =======================  ==================================
background     camera.png               CC0 (photographer Lav Varshney)
brick          brick.png                CC0 (CC0Textures, Bricks25)
grass          grass.png                CC0 (CC0Textures)
gravel         gravel.png               CC0 (CC0Textures, Gravel04)
coffee         coffee.png               CC0 (photographer Rachel Michetti)
cat            chelsea.png              CC0 (photographer Stefan van der
                                        Walt)
astronaut      astronaut.png            public domain (NASA)
rocket         rocket.jpg               public domain (SpaceX)
galaxies       hubble_deep_field.jpg    public domain (NASA)
=============  =======================  ==================================
"""
import functools
import os.path as osp
from typing import Tuple

import cv2
import numpy as np

TEXTURE_CLASSES = ('background', 'brick', 'grass', 'gravel', 'coffee', 'cat',
                   'astronaut', 'rocket', 'galaxies')
TEXTURE_PALETTE = [[0, 0, 0], [180, 60, 40], [60, 180, 75], [150, 150, 150],
                   [120, 70, 20], [245, 130, 48], [240, 240, 240],
                   [0, 130, 200], [145, 30, 180]]
TEXTURE_SOURCES = ('camera.png', 'brick.png', 'grass.png', 'gravel.png',
                   'coffee.png', 'chelsea.png', 'astronaut.png', 'rocket.jpg',
                   'hubble_deep_field.jpg')
IGNORE_INDEX = 255

# Sources are resized to this short side before blocks are cut: with the
# 64-pixel demo images, bricks and gravel stones stay a few pixels large.
_SOURCE_SHORT_SIDE = 384
_BLOCK = 96  # checkerboard block side in resized source pixels


def skimage_data_dir() -> str:
    """The folder of the images in scikit-image's wheel.

    Raises:
        ImportError: scikit-image is not installed, with the fix.
    """
    try:
        import skimage
    except ImportError as error:
        raise ImportError(
            'demo_textures cuts its textures from photographs that ship '
            'with scikit-image; install it: pip install scikit-image') \
            from error
    return osp.join(osp.dirname(skimage.__file__), 'data')


@functools.lru_cache(maxsize=None)
def load_source(name: str) -> np.ndarray:
    """One source photograph as a BGR uint8 array, short side resized to
    ``_SOURCE_SHORT_SIDE``."""
    path = osp.join(skimage_data_dir(), name)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f'{path} cannot be read; reinstall scikit-image '
                      '(pip install --force-reinstall scikit-image)')
    scale = _SOURCE_SHORT_SIDE / min(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def source_blocks(shape: Tuple[int, int], split: str) -> list:
    """``(top, left)`` of the checkerboard blocks of ``split`` in a source
    of ``shape``: training the white blocks, validation the black ones."""
    parity = {'train': 0, 'val': 1}[split]
    rows, cols = shape[0] // _BLOCK, shape[1] // _BLOCK
    return [(r * _BLOCK, c * _BLOCK) for r in range(rows)
            for c in range(cols) if (r + c) % 2 == parity]


def cut_window(rng: np.random.Generator, shape: Tuple[int, int], split: str,
               scale_range: Tuple[float, float]) -> Tuple[int, int, int]:
    """``(top, left, side)`` of a square window inside one block of
    ``split`` in a source of ``shape``."""
    blocks = source_blocks(shape, split)
    top, left = blocks[rng.integers(len(blocks))]
    side = int(round(_BLOCK * rng.uniform(*scale_range)))
    side = min(max(side, 8), _BLOCK)
    return (top + int(rng.integers(_BLOCK - side + 1)),
            left + int(rng.integers(_BLOCK - side + 1)), side)


def _texture_patch(rng: np.random.Generator, source: np.ndarray, split: str,
                   size: int, scale_range: Tuple[float, float],
                   jitter: float) -> np.ndarray:
    """A ``size`` x ``size`` texture patch cut from one block of
    ``split``, at a random scale, flip, rotation and brightness."""
    y, x, side = cut_window(rng, source.shape[:2], split, scale_range)
    patch = source[y:y + side, x:x + side]
    patch = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    patch = np.rot90(patch, rng.integers(4))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    gain = rng.uniform(1 - jitter, 1 + jitter, size=3)
    return patch.astype(np.float32) * gain


def _voronoi_labels(rng: np.random.Generator, size: int,
                    num_cells: int) -> np.ndarray:
    seeds = rng.uniform(0, size, size=(num_cells, 2))
    yy, xx = np.mgrid[:size, :size] + 0.5
    dist = (yy[None] - seeds[:, 0, None, None])**2 + \
        (xx[None] - seeds[:, 1, None, None])**2
    return dist.argmin(0)


def render_texture_sample(
        rng: np.random.Generator,
        split: str,
        image_size: int = 64,
        min_cells: int = 3,
        max_cells: int = 6,
        occluder_prob: float = 0.5,
        scale_range: Tuple[float, float] = (0.5, 1.0),
        jitter: float = 0.15) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its label map.

    Args:
        rng (np.random.Generator): The sample's generator.
        split (str): 'train' or 'val': which blocks the texture comes from.
        image_size (int): Height and width. Defaults to 64.
        min_cells (int): Fewest Voronoi cells. Defaults to 3.
        max_cells (int): Most Voronoi cells. Defaults to 6.
        occluder_prob (float): Chance of an occluding disc. Defaults to 0.5.
        scale_range (tuple): Side of the cut patch as a fraction of a block
            (before resizing to the image size). Defaults to (0.5, 1.0).
        jitter (float): Per-channel gain range around 1. Defaults to 0.15.

    Returns:
        tuple: ``(image, label)``: uint8 BGR ``(H, W, 3)`` and uint8
        ``(H, W)`` with class indices and 255 on region borders.
    """
    num_classes = len(TEXTURE_CLASSES)
    num_cells = int(rng.integers(min_cells, max_cells + 1))
    regions = _voronoi_labels(rng, image_size, num_cells)
    region_class = rng.integers(num_classes, size=num_cells + 1)
    if rng.random() < occluder_prob:
        centre = rng.uniform(0.2, 0.8, size=2) * image_size
        radius = rng.uniform(0.12, 0.3) * image_size
        yy, xx = np.mgrid[:image_size, :image_size] + 0.5
        disc = (yy - centre[0])**2 + (xx - centre[1])**2 < radius**2
        regions = np.where(disc, num_cells, regions)
    image = np.zeros((image_size, image_size, 3), np.float32)
    for region in np.unique(regions):
        cls = int(region_class[region])
        patch = _texture_patch(rng, load_source(TEXTURE_SOURCES[cls]), split,
                               image_size, scale_range, jitter)
        mask = regions == region
        image[mask] = patch[mask]
    label = region_class[regions].astype(np.uint8)
    # Region borders (4-neighbours in another region) are ignored.
    border = np.zeros_like(label, dtype=bool)
    border[1:] |= regions[1:] != regions[:-1]
    border[:-1] |= regions[:-1] != regions[1:]
    border[:, 1:] |= regions[:, 1:] != regions[:, :-1]
    border[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    label[border] = IGNORE_INDEX
    return np.clip(image, 0, 255).round().astype(np.uint8), label
