"""Chapter 6's run folders and checkpoints: what a training run leaves on disk, and how it is kept whole.

A run directory holds ``checkpoint.pt`` (model, optimiser and random states; written atomically: a temporary file,
then a rename), ``config.json`` (the settings the run uses now), ``metrics.jsonl`` (one line per logged step),
``history.jsonl`` (one line per start or resume) and, at the end, ``eval.json``. The training loop is
:mod:`stabook.train`; its settings are :mod:`stabook.config`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
from pathlib import Path

import torch

from .baselines import build_model
from .config import FROZEN_ON_RESUME, TrainConfig, preset
from .model import STA
from .runtime import get_device

__all__ = ["CHECKPOINT", "HISTORY", "METRICS", "LOCK", "COMMAND", "RUN_FILES", "EXPORT_FILES", "RunError",
           "save_checkpoint", "load_checkpoint", "require_keys", "check_checkpoint", "load_checked", "read_config",
           "folder_kind", "folder_contents", "load_model", "export_run", "write_atomic", "holds_run", "run_lock",
           "sweep_temporaries", "read_metrics", "wall_time", "resume_changes", "resume_command", "start_command"]

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.jsonl"
METRICS = "metrics.jsonl"
LOCK = ".lock"
COMMAND = "COMMAND"
#: the files that make a folder a run directory (a fresh start refuses to touch them without overwrite=True)
RUN_FILES = (CHECKPOINT, "config.json", METRICS, "eval.json", HISTORY)
#: what :func:`export_run` writes: a finished export holds these and nothing else
EXPORT_FILES = (*RUN_FILES, COMMAND)
#: what a run stopped before its first checkpoint may hold (besides temporaries)
UNSTARTED_FILES = ("config.json", HISTORY, METRICS, LOCK, "tensorboard")


class RunError(ValueError):
    """A command that would lose or mix up a run (a refused start, resume or export); nothing was changed."""


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` atomically: a temporary file in the same folder, then ``os.replace``. An interruption
    leaves either the old checkpoint or the new one, never half of one. A failed write (no space left, no
    permission) raises an ``OSError`` that names the file and leaves the old checkpoint in place."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as err:          # torch reports a full disk as a RuntimeError of its zip writer
        free = _free_megabytes(path.parent)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        raise OSError(f"could not write the checkpoint {path}: {reason} ({free} free on that disk; is it full "
                      f"or read-only?)") from err
    finally:
        if tmp.exists():
            tmp.unlink()


def _free_megabytes(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MB"
    except OSError:
        return "unknown space"


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only). A missing file raises
    ``FileNotFoundError``, an unreadable one (truncated, corrupt, not a checkpoint) a ``ValueError``; both name
    the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a checkpoint file (did you mean {path / CHECKPOINT}?)")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:        # a text file gives a KeyError, a truncated one a RuntimeError or EOFError ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable checkpoint (truncated, corrupt or not a checkpoint): "
                         f"{type(err).__name__}: {reason[:200]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a stabook checkpoint: it holds a {type(state).__name__}, not a dict")
    return state


def require_keys(state: dict, path, keys=("model", "model_config", "train_config", "step")) -> dict:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{path} is not a stabook checkpoint: it lacks {', '.join(missing)}")
    return state


def read_config(run_dir) -> TrainConfig:
    """The settings in ``run_dir/config.json``; a missing or damaged file is an error that names it."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    try:
        values = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it or start a new run") from None
    try:
        return TrainConfig.from_dict(values)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} does not hold a run's settings: {err}") from None


def check_checkpoint(state: dict, path, config: TrainConfig | None = None) -> TrainConfig:
    """Check a loaded checkpoint before anything uses it: its keys, its settings, every tensor's shape against
    the model its settings describe and, given its folder's ``config`` (``config.json``), that both describe
    the same model (kind, preset, architecture). Returns the checkpoint's settings; raises a ``ValueError``
    that names the file and what does not fit."""
    require_keys(state, path, ("model", "model_config", "train_config"))
    if not isinstance(state["model"], dict) or not isinstance(state["train_config"], dict):
        raise ValueError(f"{path} is not a stabook checkpoint: its model or train_config is not a dict")
    try:
        saved = TrainConfig.from_dict({**state["train_config"], "model": state["model_config"]})
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a stabook checkpoint: its settings are invalid ({err})") from None
    with torch.device("meta"):                          # shapes only: no memory is allocated
        expected = {k: tuple(v.shape) for k, v in build_model(saved.model_kind, saved.model).state_dict().items()}
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state["model"].items()}
    for key in sorted(set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            want = "no such tensor" if key not in expected else f"shape {list(expected[key])}"
            got = "no tensor" if found.get(key) is None else f"shape {list(found[key])}"
            raise ValueError(f"{path} does not match its own settings: the {saved.model_kind} model needs "
                             f"{want} for {key}, the checkpoint holds {got} (a damaged or edited checkpoint)")
    if config is not None:
        mine = {"model_kind": config.model_kind, "preset": config.preset, **config.model.to_dict()}
        theirs = {"model_kind": saved.model_kind, "preset": saved.preset, **saved.model.to_dict()}
        differ = [f"{k}={theirs[k]!r} (config.json: {mine[k]!r})" for k in theirs if mine[k] != theirs[k]]
        if differ:
            raise ValueError(f"{path} does not belong to its folder: the checkpoint has {', '.join(differ[:6])}; "
                             f"put it back in its own run directory")
    return saved


def load_checked(file, map_location="cpu") -> tuple[dict, TrainConfig]:
    """A checkpoint file's contents and settings, checked (:func:`check_checkpoint`) against themselves and
    against the ``config.json`` beside it, if there is one."""
    file = Path(file)
    state = load_checkpoint(file, map_location=map_location)
    config = read_config(file.parent) if (file.parent / "config.json").exists() else None
    return state, check_checkpoint(state, file, config)


def load_model(run_dir, device="cpu") -> tuple[STA, dict]:
    """The trained model of a run directory (or a checkpoint file): an :class:`STA`, or a
    :class:`stabook.baselines.FrameVAE` for ``model_kind="vae"``; and the checkpoint's contents. The checkpoint
    is checked against its settings and against the ``config.json`` beside it (:func:`check_checkpoint`)."""
    path = Path(run_dir)
    device = get_device(str(device)) if device is not None else torch.device("cpu")
    file = path / CHECKPOINT if path.is_dir() else path
    state, saved = load_checked(file, map_location=device)
    model = build_model(saved.model_kind, saved.model).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def export_run(run_dir, out_dir, command: str, overwrite: bool = False) -> Path:
    """Copy a finished run into ``out_dir`` for publishing: a weights-only checkpoint (no optimiser or random
    states, so a fraction of the size) with the command that made it, plus ``metrics.jsonl``, ``eval.json``,
    ``config.json`` and ``history.jsonl``. The checkpoint is checked first (:func:`check_checkpoint`). Writes
    into a new or empty folder or over a finished export of the same run; anything else (a run, another run's
    export, a user's files) only with ``overwrite=True``, which replaces the files an export writes. Never into
    the run itself."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not isinstance(command, str) or not command.strip():
        raise ValueError("command must name the command that made the run, got an empty string")
    if out_dir.resolve() == run_dir.resolve():
        raise RunError(f"export would replace the run's own checkpoint in {run_dir} by a weights-only copy (which "
                       f"cannot be resumed); choose another output folder")
    state = require_keys(load_checked(run_dir / CHECKPOINT)[0], run_dir / CHECKPOINT)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir} is a file; export writes a folder: choose another output folder")
    kind = folder_kind(out_dir)
    if kind == "export" and not _same_run(load_checkpoint(out_dir / CHECKPOINT), state):
        kind = "another run's export"
    if kind not in ("missing", "empty", "export") and not overwrite:
        what = {"run": "a resumable run", "unstarted": "an unstarted run",
                "other": "files that are not a finished export"}.get(kind, kind)
        raise RunError(f"{out_dir} holds {what} ({', '.join(folder_contents(out_dir))}); export refuses to "
                       f"write over it: choose another output folder, or replace its files with --overwrite "
                       f"(overwrite=True)")
    out_dir.mkdir(parents=True, exist_ok=True)
    slim = {key: state[key] for key in ("format", "version", "step", "model", "model_config", "train_config")
            if key in state}
    slim["command"] = command
    save_checkpoint(out_dir / CHECKPOINT, slim)
    for name in (METRICS, "eval.json", "config.json", HISTORY):
        if (run_dir / name).exists():
            write_atomic(out_dir / name, (run_dir / name).read_text())
        else:                                       # an older export's file would not belong to this run
            (out_dir / name).unlink(missing_ok=True)
    write_atomic(out_dir / COMMAND, command + "\n")
    return out_dir


def _same_run(a: dict, b: dict) -> bool:
    """Whether two checkpoints belong to one run: the settings that define a run (those a resume may not
    change) and the model are the same."""
    ta, tb = a.get("train_config", {}), b.get("train_config", {})
    return a.get("model_config") == b.get("model_config") and all(ta.get(k) == tb.get(k) for k in FROZEN_ON_RESUME)


def folder_contents(folder) -> list[str]:
    """The names in ``folder`` (folders with a trailing /), sorted; empty when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())


def folder_kind(folder) -> str:
    """What ``folder`` holds: ``"missing"``, ``"empty"``, ``"run"`` (a checkpoint with optimiser state, or a
    checkpoint beside a run's ``config.json``), ``"export"`` (a finished :func:`export_run`: a weights-only
    checkpoint, ``COMMAND`` and nothing but an export's files), ``"unstarted"`` (a run stopped before its first
    checkpoint: a run's ``config.json`` with at most its history, metrics, lock and TensorBoard log) or
    ``"other"``."""
    folder = Path(folder)
    if not folder.is_dir():
        return "missing" if not folder.exists() else "other"
    names = {p.name for p in folder.iterdir() if not _temporary(p)}
    if not names - {LOCK}:
        return "empty"
    has_config = "config.json" in names and _is_run_config(folder)
    if CHECKPOINT in names:
        try:
            state = load_checkpoint(folder / CHECKPOINT)
        except ValueError:
            return "run" if has_config else "other"             # a damaged run is still a run
        if "optimizer" in state or (has_config and COMMAND not in names):
            return "run"
        return "export" if COMMAND in names and names <= set(EXPORT_FILES) else "other"
    if has_config and "eval.json" not in names and names <= set(UNSTARTED_FILES):
        return "unstarted"
    return "other"


def _is_run_config(folder: Path) -> bool:
    try:
        read_config(folder)
    except (ValueError, OSError):
        return False
    return True


def _temporary(path: Path) -> bool:
    return ".tmp" in path.name and path.name.split(".tmp")[0] in (*RUN_FILES, COMMAND)


# ------------------------------------------------------------------------------------------- run directories

def write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def holds_run(run_dir) -> bool:
    """Whether ``run_dir`` holds (part of) a run: a checkpoint, configuration, metrics, evaluation or history."""
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold an exclusive lock on ``run_dir`` (``fcntl.flock`` on ``run_dir/.lock``) for the block; a second
    process (or a second training in this one) gets a :class:`RunError` naming the holder's pid."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:              # no flock (Windows): no lock
        yield
        return
    fh = open(run_dir / LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunError(f"another process (pid {holder}) is training in {run_dir}; wait for it to finish or "
                           f"stop it (a stopped run saves a checkpoint and can be resumed)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()                   # closing the file releases the lock


def sweep_temporaries(run_dir: Path) -> list[str]:
    """Remove temporary files (``checkpoint.pt.tmp<pid>`` ...) left by a process killed while writing."""
    swept = []
    for tmp in run_dir.glob("*.tmp*"):
        if tmp.is_file() and _temporary(tmp):
            tmp.unlink()
            swept.append(tmp.name)
    return swept


def read_metrics(run_dir, repair: bool = False) -> tuple[list[dict], bool]:
    """The entries of ``run_dir/metrics.jsonl`` and whether its last line was torn (a kill during a write:
    that line is dropped, and with ``repair=True`` removed from the file). A damaged line elsewhere is an
    error that names the file and the line."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return [], False
    lines = path.read_text().splitlines()
    entries, torn = [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or "step" not in entry:
                raise ValueError("no step")
            entries.append(entry)
        except ValueError:
            if number == len(lines):
                torn = True
            else:
                raise ValueError(f"{path}, line {number}: not a metrics entry; the file is damaged (fix or remove "
                                 f"that line)") from None
    if torn and repair:
        write_atomic(path, "".join(json.dumps(e) + "\n" for e in entries))
    return entries, torn


def wall_time(run_dir) -> dict:
    """How long a run trained, read from its ``metrics.jsonl``: each logged entry carries ``seconds``, the
    wall time since that start or resume, so a drop in ``seconds`` marks a resume. Returns ``seconds`` (the
    sum over segments, up to each segment's last logged step), ``segments`` and ``steps`` (the last logged
    step). Startup and the final evaluation are not included."""
    entries, _ = read_metrics(run_dir)
    timed = [e for e in entries if isinstance(e.get("seconds"), (int, float))]
    if not timed:
        raise ValueError(f"{Path(run_dir) / METRICS}: no logged step with a 'seconds' entry to time the run by")
    total, segments, last = 0.0, 1, timed[0]["seconds"]
    for entry in timed[1:]:
        if entry["seconds"] < last:           # a resume started the clock again
            total, segments = total + last, segments + 1
        last = entry["seconds"]
    return {"seconds": total + last, "segments": segments, "steps": timed[-1]["step"]}


def resume_changes(saved: TrainConfig, config: TrainConfig) -> dict:
    """The settings a resume changes, ``{name: [old, new]}``; refuses those that define the run."""
    if saved.model.to_dict() != config.model.to_dict() or saved.model_kind != config.model_kind:
        raise RunError(f"the checkpoint in {config.run_dir} was made with another model configuration: "
                       f"{saved.model_kind} {saved.model.to_dict()} != {config.model_kind} {config.model.to_dict()}")
    old, new = saved.to_dict(), config.to_dict()
    for name in FROZEN_ON_RESUME:
        if old[name] != new[name]:
            raise RunError(f"cannot resume {config.run_dir} with {name}={new[name]!r}: the run was made with "
                           f"{name}={old[name]!r}, and changing it would make another run; start a new one "
                           f"in another folder")
    return {k: [old[k], new[k]] for k in new if k not in ("model", "run_dir") and old.get(k) != new[k]}


def resume_command(run_dir) -> str:
    """The shell command that resumes the run in ``run_dir`` (quoted for a POSIX shell)."""
    return shlex.join(["python", "-m", "stabook", "train", "--resume", str(run_dir)])


def start_command(config: TrainConfig) -> str:
    """The shell command that starts ``config`` afresh: its preset, its folder and a ``--set`` per setting in
    which it differs from that preset (quoted for a POSIX shell)."""
    base = preset(config.preset)
    args = ["python", "-m", "stabook", "train", "--preset", config.preset, "--run-dir", config.run_dir]
    for values, ref in ((config.model.to_dict(), base.model.to_dict()),
                        ({k: v for k, v in config.to_dict().items() if k != "model"}, base.to_dict())):
        for key, value in values.items():
            if key not in ("preset", "run_dir") and value != ref.get(key):
                args += ["--set", f"{key}={_setting_text(value)}"]
    return shlex.join(args)


def _setting_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)
