"""bench/gpu.py stays working: its tiny CPU run measures every variant and a LoRA step that learns."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_bench_runs_at_tiny_size_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--size", "tiny", "--device", "cpu", "--dtype", "float32",
         "--decode-tokens", "4", "--repeats", "1", "--train-batch", "1", "--train-text-tokens", "8",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["decode_tokens_per_second"]) == {"llava-1.5", "sp-cropping", "sp-pooling"}
    assert all(rate > 0 for rate in report["decode_tokens_per_second"].values())
    assert set(report["decode_ratio_to_baseline"]) == {"sp-cropping", "sp-pooling"}
    step = report["lora_step"]
    assert step["tokens"] == 1 + 582 + 8 and step["tokens_per_second"] > 0 and 0 < step["mfu"] < 1
    assert "sp-cropping" in completed.stdout and "MFU" in completed.stdout
    # It must not need what a bare GPU image lacks.
    probe = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "bench" / "gpu.py"), "--help"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines() if "|" in line}
    assert not imported & {"ray", "deepspeed", "mlflow"}
