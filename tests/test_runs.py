"""No command loses a run: refusals change no file, every user error is one clear line with exit status 2."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SETS, digit_sequences, file_hashes

from stabook import data, runs
from stabook.__main__ import main
from stabook.model import STA, STAConfig


def _snapshot(folder: Path) -> dict:
    return file_hashes(folder, skip={runs.LOCK})


def _refused(argv, capsys, match, folder=None):
    """Run the command, expect exit status 2, one error line containing ``match``, and ``folder`` unchanged."""
    before = _snapshot(folder) if folder is not None else None
    code = main(argv)
    captured = capsys.readouterr().err.strip()
    assert code == 2, captured
    err = captured.splitlines()[-1]                         # after any progress bar: one line
    assert "Traceback" not in captured and err.startswith("error: ") and match in err, captured
    if folder is not None:
        assert _snapshot(folder) == before
    return err


# 1. a fresh start never overwrites a run
def test_a_fresh_start_refuses_a_run_directory_unless_told_to_overwrite(run, capsys):
    err = _refused(["train", "--quiet", "--steps", "3", "--run-dir", str(run), *SETS], capsys, "already holds a run",
                   run)
    assert "--resume" in err and "--overwrite" in err
    assert main(["train", "--quiet", "--steps", "1", "--run-dir", str(run), "--overwrite", *SETS]) == 0
    steps = [e["step"] for e in runs.read_metrics(run)[0]]
    assert steps == [1] and runs.load_checkpoint(run / "checkpoint.pt")["step"] == 1
    _refused(["train", "--resume", str(run), "--overwrite"], capsys, "exclude each other", run)


# 2. export never replaces a resumable run
def test_export_refuses_its_own_run_and_other_resumable_runs(run, tmp_path, capsys):
    _refused(["export", str(run), str(run), "--command", "x"], capsys, "choose another output folder", run)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    _refused(["export", str(run), str(other), "--command", "x"], capsys, "holds a resumable run", other)
    out = tmp_path / "published"
    assert main(["export", str(run), str(out), "--command", "x"]) == 0
    assert main(["export", str(run), str(out), "--command", "y"]) == 0          # a weights-only copy is replaced
    assert "optimizer" not in runs.load_checkpoint(out / "checkpoint.pt")
    assert (out / "COMMAND").read_text() == "y\n" and (out / "history.jsonl").exists()


# 3. a failed start changes no file; 6. every setting is checked where it is parsed
@pytest.mark.parametrize("args, match", [
    (["--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["--set", "log_every=0"], "log_every must be an integer >= 1"),
    (["--set", "ckpt_every=0"], "ckpt_every must be an integer >= 1"),
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--steps", "-5"], "steps must be an integer >= 1"),
    (["--set", "grad_clip=-1"], "grad_clip must be > 0"),
    (["--set", "lr=nan"], "lr must be a finite number > 0"),
    (["--set", "run_dir="], "run_dir must name a folder"),
    (["--set", "steps=abc"], "setting steps: expected an integer, got 'abc'"),
    (["--set", "straight_through=maybe"], "setting straight_through: expected true or false"),
    (["--set", "latent_dim=0"], "latent_dim must be an integer >= 2"),
    (["--set", "pi0=1.5"], "pi0 must be a probability in (0, 1)"),
    (["--set", "dataset=imagenet"], "dataset must be one of"),
    (["--set", "transformations=rotate,spin"], "transformations must be a non-empty subset"),
    (["--set", "eval_k=0"], "eval_k must be comma-separated integers >= 1"),
    (["--device", "foo"], "device must be a torch device"),
    (["--max-steps", "0"], "max_steps must be an integer >= 1"),
])
def test_bad_settings_are_refused_before_any_file_is_written(args, match, run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(["train", "--resume", str(run), *args], capsys, match, run)          # a resume: the run is untouched
    fresh = tmp_path / "fresh"
    _refused(["train", "--quiet", *SETS, "--set", f"run_dir={fresh}", *args], capsys, match)
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_after_a_refused_resume_a_plain_resume_works(run, capsys):
    _refused(["train", "--resume", str(run), "--batch-size", "0"], capsys, "batch_size", run)
    assert main(["train", "--quiet", "--resume", str(run), "--steps", "3"]) == 0
    assert runs.load_checkpoint(run / "checkpoint.pt")["step"] == 3


# 4. stale temporary checkpoints are swept; 5. a torn metrics line is dropped and reported
def test_resume_sweeps_temporaries_and_repairs_a_torn_metrics_line(run, capsys):
    (run / "checkpoint.pt.tmp4242").write_bytes(b"x" * 1000)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "loss": 12')                       # a kill in the middle of a write
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 0
    captured = capsys.readouterr()
    assert "torn last line" in captured.err and "checkpoint.pt.tmp4242" in captured.out
    assert not (run / "checkpoint.pt.tmp4242").exists()
    assert [e["step"] for e in runs.read_metrics(run)[0]] == [1, 2, 3]


def test_a_damaged_metrics_line_in_the_middle_names_the_file_and_line(run, capsys):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("garbage\n" + "\n".join(lines) + "\n")
    _refused(["train", "--resume", str(run), "--steps", "3"], capsys, "metrics.jsonl, line 1", run)


# 7. bad values of the other commands name their option
def test_eval_and_compare_name_their_bad_options(run, capsys):
    _refused(["eval", str(run), "--k", "abc"], capsys, "--k: expected comma-separated integers", run)
    _refused(["eval", str(run), "--n", "0"], capsys, "--n: expected an integer from 1 to", run)
    _refused(["eval", str(run), "--output", str(run / "no" / "e.json")], capsys, "does not exist", run)
    _refused(["compare", "--seeds", "abc"], capsys, "--seeds: seeds must be comma-separated integers")
    _refused(["compare", "--seeds", "0", "--steps", "0"], capsys, "--steps: expected an integer >= 1")


# 8. corrupt files, unknown devices, no permission, no space: one clear line
def test_corrupt_checkpoints_and_missing_files_get_one_line(run, tmp_path, capsys):
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:5000])     # truncated
    _refused(["eval", str(run)], capsys, "is not a readable checkpoint", run)
    _refused(["train", "--resume", str(run), "--steps", "3"], capsys, "is not a readable checkpoint", run)
    _refused(["eval", str(tmp_path / "nowhere")], capsys, "does not exist")
    _refused(["train", "--resume", str(tmp_path / "nowhere")], capsys, "does not exist")
    (run / "config.json").write_text("{not json")
    _refused(["train", "--resume", str(run)], capsys, "config.json is not valid JSON", run)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_gpu_is_one_line(run, capsys):
    _refused(["train", "--resume", str(run), "--device", "cuda", "--steps", "3"], capsys, "CUDA is not available",
             run)
    _refused(["eval", str(run), "--device", "cuda"], capsys, "CUDA is not available", run)


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(run, capsys, monkeypatch):
    before = runs.load_checkpoint(run / "checkpoint.pt")

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    err = _refused(["train", "--resume", str(run), "--steps", "3"], capsys, "could not write the checkpoint")
    assert "full or read-only" in err
    monkeypatch.undo()
    after = runs.load_checkpoint(run / "checkpoint.pt")
    assert after["step"] == before["step"] == 2 and not list(run.glob("*.tmp*"))


def test_no_permission_is_one_line(run, capsys, monkeypatch):
    real = os.replace

    def denied(src, dst):
        if str(dst).endswith("config.json"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", denied)
    err = _refused(["train", "--resume", str(run), "--steps", "3"], capsys, "Permission denied")
    assert "config.json" in err


# 9. eval accepts a checkpoint file and writes beside it
def test_eval_of_a_checkpoint_file_writes_beside_it(run, capsys):
    (run / "eval.json").unlink()
    assert main(["eval", str(run / "checkpoint.pt"), "--n", "4", "--k", "1"]) == 0
    assert set(json.loads((run / "eval.json").read_text())) >= {"equivariance", "disentanglement"}


# 10. a resume applies an override and records it, or refuses it
def test_resume_applies_and_records_a_new_learning_rate(run, capsys):
    assert main(["train", "--quiet", "--resume", str(run), "--steps", "3", "--set", "lr=0.5"]) == 0
    state = runs.load_checkpoint(run / "checkpoint.pt")
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.5]
    assert json.loads((run / "config.json").read_text())["lr"] == 0.5 and state["train_config"]["lr"] == 0.5
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[0]["event"] == "start" and history[-1]["event"] == "resume"
    assert history[-1]["changed"]["lr"] == [0.001, 0.5] and history[-1]["step"] == 2
    _refused(["train", "--resume", str(run), "--seed", "7", "--steps", "4"], capsys, "cannot resume", run)
    _refused(["train", "--resume", str(run), "--set", "latent_dim=6"], capsys, "another model configuration", run)
    _refused(["train", "--resume", str(run), "--steps", "1"], capsys, "already at step 3", run)


# 11. two trainings in one folder: the second is refused
def test_a_second_process_cannot_train_in_a_locked_run(run):
    with runs.run_lock(run):
        other = subprocess.run([sys.executable, "-m", "stabook", "train", "--quiet", "--resume", str(run),
                                "--steps", "3"], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert other.returncode == 2 and "another process" in other.stderr and str(os.getpid()) in other.stderr
    assert runs.load_checkpoint(run / "checkpoint.pt")["step"] == 2


# 12. the public API checks what it receives
def test_the_api_refuses_bad_images_and_magnitudes():
    torch.manual_seed(0)
    model = STA(STAConfig(latent_dim=4, n_potential=1, n_rotational=1, field_hidden=8, net_width=8, net_hidden=16,
                          posterior_width=8, posterior_hidden=16))
    frames = digit_sequences(2, T=2)
    with pytest.raises(ValueError, match=r"frames must hold pixel values in \[0, 1\].*divide by 255"):
        model(frames * 255)
    with pytest.raises(ValueError, match="frames must be finite"):
        model(torch.where(frames > 0.5, torch.nan, frames))
    with pytest.raises(ValueError, match="frames must not be empty"):
        model(frames[:0])
    with pytest.raises(TypeError, match=r"frames must be a floating-point tensor.*255"):
        model((frames * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"x must hold pixel values in \[0, 1\]"):
        model.encode(frames[:, 0] - 1)
    torch.manual_seed(1)
    ref = model(frames).bound
    for dtype in (torch.float64, torch.float16):                # other precisions are converted
        torch.manual_seed(1)
        torch.testing.assert_close(model(frames.to(dtype)).bound, ref, rtol=1e-3, atol=0.5)
    images = frames[:, 0]
    for fn, bad in ((data.rotate, float("nan")), (data.scale, float("inf")), (data.hue_shift, float("nan"))):
        with pytest.raises(ValueError, match="must be finite"):
            fn(images, bad)
    with pytest.raises(ValueError, match="must be finite"):
        data.rotate(images, torch.tensor([0.0, float("inf")]))
    with pytest.raises(ValueError, match=r"x must hold pixel values in \[0, 1\]"):
        data.rotate(images * 255, 10.0)


# SIGTERM (a cluster's pre-emption) saves a checkpoint; the resumed run equals an uninterrupted one bit for bit
def _cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stabook", "train", "--quiet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_sigterm_saves_a_checkpoint_and_resuming_is_bit_identical(tmp_path):
    stopped = tmp_path / "stopped"
    proc = _cli("--steps", "100000", "--run-dir", str(stopped), *SETS, "--set", "ckpt_every=100000")
    deadline = time.time() + 120
    while time.time() < deadline and len(runs.read_metrics(stopped)[0]) < 5:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in out
    step = runs.load_checkpoint(stopped / "checkpoint.pt")["step"]
    assert 5 <= step < 100000
    final = step + 3
    resumed = _cli("--resume", str(stopped), "--steps", str(final))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    straight = tmp_path / "straight"
    reference = _cli("--steps", str(final), "--run-dir", str(straight), *SETS, "--set", "ckpt_every=100000")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    a, b = runs.load_checkpoint(stopped / "checkpoint.pt"), runs.load_checkpoint(straight / "checkpoint.pt")
    assert a["step"] == b["step"] == final
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    losses = lambda run: [e["loss"] for e in runs.read_metrics(run)[0]]  # noqa: E731
    assert losses(stopped) == losses(straight)


def test_eval_on_the_validation_split_with_the_digit_classifier(run, capsys):
    assert main(["eval", str(run), "--n", "4", "--k", "1", "--split", "val", "--recognition",
                 "--recognition-steps", "5"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "eval-val.json").read_text())
    assert result["split"] == "val" and (run / "eval.json").exists()
    for name, v in result["equivariance"].items():
        assert v["identity_x0_mae"] > 0 and v["floor_mae"] > 0
        assert 0 <= result["recognition"][name]["ratio"] and f"{name}: error over x_0" in printed
        assert "per_frame_floor_mae" in result["equivariance"][name] and "floor_ratio" in result["recognition"][name]
    assert "identity" not in printed                 # the baselines by their names: over x_0, over decoded z_0
    assert "matched share" in printed
    _refused(["eval", str(run), "--recognition", "--recognition-steps", "0"], capsys, "--recognition-steps")


def test_load_checked_returns_the_checkpoint_and_its_settings(run):
    state, saved = runs.load_checked(run / runs.CHECKPOINT)
    assert saved == runs.read_config(run) and state["step"] == 2
    (run / "config.json").write_text((run / "config.json").read_text().replace('"latent_dim": 4', '"latent_dim": 5'))
    with pytest.raises(ValueError, match="does not belong to its folder"):
        runs.load_checked(run / runs.CHECKPOINT)
