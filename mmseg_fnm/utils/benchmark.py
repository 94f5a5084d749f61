"""Timing and memory measurement for ``tools/benchmark.py``.

Times are seconds of work that has finished on the device: on a GPU,
CUDA events bracketed by synchronisation; on a CPU, ``time.perf_counter``
or, on a shared machine, the process's CPU time (see :class:`Clock`).
Peak memory is what tensors occupy, not what the process holds: on a GPU
``torch.cuda.max_memory_allocated``; on a CPU the allocations that
torch's profiler reports (the resident set size is useless here: the
allocator keeps freed memory, so it only grows).
"""
import os
import platform
import random
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmseg.datasets.transforms import PackSegInputs
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmseg_fnm.attacks import BaseAttack
from mmseg_fnm.attacks.base import AttackOutput, ForwardFn


def is_cuda(device: torch.device) -> bool:
    return torch.device(device).type == 'cuda'


class Clock:
    """Times work on a device, the device's queued work included.

    On a GPU: wall time, with synchronisation (and CUDA events in
    :meth:`time`).  On a CPU: wall time (``time.perf_counter``) or, with
    ``cpu_time=True``, the CPU time of this process
    (``time.process_time``), which other processes on a shared machine
    hardly disturb; with one torch thread it is the compute time.  CPU
    time does not count waiting, e.g. for dataloader workers.

    Args:
        device (torch.device | str): The device whose work is timed.
        cpu_time (bool): Count CPU time instead of wall time (CPU only).
    """

    def __init__(self, device, cpu_time: bool = False) -> None:
        self.device = torch.device(device)
        if cpu_time and is_cuda(self.device):
            raise ValueError('cpu_time=True times CPU work; GPU work is '
                             'timed with CUDA events (cpu_time=False)')
        self.cpu_time = cpu_time
        self._timer = time.process_time if cpu_time else time.perf_counter

    @property
    def kind(self) -> str:
        """What the clock measures, in words."""
        if is_cuda(self.device):
            return 'CUDA events with synchronisation'
        return 'time.process_time (CPU time of the process)' \
            if self.cpu_time else 'time.perf_counter (wall time)'

    def now(self) -> float:
        """Current time in seconds, after the device has caught up."""
        if is_cuda(self.device):
            torch.cuda.synchronize(self.device)
        return self._timer()

    def time(self, fn: Callable[[], object]) -> float:
        """Seconds that ``fn()`` takes, its device work included.

        On a GPU, CUDA events recorded around the call, with
        synchronisation before (so that earlier work is not counted) and
        after.
        """
        if not is_cuda(self.device):
            start = self._timer()
            fn()
            return self._timer() - start
        torch.cuda.synchronize(self.device)
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize(self.device)
        return begin.elapsed_time(end) / 1000


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen = {}
    for tensor in tensors:
        if isinstance(tensor, Tensor) and tensor.device.type == 'cpu':
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def training_state_bytes(model: nn.Module,
                         optimizer: Optional[torch.optim.Optimizer]) -> int:
    """CPU bytes of parameters, buffers, gradients and optimizer state."""
    tensors: List[Tensor] = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
    return tensor_bytes(tensors)


def _cpu_allocation_peak(fn: Callable[[], object]) -> int:
    """Largest amount of CPU memory allocated by ``fn`` and alive at once.

    torch's profiler reports every allocation with the running total of
    the memory allocated since profiling began (memory allocated earlier
    and freed meanwhile does not count).
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) \
            as prof:
        fn()
    peak = 0
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and \
                node.extra_fields.device.type == 'cpu':
            peak = max(peak, node.extra_fields.total_allocated)
    return peak


def peak_memory(fn: Callable[[], object], device, model: nn.Module,
                optimizer: Optional[torch.optim.Optimizer]) -> dict:
    """Peak tensor memory while ``fn()`` runs.

    Returns:
        dict: ``baseline`` (bytes alive before the call), ``peak`` (largest
        total during the call, baseline included) and ``method``.  On a CPU
        the baseline is the training state (parameters, buffers,
        gradients, optimizer state); ``peak`` is None with the reason in
        ``method`` where the profiler gives no allocation events.
    """
    device = torch.device(device)
    if is_cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return dict(
            baseline=baseline,
            peak=torch.cuda.max_memory_allocated(device),
            method='torch.cuda.max_memory_allocated')
    baseline = training_state_bytes(model, optimizer)
    try:
        extra = _cpu_allocation_peak(fn)
    except (ImportError, AttributeError, RuntimeError) as error:
        return dict(
            baseline=baseline,
            peak=None,
            method=f'n/a (torch profiler: {error})')
    return dict(
        baseline=baseline,
        peak=baseline + extra,
        method='training state + peak of torch.profiler allocations')


def summarise(values: Sequence[float]) -> dict:
    """Median, quartiles, mean, extremes and count of ``values``."""
    values = sorted(values)
    if not values:
        return dict(n=0, median=None)
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else \
        [values[0]] * 3
    return dict(
        n=len(values),
        median=statistics.median(values),
        p25=quartiles[0],
        p75=quartiles[2],
        mean=statistics.fmean(values),
        min=values[0],
        max=values[-1])


def run_interleaved(tasks: Dict[str, Callable[[int], float]],
                    rounds: int,
                    warmup: int,
                    seed: int = 0,
                    progress: Optional[Callable[[str], None]] = None
                    ) -> Dict[str, List[float]]:
    """Run every task once per round, in a new random order each round.

    Drift of the machine (other processes, clock, temperature) then hits
    all tasks alike.  ``task(round_index)`` returns its own measurement.

    Args:
        tasks (dict[str, callable]): Named tasks.
        rounds (int): Recorded rounds.
        warmup (int): Rounds run first and not recorded.
        seed (int): Seed of the orders.
        progress (callable, optional): Called with a line per round.

    Returns:
        dict[str, list[float]]: The recorded measurements of each task.
    """
    rng = random.Random(seed)
    names = list(tasks)
    results: Dict[str, List[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            value = tasks[name](index)
            if index >= warmup:
                results[name].append(value)
        if progress is not None:
            stage = 'warm-up' if index < warmup else 'round'
            number = index + 1 if index < warmup else index - warmup + 1
            total = warmup if index < warmup else rounds
            progress(f'{stage} {number}/{total}')
    return results


@contextmanager
def threads(num: Optional[int]) -> Iterator[None]:
    """Run torch on ``num`` threads (None: leave as it is)."""
    before = torch.get_num_threads()
    if num is not None:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_info(device) -> dict:
    """Where the benchmark ran."""
    info = dict(
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        device=str(device),
        gpu=None,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version()
        if torch.backends.cudnn.is_available() else None)
    if hasattr(os, 'getloadavg'):
        info['load_average'] = list(os.getloadavg())
    if is_cuda(torch.device(device)):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    return info


def package_versions() -> dict:
    """Versions of the stack."""
    import mmengine
    import mmseg

    import mmseg_fnm
    versions = dict(
        torch=torch.__version__,
        mmengine=mmengine.__version__,
        mmseg=mmseg.__version__,
        mmseg_fnm=mmseg_fnm.__version__)
    try:
        import mmcv
        versions['mmcv'] = mmcv.__version__
    except ImportError:  # pragma: no cover - mmseg needs mmcv
        versions['mmcv'] = None
    return versions


class TimedAttack(BaseAttack):
    """Wraps an attack and times its model forwards and input backwards.

    The wrapped attack runs unchanged; only the ``forward`` it is given is
    wrapped: the time of each call is added to :attr:`forward_s`, and a
    hook on the input fires when its gradient is ready, so that
    :attr:`backward_s` accumulates the time from the end of a forward to
    the end of its backward (objective included).

    Args:
        attack (BaseAttack): The attack to time.
        clock (Clock): Clock that waits for the device.
    """

    def __init__(self, attack: BaseAttack, clock: Clock) -> None:
        self.attack = attack
        self.clock = clock
        self.has_radius = attack.has_radius
        self.sweepable = attack.sweepable
        self.reset()

    def reset(self) -> None:
        """Zero the accumulated times."""
        self.forward_s = 0.
        self.backward_s = 0.
        self.forwards = 0
        self._forward_end = None

    @property
    def max_radius(self) -> Optional[float]:
        return self.attack.max_radius

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:

        def timed_forward(x: Tensor) -> Tensor:
            start = self.clock.now()
            if x.requires_grad:
                x.register_hook(self._input_grad_ready)
            logits = forward(x)
            self._forward_end = self.clock.now()
            self.forward_s += self._forward_end - start
            self.forwards += 1
            return logits

        return self.attack.perturb(timed_forward, images, labels, ignore_index,
                                   generator)

    def _input_grad_ready(self, grad: Tensor) -> None:
        self.backward_s += self.clock.now() - self._forward_end

    def __repr__(self) -> str:
        return f'TimedAttack({self.attack!r})'


class SyntheticSegDataset(Dataset):
    """Random images and label maps of one size, packed by mmseg's
    ``PackSegInputs`` (for timing where the real data are absent).

    Args:
        num (int): Number of samples.
        size (tuple[int, int]): Height and width.
        num_classes (int): Labels are drawn from ``range(num_classes)``;
            5% of the pixels get the ignore label 255.
        seed (int): Seed of the content.
    """

    def __init__(self,
                 num: int,
                 size: Sequence[int],
                 num_classes: int,
                 seed: int = 0) -> None:
        self.num = num
        self.size = tuple(int(s) for s in size)
        self.num_classes = num_classes
        self.seed = seed
        self.metainfo = dict(
            classes=tuple(f'class_{i}' for i in range(num_classes)))
        self.pack = PackSegInputs()

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        height, width = self.size
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        label = rng.integers(0, self.num_classes, (height, width))
        label[rng.random((height, width)) < 0.05] = 255
        return self.pack(
            dict(
                img=image,
                gt_seg_map=label.astype(np.uint8),
                img_path=f'synthetic_{index}.png',
                seg_map_path=f'synthetic_{index}_label.png',
                ori_shape=self.size,
                img_shape=self.size,
                pad_shape=self.size,
                scale_factor=(1., 1.),
                flip=False,
                flip_direction=None,
                reduce_zero_label=False))


def markdown_table(header: Sequence[str],
                   rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; None prints as ``n/a``."""

    def cell(value) -> str:
        return 'n/a' if value is None else str(value)

    lines = [
        '| ' + ' | '.join(header) + ' |',
        '|' + '|'.join('---' for _ in header) + '|'
    ]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


__all__ = [
    'Clock', 'tensor_bytes', 'training_state_bytes', 'peak_memory',
    'summarise', 'run_interleaved', 'threads', 'machine_info',
    'package_versions', 'markdown_table', 'is_cuda', 'TimedAttack',
    'SyntheticSegDataset'
]
