"""Streaming training data: images are read only for the samples trained on, each rank scans only its share of the
masks, and the prefetching loader returns the same items in the same order while overlapping loading."""

from __future__ import annotations

import threading
import time

import pytest

from peft_medsa.training import MedSATrainer, TrainingConfig
from peft_medsa.training.prefetch import Prefetcher
from peft_medsa.training.sampling import DataOrder, usable_indices
from test_training_utils import tiny_peft_model, toy_samples


class RecordingData:
    """A sequence of samples that records which indices had their image (full sample) or mask alone read."""

    def __init__(self, samples: list[dict]) -> None:
        self.samples, self.full_reads, self.mask_reads = samples, [], []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        self.full_reads.append(i)
        return self.samples[i]

    def select_columns(self, columns: list[str]) -> RecordingMasks:
        assert columns == ["mask"]
        return RecordingMasks(self)


class RecordingMasks:
    def __init__(self, parent: RecordingData) -> None:
        self.parent = parent

    def __len__(self) -> int:
        return len(self.parent)

    def __getitem__(self, i: int) -> dict:
        self.parent.mask_reads.append(i)
        return {"mask": self.parent.samples[i]["mask"]}


def test_training_reads_only_the_images_it_trains_on(tmp_path, fresh_accelerate):
    data = RecordingData(toy_samples(40))
    config = TrainingConfig(output_dir=str(tmp_path / "run"), max_steps=3, batch_size=2, max_corrective_clicks=0,
                            show_progress=False, seed=1, mixed_precision="no")
    trainer = MedSATrainer(tiny_peft_model(), data, config)
    assert sorted(data.mask_reads) == list(range(40)) and data.full_reads == []  # the scan read masks only
    trainer.train()
    trained = [case for batch in trainer.case_ids_seen for case in batch]
    assert len(data.full_reads) == 6 == len(set(trained))  # 3 steps x 2 images, each image read once
    assert sorted(f"case0_{i:02d}" for i in data.full_reads) == sorted(trained)


def test_each_rank_scans_only_its_share_of_the_masks(monkeypatch):
    import torch.distributed as dist

    samples = toy_samples(9)
    samples[4]["mask"] = samples[4]["mask"] * 0  # an empty mask is not usable
    shares = {}
    for rank in (0, 1):
        data = RecordingData(samples)

        def record(parts, mine, rank=rank):
            shares[rank] = mine
            parts[:] = [mine, mine]

        monkeypatch.setattr(dist, "all_gather_object", record)
        usable_indices(data, rank=rank, world=2)
        assert data.mask_reads == list(range(rank, 9, 2)) and data.full_reads == []

    def gather(parts, mine):
        parts[:] = [shares[0], shares[1]]

    monkeypatch.setattr(dist, "all_gather_object", gather)
    assert usable_indices(RecordingData(samples), rank=0, world=2) == [0, 1, 2, 3, 5, 6, 7, 8]


def test_ranks_share_the_global_batch_of_one_process():
    """W processes of batch B read exactly the samples of one process of batch B * W, in the same slots."""
    indices = list(range(3, 27))
    two = [DataOrder(indices, 2, 2, seed=5) for _ in range(2)]
    one = DataOrder(indices, 4, 1, seed=5)
    for micro in range(15):  # crosses epochs (6 global batches per epoch)
        samples, slots = one.micro_batch(micro, 0)
        halves = [two[r].micro_batch(micro, r) for r in (0, 1)]
        assert halves[0][0] + halves[1][0] == samples and halves[0][1] + halves[1][1] == slots


def test_prefetcher_keeps_order_overlaps_and_reraises():
    threads = set()

    def load(i):
        threads.add(threading.current_thread().name)
        time.sleep(0.05)
        return i * i

    began = time.perf_counter()
    with Prefetcher(load, 3, 13, depth=2) as loader:
        out = []
        for item in loader:
            time.sleep(0.05)  # "compute"
            out.append(item)
    elapsed = time.perf_counter() - began
    assert out == [i * i for i in range(3, 13)]
    assert threads == {"medsa-prefetch"}
    assert elapsed < 0.85  # serial would take 10 x (0.05 + 0.05) = 1.0 s; overlapped about 0.55 s

    def failing(i):
        if i == 2:
            raise OSError("bad file case_2.png")
        return i

    got = []
    with pytest.raises(OSError, match="case_2.png"):
        with Prefetcher(failing, 0, 5) as loader:
            for item in loader:
                got.append(item)
    assert got == [0, 1]
    assert list(Prefetcher(lambda i: -i, 0, 3, depth=0)) == [0, -1, -2]
