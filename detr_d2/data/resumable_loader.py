"""The training stream as a function of (seed, position), so --resume continues it exactly
(Detectron2's sampler restarts, and its augmentations draw from each worker's global RNGs).

* position p counts images over all processes; epoch p // N is a permutation seeded by
  (seed, epoch), grouped by orientation with aspect-ratio grouping (:func:`epoch_order`);
* batch t from start P holds, on rank r of W, positions P + t * B + r + k * W (k < B / W): the
  same B images at any process count;
* image p is mapped with NumPy's and Python's global RNGs seeded from (seed, p), then restored;
* batch t is built by worker t mod num_workers: the stream does not depend on the worker count.

:class:`ResumableStream` checkpoints (seed, P) in images (so a checkpoint resumes at another
process count) and reseeds torch before every step. Not covered: CheckedMapper's replacement of
unreadable images draws from each worker's own pool."""

import itertools
import logging
import random
from contextlib import contextmanager
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

logger = logging.getLogger(__name__)


def mix_seed(*values: int) -> int:
    """A 32-bit seed that depends on every one of ``values`` (non-negative ints)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


@contextmanager
def seeded_global_rngs(seed: int):
    """Run a block with NumPy's and Python's global RNGs seeded by ``seed``; restore them after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def epoch_order(num_images: int, seed: int, epoch: int, group_size=0, wide=None) -> List[int]:
    """The dataset indices of one epoch: a permutation seeded by (seed, epoch). With
    ``group_size`` B > 0 and ``wide`` (per image: width >= height), images fill one bucket per
    orientation and each full bucket of B is emitted; the leftovers close the epoch (batches line
    up when N is a multiple of B)."""
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
    perm = torch.randperm(num_images, generator=generator).tolist()
    if group_size <= 0 or wide is None:
        return perm
    order, buckets = [], {True: [], False: []}
    for i in perm:
        bucket = buckets[wide[i]]
        bucket.append(i)
        if len(bucket) == group_size:
            order += bucket
            bucket.clear()
    return order + buckets[True] + buckets[False]


class _BatchStream(IterableDataset):
    """The batches of ``loader`` (a :class:`ResumableTrainLoader`) on its rank from its position."""

    def __init__(self, loader):
        self.loader, self.start = loader, loader.position
        self._epoch, self._order = None, None

    def _index(self, position: int) -> int:
        loader, n = self.loader, len(self.loader.dicts)
        epoch, j = divmod(position, n)
        if epoch != self._epoch:
            self._order = epoch_order(n, loader.seed, epoch, loader.total_batch_size, loader.wide)
            self._epoch = epoch
        return self._order[j]

    def __iter__(self):
        info, loader = get_worker_info(), self.loader
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for t in itertools.count(worker, num_workers):
            first = self.start + t * loader.total_batch_size  # this step's first image, all ranks
            batch = []
            for p in range(first + loader.rank, first + loader.total_batch_size, loader.world_size):
                with seeded_global_rngs(mix_seed(loader.seed, p)):
                    batch.append(loader.mapper(loader.dicts[self._index(p)]))
            yield batch


class ResumableTrainLoader:
    """An endless iterator of this rank's training batches (lists of mapped dicts) whose seed
    and position are its state; workers start at the first ``next()`` and after
    ``load_state_dict``."""

    def __init__(
        self, dicts: List[Dict], mapper, *, total_batch_size: int, seed: int, num_workers=0,
        aspect_ratio_grouping=True, rank: Optional[int] = None, world_size: Optional[int] = None,
    ):  # fmt: skip
        """total_batch_size: images per step over all processes; seed: the same on every
        process; rank, world_size: default from the process group."""
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        if total_batch_size % self.world_size:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be divisible by the number of "
                f"processes ({self.world_size})"
            )
        self.wide = None
        if aspect_ratio_grouping:
            self.wide = [d.get("width", 1) >= d.get("height", 1) for d in dicts]
        self.dicts = DatasetFromList(dicts, copy=False)
        self.mapper, self.total_batch_size, self.num_workers = mapper, total_batch_size, num_workers
        self.seed = seed
        self.position = 0  # images, over all processes, handed out before the next batch
        self._iter = None

    def __iter__(self):
        return self

    def __next__(self) -> List[Dict]:
        if self._iter is None:
            # its own generator: starting the iterator draws worker seeds, which from torch's
            # global RNG would shift the dropout draws of the step that (re)starts the stream
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.position))
            loader = DataLoader(
                _BatchStream(self), batch_size=None, num_workers=self.num_workers,
                collate_fn=trivial_batch_collator, generator=generator,
            )  # fmt: skip
            self._iter = iter(loader)
        batch = next(self._iter)
        self.position += self.total_batch_size
        return batch

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed, "position": self.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed, self.position = int(state["seed"]), int(state["position"])
        self._iter = None  # its workers end; the next batch starts a stream at the position


class ResumableStream(HookBase):
    """Checkpoints the loader's (seed, position) with the trainer and seeds torch before every
    step from (seed, iteration, rank): dropout after --resume is that of an uninterrupted run."""

    def __init__(self, loader: ResumableTrainLoader):
        self.loader, self._loaded = loader, False

    def before_train(self):
        if not self._loaded and self.trainer.start_iter > 0:  # a checkpoint of before this hook
            position = self.trainer.start_iter * self.loader.total_batch_size
            self.loader.load_state_dict({"seed": self.loader.seed, "position": position})
            logger.warning("The checkpoint has no data position: assuming one batch per iteration")

    def before_step(self):
        torch.manual_seed(mix_seed(self.loader.seed, self.trainer.iter, comm.get_rank()))

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)
        self._loaded = True


def build_resumable_train_loader(cfg, mapper, dicts: List[Dict]) -> ResumableTrainLoader:
    """The loader of ``cfg``; its seed is SEED, or with SEED < 0 one drawn by rank 0 and shared."""
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    return ResumableTrainLoader(
        dicts, mapper, total_batch_size=cfg.SOLVER.IMS_PER_BATCH, seed=seed,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
    )  # fmt: skip
