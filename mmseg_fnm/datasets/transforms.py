"""Data transforms of mmseg_fnm."""
import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckSegMapShape(BaseTransform):
    """Raise a clear error when a label map's size differs from its image's.

    Without it, a mismatch surfaces later as a shape error deep inside a
    crop or the loss, without naming the file.  Put it right after
    ``LoadAnnotations``; it compares ``gt_seg_map`` with ``ori_shape`` (the
    image's size as loaded), so it also works after a ``Resize``.

    Required Keys:

    - gt_seg_map
    - ori_shape
    - img_path
    - seg_map_path (optional, used in the message)
    """

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results or 'ori_shape' not in results:
            raise KeyError('CheckSegMapShape needs `gt_seg_map` and '
                           '`ori_shape`: put it after LoadImageFromFile and '
                           'LoadAnnotations in the pipeline.')
        seg_shape = tuple(results['gt_seg_map'].shape[:2])
        img_shape = tuple(results['ori_shape'][:2])
        if seg_shape != img_shape:
            raise ValueError(
                f"label map {results.get('seg_map_path')} is "
                f'{seg_shape[0]}x{seg_shape[1]} but its image '
                f"{results.get('img_path')} is {img_shape[0]}x{img_shape[1]} "
                '(HxW); every label map must have its image\'s size. Fix '
                'or regenerate the data set.')
        return results


@TRANSFORMS.register_module()
class RandomGaussianBlur(BaseTransform):
    """Blur the image with a Gaussian kernel, with probability ``prob``.

    The "random blur" of the paper's augmentation, as in PSPNet's reference
    training code (hszhao/semseg ``RandomGaussianBlur``: 5x5 kernel, sigma
    from the kernel size, probability 0.5). Label maps are left alone.
    mmpretrain's ``GaussianBlur`` would do, but importing mmpretrain's
    transforms needs torchvision.

    Required Keys:

    - img

    Modified Keys:

    - img

    Args:
        prob (float): Probability of blurring. Defaults to 0.5.
        kernel_size (int): Odd kernel size. Defaults to 5.
        sigma (float): Standard deviation; 0 derives it from the kernel
            size as OpenCV does (1.1 for 5x5). Defaults to 0.
    """

    def __init__(self,
                 prob: float = 0.5,
                 kernel_size: int = 5,
                 sigma: float = 0.) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(
                f'RandomGaussianBlur: prob={prob!r} must be in [0, 1].')
        if (not isinstance(kernel_size, int) or kernel_size < 1
                or kernel_size % 2 == 0):
            raise ValueError(f'RandomGaussianBlur: kernel_size='
                             f'{kernel_size!r} must be a positive odd int.')
        if sigma < 0:
            raise ValueError(
                f'RandomGaussianBlur: sigma={sigma!r} must be >= 0.')
        self.prob = prob
        self.kernel_size = kernel_size
        self.sigma = sigma

    @cache_randomness
    def _do_blur(self) -> bool:
        return np.random.rand() < self.prob

    def transform(self, results: dict) -> dict:
        if self._do_blur():
            results['img'] = cv2.GaussianBlur(
                results['img'], (self.kernel_size, self.kernel_size),
                self.sigma)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, '
                f'kernel_size={self.kernel_size}, sigma={self.sigma})')
