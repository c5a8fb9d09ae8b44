"""The prepared GPU check runs: `python -m bench.gpu --tiny` is the same code on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu
from tests.processes import why_failed
from train.hardware import native_bf16

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_its_tiny_form_on_the_cpu(tmp_path):
    table = tmp_path / "gpu.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--tiny", "--json", str(table)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, why_failed(result.stdout + result.stderr)
    results = json.loads(table.read_text())
    precisions = ["bf16", "fp32"] if native_bf16(torch.device("cpu")) else ["fp32"]
    cases = {(c["precision"], c["lstm_impl"], c["average"]): c for c in results["cases"]}
    plain = [(p, i, "none") for p in precisions for i in ("packed", "padded")]
    assert sorted(cases) == sorted([*plain, (precisions[0], "packed", "ema")])
    for (precision, _, _), case in cases.items():
        # the dtype the LSTMs really computed in, read by the hook, is what the precision promises
        assert case["lstm_dtype"] == {"bf16": "bfloat16", "fp32": "float32"}[precision]
        assert case["loss_finite"] and case["steps"] > 0 and case["real_frames_per_s"] > 0
    assert results["loader_frames_per_s"] > 0 and "world size 1" in results["device"]
    assert any(
        line.startswith("precision | lstm_impl | average | real_frames_per_s")
        for line in result.stdout.splitlines()
    )


def test_each_case_is_written_as_it_ends_and_a_failed_one_keeps_its_reason(tmp_path):
    """An out-of-memory case (or a run cut short by its time limit) loses no row measured before it."""
    table = tmp_path / "gpu.json"
    seen_before = []

    def measure(case: dict) -> dict:
        seen_before.append(len(json.loads(table.read_text())["cases"]) if table.exists() else 0)
        if case["precision"] == "fp16":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return {"precision": case["precision"], "lstm_impl": case["lstm_impl"], "loss_finite": True}

    cases = [
        {
            "precision": "bf16",
            "lstm_impl": "packed",
            "skipped": "no native bf16 (compute capability 7.5 < 8.0)",
        },
        {"precision": "fp16", "lstm_impl": "packed"},
        {"precision": "fp32", "lstm_impl": "packed"},
    ]
    results: dict = {"cases": []}
    gpu.run_cases(cases, measure, results, table)
    assert seen_before == [1, 2]  # the skipped row, then the failed one, were on disk before the next case
    written = json.loads(table.read_text())["cases"]
    assert written == [
        cases[0],
        {
            "precision": "fp16",
            "lstm_impl": "packed",
            "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        },
        {"precision": "fp32", "lstm_impl": "packed", "loss_finite": True},
    ]


@pytest.mark.parametrize(("capability", "skipped"), [((7, 5), True), ((8, 0), False), ((9, 0), False)])
def test_bf16_is_skipped_and_named_on_gpus_without_it_natively(monkeypatch, capability, skipped):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cases = gpu.cases_for(torch.device("cuda", 0))
    # Invariant: GPUs run the packed path only (padded is refused there), in every precision
    assert [(c["precision"], c["lstm_impl"], c["average"]) for c in cases[:3]] == [
        (p, "packed", "none") for p in ("bf16", "fp16", "fp32")
    ]
    reason = f"no native bf16 (compute capability {capability[0]}.{capability[1]} < 8.0)"
    assert [c.get("skipped") for c in cases] == [reason if skipped else None, None, None, None]
    # the EMA's case repeats the first precision the GPU runs natively
    assert cases[3] == {"precision": "fp16" if skipped else "bf16", "lstm_impl": "packed", "average": "ema"}
