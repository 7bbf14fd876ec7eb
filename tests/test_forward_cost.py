"""A Med-SA forward has no hidden host-device synchronisation: no ``.item()`` / ``bool(tensor)`` (which dispatch to
``aten._local_scalar_dense``) and no ``.tolist()`` / ``.cpu()`` / ``.numpy()`` on activations. Prompt values are
checked at the API boundaries (``peft_medsa.prompt_checks.check_model_call``), not inside the forward."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from peft import get_peft_model
from torch.utils._python_dispatch import TorchDispatchMode

from peft_medsa import HyPAdptConfig, MedSAConfig, SDTransConfig

from conftest import tiny_inputs, tiny_sam

HOST_COPIES = ("tolist", "cpu", "numpy", "item")


class RecordOps(TorchDispatchMode):
    """Records the name of every aten op dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@contextmanager
def record_host_copies(calls: list[str]):
    """Patches ``torch.Tensor.{tolist, cpu, numpy, item}`` to record their calls (on CPU, ``.cpu()`` and ``.tolist()``
    do not show up as an aten op)."""
    originals = {name: getattr(torch.Tensor, name) for name in HOST_COPIES}

    def wrap(name):
        def method(self, *args, **kwargs):
            calls.append(name)
            return originals[name](self, *args, **kwargs)

        return method

    try:
        for name in HOST_COPIES:
            setattr(torch.Tensor, name, wrap(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def syncs_of(model, **inputs) -> tuple[list[str], list[str]]:
    calls: list[str] = []
    with torch.no_grad(), RecordOps() as mode, record_host_copies(calls):
        model(**inputs)
    return [op for op in mode.ops if "_local_scalar_dense" in op], calls


CASES = {
    "medsa-hyper": (MedSAConfig, dict(r=4)),
    "medsa-add": (MedSAConfig, dict(r=4, prompt_conditioning="add")),
    "hypadpt": (HyPAdptConfig, dict(r=4)),
    "sdtrans": (SDTransConfig, dict(r=4)),
    "sdtrans-cross-attention": (SDTransConfig, dict(r=4, sd_fusion="cross_attention")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_has_no_host_sync(case):
    config_cls, kwargs = CASES[case]
    model = get_peft_model(tiny_sam(), config_cls(**kwargs)).eval()
    inputs = tiny_inputs(batch=2)
    points = {"input_points": torch.tensor([[[[20.0, 30.0]]], [[[40.0, 10.0]]]]), "input_labels": torch.ones(2, 1, 1)}
    calls = [dict(inputs), dict(inputs, **points)]
    if config_cls is SDTransConfig:
        calls.append(dict(inputs, num_slices=2))
    # mixed-adapter batches too (one adapter name per image)
    calls.append(dict(inputs, adapter_names=["default", "__base__"]))
    baseline_scalars, baseline_copies = syncs_of(tiny_sam(), **inputs)
    for call in calls:
        scalars, copies = syncs_of(model, **call)
        assert scalars == [], f"{case}: the forward reads tensor values on the host: {scalars}"
        assert copies == baseline_copies == [], f"{case}: host copies in the forward: {copies}"
    assert baseline_scalars == []  # plain SAM's forward has none either, so the test can see ours


def test_recorder_sees_what_it_must():
    # the checks at the boundary do read values: the recorder must notice them
    from peft_medsa.prompt_checks import check_model_call

    model = get_peft_model(tiny_sam(), MedSAConfig(r=4))
    with RecordOps() as mode:
        check_model_call(model, **tiny_inputs(batch=1))
    assert any("_local_scalar_dense" in op for op in mode.ops)
    calls: list[str] = []
    with record_host_copies(calls):
        torch.zeros(2).tolist()
        torch.zeros(2).cpu()
    assert calls == ["tolist", "cpu"]
