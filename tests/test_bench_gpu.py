"""The prepared GPU check runs: `python -m bench.gpu --tiny` is the same code on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import why_failed
from train.hardware import native_bf16

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_its_tiny_form_on_the_cpu(tmp_path):
    table = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, "-m", "bench.gpu", "--tiny", "--json", str(table)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, why_failed(result.stdout + result.stderr)
    results = json.loads(table.read_text())
    precisions = ["bf16", "fp32"] if native_bf16(torch.device("cpu")) else ["fp32"]
    cases = {(c["precision"], c["lstm_impl"]): c for c in results["cases"]}
    assert sorted(cases) == sorted((p, i) for p in precisions for i in ("packed", "padded"))
    for (precision, _), case in cases.items():
        # the dtype the LSTMs really computed in, read by the hook, is what the precision promises
        assert case["lstm_dtype"] == {"bf16": "bfloat16", "fp32": "float32"}[precision]
        assert case["loss_finite"] and case["steps"] > 0 and case["real_frames_per_s"] > 0
    assert results["loader_frames_per_s"] > 0 and "world size 1" in results["device"]
    assert any(
        line.startswith("precision | lstm_impl | real_frames_per_s") for line in result.stdout.splitlines()
    )
