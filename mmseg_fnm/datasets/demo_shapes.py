"""The generated demo data sets: ``demo_shapes`` (synthetic shapes that
need shape to solve) and ``demo_textures`` (real photographic textures).

See :mod:`mmseg_fnm.datasets.synthetic` for how the data are made.
"""
import os
import os.path as osp
import struct
from typing import List, Optional, Tuple

import cv2
from mmengine.dist import all_gather_object, get_dist_info
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .synthetic import (CLASSES, MANIFEST_NAME, PALETTE, SHAPES, TEXTURES,
                        GeneratedDataSpec, check_generated_dataset,
                        prepare_generated_dataset)
from .textures import TEXTURE_CLASSES, TEXTURE_PALETTE

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _png_size(path: str) -> Tuple[int, int]:
    """``(height, width)`` from a PNG file's header, without decoding it.

    Raises:
        OSError: The file cannot be read or is not a PNG.
    """
    with open(path, 'rb') as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b'IHDR':
        raise OSError(f'{path} is not a readable PNG file (corrupt, '
                      'truncated or another format)')
    width, height = struct.unpack('>II', head[16:24])
    return height, width


def _image_size(path: str, decode: bool) -> Tuple[int, int]:
    """``(height, width)`` of an image file, decoding it if ``decode``."""
    if not decode and path.endswith('.png'):
        return _png_size(path)
    array = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise OSError(f'{path} cannot be decoded (corrupt, truncated or '
                      'not an image)')
    return array.shape[:2]


@DATASETS.register_module()
class DemoShapesDataset(BaseSegDataset):
    """Synthetic shapes (background, disc, square, triangle, ring, cross).

    Every object class draws its colours and textures from one
    distribution (saturated colours over a greyish background), so telling
    the object classes apart takes shape.  Label 255 marks mixed edge pixels
    and unlabelled clutter.

    With ``auto_generate=True`` a missing, incomplete or corrupt data set
    under ``data_root`` is (re)built on first use with
    :func:`~mmseg_fnm.datasets.synthetic.prepare_demo_dataset`; in a
    distributed run the local rank 0 of every node builds it while the other
    ranks wait, and every rank raises if building failed anywhere.

    Args:
        auto_generate (bool): Build the data set if it is missing or not
            intact. Defaults to True.
        gen_cfg (dict, optional): Keyword arguments of
            ``prepare_demo_dataset`` (``num_train``, ``num_val``,
            ``image_size``, ``seed``, ...); share one dict between the
            splits, or they rebuild each other's data. Defaults to None
            (the generator's defaults).
        check_files (bool): At load time, check that every image and label
            map exists and is readable, and that both have the same size,
            so that bad files are named at build time.  Files whose bytes
            the manifest's checksums vouch for only have their PNG headers
            read; others (a data set without manifest) are decoded.
            Defaults to True.
        **kwargs: Arguments of :class:`mmseg.datasets.BaseSegDataset`.
    """
    METAINFO = dict(classes=CLASSES, palette=PALETTE)
    #: Which generated data set this class reads and builds.
    SPEC: GeneratedDataSpec = SHAPES

    def __init__(self,
                 auto_generate: bool = True,
                 gen_cfg: Optional[dict] = None,
                 check_files: bool = True,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        self.auto_generate = auto_generate
        self.gen_cfg = dict(gen_cfg or {})
        self.check_files = check_files
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """Make sure the data exist, then list and check them."""
        verified = self._ensure_data()
        data_list = super().load_data_list()
        if not data_list:
            raise ValueError(
                f'{type(self).__name__} found no samples in {self.ann_file} '
                f"/ {self.data_prefix.get('img_path')}. Rebuild the data set "
                f'with `{self.SPEC.command(self.data_root)} --force`.')
        if self.check_files:
            for info in data_list:
                self._check_sample(info, decode=not verified)
        return data_list

    def _ensure_data(self) -> bool:
        """Build or check the data; whether checksums vouch for them."""
        root = self.data_root
        if not root:
            raise ValueError(f'{type(self).__name__} needs a data_root.')
        if not self.auto_generate:
            if not osp.isdir(root):
                raise FileNotFoundError(
                    f'{self.SPEC.name} data root {root!r} (absolute: '
                    f'{osp.abspath(root)}) does not exist. Build it with '
                    f'`{self.SPEC.command(root)}` or set '
                    'auto_generate=True in the dataset config.')
            if osp.isfile(osp.join(root, MANIFEST_NAME)):
                problem = check_generated_dataset(self.SPEC, root)
                if problem is not None:
                    raise OSError(
                        f'{self.SPEC.name} data set in {root} is not intact: '
                        f'{problem}. Rebuild it with '
                        f'`{self.SPEC.command(root)} --force` or set '
                        'auto_generate=True in the dataset config.')
                return True
            return False
        rank, world_size = get_dist_info()
        # Nodes may not share a file system, so one builder per node; the
        # builder's atomic rename makes concurrent builders safe.
        builder = int(os.environ.get('LOCAL_RANK', rank)) == 0
        error = None
        if builder:
            try:
                prepare_generated_dataset(self.SPEC, root, **self.gen_cfg)
            except Exception as e:
                if world_size == 1:
                    raise
                error = e
        if world_size > 1:
            # a collective in place of a barrier: no rank hangs when the
            # builder fails, every rank learns why
            errors = all_gather_object(
                None if error is None else f'{type(error).__name__}: {error}')
            if error is not None:
                raise error
            failed = [(r, msg) for r, msg in enumerate(errors) if msg]
            if failed:
                raise RuntimeError(
                    f'rank {failed[0][0]} failed to build the '
                    f'{self.SPEC.name} data set in {root}: {failed[0][1]}')
            if not builder:
                problem = check_generated_dataset(self.SPEC, root,
                                                  self.gen_cfg)
                if problem is not None:
                    raise RuntimeError(
                        f'{self.SPEC.name} data set in {root} is not usable '
                        f'after building: {problem}')
        return True

    def _check_sample(self, info: dict, decode: bool) -> None:
        img_path, seg_path = info['img_path'], info.get('seg_map_path')
        hint = (f'Rebuild the data set with '
                f'`{self.SPEC.command(self.data_root)} --force`.')
        sizes = []
        for path in (img_path, seg_path):
            if path is None:
                continue
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'{path} (listed in {self.ann_file}) does not exist. '
                    + hint)
            try:
                sizes.append(_image_size(path, decode))
            except OSError as e:
                raise OSError(f'{e}. {hint}') from e
        if len(sizes) == 2 and sizes[0] != sizes[1]:
            raise ValueError(
                f'label map {seg_path} is {sizes[1][0]}x{sizes[1][1]} but '
                f'its image {img_path} is {sizes[0][0]}x{sizes[0][1]} '
                '(HxW); every label map must have its image\'s size. '
                + hint)


@DATASETS.register_module()
class DemoTexturesDataset(DemoShapesDataset):
    """Real photographic textures (background and eight texture classes,
    one per source photograph of scikit-image), on Voronoi cells and
    occluding discs; label 255 on region borders. Training and validation
    texture come from disjoint parts of every photograph.

    Built on first use like :class:`DemoShapesDataset` (same arguments;
    ``gen_cfg`` takes :data:`~mmseg_fnm.datasets.synthetic.TEXTURES`'s
    parameters). See :mod:`mmseg_fnm.datasets.textures`.
    """
    METAINFO = dict(classes=TEXTURE_CLASSES, palette=TEXTURE_PALETTE)
    SPEC = TEXTURES
