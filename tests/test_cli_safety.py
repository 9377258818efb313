"""No command loses a run, second pass: eval, export, resume and overwrite. Every refusal leaves every file of the
folder byte-identical (hashed before and after)."""

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SETS, SMALL, digit_sequences, file_hashes

import stabook.__main__ as cli
from stabook import data, doctor, metrics, runs
from stabook import train as training
from stabook.__main__ import main
from stabook.model import STA, STAConfig

EVAL = ["--n", "4", "--k", "1", "--floor-steps", "0"]


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (the lock file included) by its SHA-256."""
    return file_hashes(folder)


def _refused(argv, capsys, match, *folders):
    """Run the command: exit status 2, one error line containing ``match``, every file of ``folders`` unchanged."""
    before = [_snapshot(f) for f in folders]
    code = main(argv)
    captured = capsys.readouterr().err.strip()
    assert code == 2, captured
    err = captured.splitlines()[-1]
    assert "Traceback" not in captured and err.startswith("error: ") and match in err, captured
    assert [_snapshot(f) for f in folders] == before
    return err


def _diverge(monkeypatch, after: int = 0):
    """Make training diverge at its ``after``-th step (0: the first), as a too large learning rate does."""
    real, calls = training.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise FloatingPointError("the loss became nan")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step)


def _wrong_shape(run: Path) -> None:
    state = runs.load_checkpoint(run / "checkpoint.pt")
    key = next(k for k, v in state["model"].items() if v.dim() == 2)
    state["model"][key] = torch.zeros(3, 3)
    torch.save(state, run / "checkpoint.pt")


# 1. a failed resume leaves config.json and history.jsonl as they were
def test_a_diverged_resume_leaves_config_and_history_unchanged(run, capsys, monkeypatch):
    kept = {name: (run / name).read_bytes() for name in ("config.json", "history.jsonl", "checkpoint.pt")}
    _diverge(monkeypatch, after=0)
    err = _refused(["train", "--quiet", "--resume", str(run), "--steps", "60", "--set", "lr=0.5"], capsys,
                   "the loss became nan")
    assert "the last good checkpoint is" in err
    assert {name: (run / name).read_bytes() for name in kept} == kept
    monkeypatch.undo()
    assert main(["train", "--quiet", "--resume", str(run), "--steps", "3"]) == 0      # a plain resume works
    assert json.loads((run / "config.json").read_text())["lr"] == 0.001


def test_a_resume_on_a_full_disk_leaves_config_and_history_unchanged(run, capsys, monkeypatch):
    kept = {name: (run / name).read_bytes() for name in ("config.json", "history.jsonl", "checkpoint.pt")}

    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    _refused(["train", "--quiet", "--resume", str(run), "--steps", "3", "--set", "lr=0.01"], capsys,
             "could not write the checkpoint")
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_a_resume_records_changed_settings_with_its_first_checkpoint(run):
    assert main(["train", "--quiet", "--resume", str(run), "--steps", "3", "--set", "lr=0.01"]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["changed"]["lr"] == [0.001, 0.01] and json.loads((run / "config.json").read_text())["lr"] == 0.01


# 1, 6, 7. a checkpoint is checked against its settings and its folder before any command uses it
def test_a_wrong_shape_tensor_is_refused_by_resume_eval_and_export(run, tmp_path, capsys):
    _wrong_shape(run)
    out = tmp_path / "published"
    _refused(["train", "--resume", str(run), "--steps", "3"], capsys, "does not match its own settings", run)
    _refused(["eval", str(run), *EVAL], capsys, "does not match its own settings", run)
    _refused(["export", str(run), str(out), "--command", "x"], capsys, "does not match its own settings", run)
    assert not out.exists()


def test_eval_refuses_a_checkpoint_of_another_preset_in_a_run_folder(run, tmp_path, capsys):
    other = tmp_path / "other"
    sets = [x if x != "net_hidden=32" else "net_hidden=16" for x in SETS]
    assert main(["train", "--quiet", "--preset", "book", "--steps", "1", "--run-dir", str(other), *sets,
                 "--set", "dataset=digits"]) == 0
    shutil.copyfile(other / "checkpoint.pt", run / "checkpoint.pt")
    err = _refused(["eval", str(run), *EVAL], capsys, "does not belong to its folder", run)
    assert "preset='book'" in err and "net_hidden=16" in err
    _refused(["train", "--resume", str(run), "--steps", "3"], capsys, "does not belong to its folder", run)
    _refused(["export", str(run), str(tmp_path / "out"), "--command", "x"], capsys, "does not belong", run)


@pytest.mark.parametrize("content", [b"hello, this is a text file\n", b"", b"PK\x03\x04 truncated zip"])
def test_a_file_posing_as_a_checkpoint_gets_one_clear_line(run, tmp_path, capsys, content):
    (run / "checkpoint.pt").write_bytes(content)
    for argv in (["eval", str(run), *EVAL], ["train", "--resume", str(run), "--steps", "3"],
                 ["export", str(run), str(tmp_path / "out"), "--command", "x"]):
        _refused(argv, capsys, "is not a readable checkpoint", run)


# 2, 3. eval --output never writes over a run's files
@pytest.mark.parametrize("name", ["checkpoint.pt", "metrics.jsonl", "config.json", "history.jsonl"])
def test_eval_refuses_to_write_over_a_file_of_the_run(run, capsys, name):
    err = _refused(["eval", str(run), *EVAL, "--output", str(run / name)], capsys, f"a run's {name}", run)
    assert "--overwrite" in err


def test_eval_refuses_a_file_that_is_not_an_evaluation_unless_told_to_overwrite(run, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    _refused(["eval", str(run), *EVAL, "--output", str(notes)], capsys, "not an evaluation", run, tmp_path)
    assert main(["eval", str(run), *EVAL, "--output", str(notes), "--overwrite"]) == 0
    assert "--overwrite: replaced" in capsys.readouterr().out and "equivariance" in json.loads(notes.read_text())
    assert main(["eval", str(run), *EVAL, "--output", str(notes)]) == 0          # an evaluation is replaced


# 4. export writes into a new folder or over a finished export, and nothing else without --overwrite
def test_export_refuses_a_folder_that_is_not_a_finished_export(run, tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_text('{"my": "settings"}')
    (user / "eval.json").write_text('{"my": "numbers"}')
    err = _refused(["export", str(run), str(user), "--command", "x"], capsys, "not a finished export", user)
    assert "--overwrite" in err
    assert main(["export", str(run), str(user), "--command", "x", "--overwrite"]) == 0
    assert "replaced config.json, eval.json" in capsys.readouterr().out
    assert runs.folder_kind(user) == "export"


def test_export_replaces_its_own_export_but_not_another_runs(run, tmp_path, capsys):
    out = tmp_path / "published"
    assert main(["export", str(run), str(out), "--command", "x"]) == 0
    assert main(["train", "--quiet", "--resume", str(run), "--steps", "3"]) == 0
    assert main(["export", str(run), str(out), "--command", "y"]) == 0          # the same run, further on
    assert runs.load_checkpoint(out / "checkpoint.pt")["step"] == 3
    other = tmp_path / "other"
    assert main(["train", "--quiet", "--steps", "1", "--seed", "1", "--run-dir", str(other), *SETS]) == 0
    _refused(["export", str(other), str(out), "--command", "z"], capsys, "another run's export", out)


def test_export_refuses_an_unstarted_run(run, tmp_path, capsys, monkeypatch):
    stuck = _unstarted(tmp_path, capsys, monkeypatch)
    _refused(["export", str(run), str(stuck), "--command", "x"], capsys, "unstarted run", stuck)


# 5. --overwrite replaces a run, never a folder that is not one
def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "tensorboard").mkdir(parents=True)
    (folder / "tensorboard" / "events").write_text("my logs")
    (folder / "config.json").write_text('{"my": "settings"}')
    _refused(["train", "--quiet", "--overwrite", "--run-dir", str(folder), "--steps", "1", *SETS], capsys,
             "--overwrite replaces only a run", folder)
    _refused(["train", "--quiet", "--run-dir", str(folder), "--steps", "1", *SETS], capsys, "is not a run", folder)


def test_overwrite_names_what_it_replaces(run, capsys):
    assert main(["train", "--overwrite", "--run-dir", str(run), "--steps", "1", *SETS, "--quiet"]) == 0
    assert main(["train", "--overwrite", "--run-dir", str(run), "--steps", "1", *SETS]) == 0
    out = capsys.readouterr().out
    assert "--overwrite: replacing the run in" in out and "checkpoint.pt, config.json" in out


# the stuck folder: a run stopped before its first checkpoint
def _unstarted(tmp_path, capsys, monkeypatch) -> Path:
    stuck = tmp_path / "stuck"
    _diverge(monkeypatch, after=0)
    err = _refused(["train", "--quiet", "--steps", "3", "--run-dir", str(stuck), *SETS, "--set", "lr=0.002"],
                   capsys, "no checkpoint was saved yet")
    assert "checkpoint.pt" not in err                        # it names no checkpoint that does not exist
    monkeypatch.undo()
    assert sorted(p.name for p in stuck.iterdir()) == [".lock", "config.json", "history.jsonl"]
    assert runs.folder_kind(stuck) == "unstarted"
    return stuck


def test_an_unstarted_run_is_offered_a_start_and_taken_over_by_a_fresh_start(tmp_path, capsys, monkeypatch):
    stuck = _unstarted(tmp_path, capsys, monkeypatch)
    err = _refused(["train", "--resume", str(stuck)], capsys, "stopped before its first checkpoint", stuck)
    command = shlex.split(err.split("with: ", 1)[1])
    assert command[:4] == ["python", "-m", "stabook", "train"] and "lr=0.002" in command
    assert main([*command[3:], "--quiet"]) == 0             # the offered command starts it
    assert runs.load_checkpoint(stuck / "checkpoint.pt")["step"] == 3
    assert json.loads((stuck / "config.json").read_text())["lr"] == 0.002
    assert [json.loads(line)["event"] for line in (stuck / "history.jsonl").read_text().splitlines()] == ["start"]


def test_a_fresh_start_takes_over_an_unstarted_run_with_a_message(tmp_path, capsys, monkeypatch):
    stuck = _unstarted(tmp_path, capsys, monkeypatch)
    assert main(["train", "--steps", "1", "--run-dir", str(stuck), *SETS]) == 0
    assert "taking over" in capsys.readouterr().out
    assert runs.load_checkpoint(stuck / "checkpoint.pt")["step"] == 1


# inputs that were accepted without a word
@pytest.mark.parametrize("args, match", [
    (["--steps", "3", "--set", "steps=-1"], "steps must be an integer >= 1, got -1"),
    (["--set", "steps=10", "--steps", "3"], "steps is given twice with different values"),
    (["--set", "transformations=rotate,rotate"], "transformations must name each transformation once"),
    (["--set", "device=cpu:1"], "does not exist"),
    (["--set", "slab_mu=1e300"], "slab_mu must lie in [-10.0, 10.0]"),
    (["--set", "batch_size=1000000000"], "batch_size must be at most 16,384"),
    (["--set", "latent_dim=1000000000"], "latent_dim must be at most 4,096"),
    (["--set", "net_hidden=1000000000"], "net_hidden must be at most 16,384"),
    (["--set", "n_sub=1000000000"], "n_sub must be at most 100"),
    (["--set", "n_potential=1000000000"], "n_potential must be at most 64"),
    (["--set", "eval_sequences=1000000000"], "eval_sequences must be at most 16,384"),
    (["--set", "T=1000000000"], "T must be at most 256"),
    (["--set", "T=1000000"], "T must be at most 256"),
    (["--seed", "1000000000000"], "seed must be at most 2,147,483,647"),
])
def test_silent_inputs_are_refused_on_a_fresh_start_and_a_resume(args, match, run, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    keys = {a.split("=")[0] for a in args}
    sets = [x for s in SMALL if s.split("=")[0] not in keys for x in ("--set", s)]     # each setting once
    _refused(["train", "--quiet", "--run-dir", str(fresh), *sets, *args], capsys, match, tmp_path)
    assert not fresh.exists()
    _refused(["train", "--quiet", "--resume", str(run), *args], capsys, match, run)


def test_a_fresh_start_refuses_an_unknown_preset(tmp_path, capsys):
    _refused(["train", "--quiet", "--run-dir", str(tmp_path / "r"), "--set", "preset=nonsense"], capsys,
             "unknown preset 'nonsense'", tmp_path)
    _refused(["train", "--quiet", "--preset", "book", "--set", "preset=tiny"], capsys, "given twice", tmp_path)


def test_a_resume_refuses_another_preset_and_a_max_steps_it_has_passed(run, capsys):
    _refused(["train", "--resume", str(run), "--set", "preset=nonsense"], capsys, "preset must be one of", run)
    _refused(["train", "--resume", str(run), "--preset", "book"], capsys, "the run was made with preset='tiny'", run)
    _refused(["train", "--resume", str(run), "--max-steps", "2", "--steps", "20"], capsys, "already at step 2", run)
    assert main(["train", "--quiet", "--resume", str(run), "--preset", "tiny", "--steps", "3"]) == 0


def test_the_api_names_the_argument_it_refuses():
    torch.manual_seed(0)
    model = STA(STAConfig(latent_dim=4, n_potential=1, n_rotational=1, field_hidden=8, net_width=8, net_hidden=16,
                          posterior_width=8, posterior_hidden=16, decoder="mlp"))
    frames = digit_sequences(2, T=2)
    with pytest.raises(ValueError, match="noise_batch must cover this shard.*noise_batch=1"):
        model(frames, noise_batch=1)
    with pytest.raises(ValueError, match="noise_offset needs noise_batch"):
        model(frames, noise_offset=1)
    model(frames, noise_batch=4, noise_offset=2)                    # a valid shard
    with pytest.raises(ValueError, match="steps must be an integer >= 1.*got -1"):
        model.traverse(torch.zeros(2, 4), 0, steps=-1)
    with pytest.raises(ValueError, match="n must be an integer >= 1.*got -1"):
        data.split_indices(-1)
    with pytest.raises(ValueError, match="pi0 must be > 0.*got pi0=0"):
        data.SequenceGenerator(frames[:, 0], pi0=0, beta=0)
    data.SequenceGenerator(frames[:, 0], beta=0).sample(3, T=4)     # beta=0 alone is a valid chain
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        metrics.evaluate(model, frames[:, 0], n=0)
    with pytest.raises(ValueError, match="latent_dim must be at most 4,096, got 1,000,000,000"):
        STAConfig(latent_dim=10**9)


# help, the resume line, the console command
def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command, options", [
    ("train", ["--steps", "--seed", "--batch-size", "--device", "--run-dir", "--preset", "--max-steps"]),
    ("eval", ["--n", "--device", "--output", "--overwrite"]),
    ("compare", ["--runs-dir", "--device", "--quiet", "--seeds"]),
    ("export", ["run_dir", "out_dir", "--overwrite"]),
    ("doctor", ["--quiet", "--device"]),
])
def test_every_option_says_what_it_does_and_its_default(command, options, capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    helps = {opt: a.help for a in sub._actions for opt in (a.option_strings or [a.dest])}
    for action in sub._actions:
        assert action.help, (command, action.dest)
    for option in options:
        text = helps[option]
        assert len(text) > 15 and ("default" in text or option in ("run_dir", "out_dir")), (command, option, text)


def test_train_help_names_the_set_keys_signals_and_exit_codes(capsys):
    text = _help(capsys, "train")
    for word in ("latent_dim", "slab_mu", "eval_sequences", "SIGINT", "SIGTERM", "130", "143", "exit status: 0",
                 "upper limits"):
        assert word in text, word


def test_the_resume_line_is_shell_quoted(tmp_path, capsys):
    folder = tmp_path / "my run; rm -rf x"
    assert main(["train", "--steps", "1", "--run-dir", str(folder), *SETS]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("resume with: "))
    assert shlex.split(line.removeprefix("resume with: ")) == ["python", "-m", "stabook", "train", "--resume",
                                                               str(folder)]


def test_the_package_installs_a_stabook_command():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    assert 'stabook = "stabook.__main__:main"' in scripts.splitlines()[0]
    assert callable(cli.main)


# the doctor projects a run at the preset's own batch and T
def test_the_doctor_projects_from_the_presets_batch_and_t(monkeypatch, tmp_path):
    seen = []

    def speed(config, device, iters, images):
        seen.append((config.batch_size, config.T))
        return {"seconds_per_iteration": 0.1, "iterations_per_second": 10.0, "batch_size": config.batch_size,
                "latent_dim": config.model.latent_dim}

    monkeypatch.setattr(doctor, "_speed", speed)
    monkeypatch.setattr(doctor, "_bf16_training", lambda *a: {"ok": True})
    report = doctor.run_doctor("cpu", quick=True, output=None, ddp=False, progress=False)
    tiny = training.preset("tiny")
    assert seen == [(tiny.batch_size, tiny.T)] * 2
    p = report["projection"]
    assert (p["batch_size"], p["T"], p["steps"]) == (tiny.batch_size, tiny.T, tiny.steps)
    assert p["hours_exact"] == pytest.approx(0.1 * tiny.steps / 3600)
    assert any("batch 32, T 8" in line for line in doctor.summary_lines(report))
