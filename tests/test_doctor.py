import json
import os
import subprocess
import sys

from stabook.doctor import summary_lines


def test_doctor_quick_runs_every_check_on_the_cpu_and_writes_its_report(tmp_path):
    out = tmp_path / "doctor.json"
    proc = subprocess.run([sys.executable, "-m", "stabook", "doctor", "--quick", "--device", "cpu", "--quiet",
                           "--output", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert set(checks) == {"speed_exact", "speed_hutchinson", "bf16_training", "iwae", "torchrun"}
    assert all(c["ok"] for c in checks.values()) and report["ok"]
    assert checks["speed_exact"]["logdet"] == "exact" and checks["speed_hutchinson"]["logdet"] == "hutchinson"
    assert checks["speed_exact"]["iterations_per_second"] > 0
    bf16 = checks["bf16_training"]
    assert bf16["finite"] and bf16["loss_last"] < bf16["loss_first"]
    assert checks["iwae"]["frame_nats"]["10"] >= checks["iwae"]["frame_nats"]["1"] - 1.0
    assert checks["torchrun"]["backend"] == "gloo" and checks["torchrun"]["processes"] == 2
    assert report["environment"]["torch"] and report["projection"]["steps"] > 0
    assert "all checks passed" in proc.stdout and summary_lines(report)[-1] == "all checks passed"


def test_a_failed_check_is_reported_and_the_others_still_run(monkeypatch, tmp_path):
    from stabook import doctor

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(doctor, "_speed", broken)
    report = doctor.run_doctor("cpu", quick=True, output=tmp_path / "r.json", ddp=False, progress=False)
    assert not report["ok"] and not report["checks"]["speed_exact"]["ok"]
    assert "out of memory" in report["checks"]["speed_exact"]["error"]
    assert report["checks"]["bf16_training"]["ok"] and report["checks"]["iwae"]["ok"]
    assert any("FAILED" in line for line in doctor.summary_lines(report))
