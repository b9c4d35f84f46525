"""The one resumable training loop, under the search, train-supernet and retrain.

:class:`ResumableRun` is what ProxylessNAS calls a ``RunManager``: it owns everything a long
run needs to survive faults, and a subclass owns only what it trains
(:class:`qnas.nas.search.SearchRun` is the ``ArchSearchRunManager`` on top of it,
:class:`qnas.train.retraining.RetrainRun` the plain one):

- the run folder: refused when it holds another run unless resuming; a restart by torchrun's
  elastic agent (``--max-restarts``) resumes automatically (:func:`open_run_folder`);
- checkpoints ``<prefix>-<step>.pt`` after every epoch and mid-epoch on SIGINT/SIGTERM: atomic,
  checksummed, the newest two kept (:mod:`.checkpoints`), holding the subclass's state, the
  epoch/step counters, the running sums and log rows and EVERY random number generator (torch
  CPU and CUDA, NumPy, Python); a failed write (disk full, I/O error) leaves the previous
  checkpoint valid and ends the run with one line that says so;
- ``resume``: the newest checkpoint that verifies, read on rank 0 and broadcast, its settings
  compared with the run's; a run resumed mid-epoch skips the batches it had done, so it ends
  exactly where an uninterrupted one would (same machine, threads and processes);
- SIGINT/SIGTERM on any rank: finish the step, save, exit 130/143 with a resume line;
- a non-finite loss stops the run, naming the last good checkpoint;
- running out of memory (``torch.OutOfMemoryError`` — CUDA's, or the CPU allocator's
  failure) in a step or in the end-of-epoch validation ends the run with ONE line: what ran out,
  where, the batch size, and what to do (``--resume`` from the last good checkpoint — e.g. with
  ``--precision bf16``, which is not part of what a resume compares — or a new run with a
  smaller ``--batch-size``). No checkpoint is written at that moment: the step that failed may
  have changed part of the state (optimiser moments, BatchNorm statistics, RNGs), so the run
  resumes from the last checkpoint it wrote, which repeats an uninterrupted run exactly;
- torchrun: per-step numbers are summed over ranks in ONE all-reduce together with the stop
  flag; only rank 0 writes and reports.

- ``run.log`` (:mod:`.log`): every message of the run with a timestamp, appended from the
  moment the folder is accepted (messages before that are buffered; a refused run writes none);
- optional TensorBoard scalars (``tensorboard=True``: ``<out>/tensorboard/``, one point per
  epoch of what :meth:`scalars` picks from the epoch's row), where the ``tensorboard`` package
  is installed;
- after the run is complete, :meth:`prune_checkpoints` keeps only the newest ``keep`` (never
  before: an unfinished run keeps the two it may resume from).

A subclass provides ``total_epochs``, ``steps_per_epoch``, :meth:`batches`, :meth:`step`,
:meth:`end_epoch`, :meth:`state_dict`/:meth:`load_state_dict` and, optionally,
:meth:`check_step`, :meth:`write_logs`, :meth:`save_extra`, :meth:`row_text`, :meth:`scalars`
and :meth:`upgrade_settings`.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import time
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm

from .. import __version__
from ..errors import Interrupted, QnasError
from . import distributed
from .checkpoints import CheckpointStore, check_same_settings, restore_rng, rng_state
from .files import check_writable_folder, write_json_atomic
from .log import debug, say, start_run_log
from .signals import StopOnSignals, signal_name

Echo = Callable[[str], None]
CONFIG = "config.json"          # the run's settings, as --config reads them back
TENSORBOARD = "tensorboard"     # the folder of TensorBoard's event files in a run folder


def check_tensorboard() -> None:
    """Refuse ``--tensorboard`` (one line) where the ``tensorboard`` package is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise QnasError("--tensorboard needs the tensorboard package, which is not installed: "
                        "pip install tensorboard (or run without --tensorboard)")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says that memory ran out: CUDA's (``torch.OutOfMemoryError``) or the CPU
    allocator's."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err) if isinstance(err, RuntimeError) else ""
    return "can't allocate memory" in text or "not enough memory" in text


def memory_text(err: BaseException, device) -> str:
    """What ran out, for the line of an out-of-memory error: ``GPU memory (NVIDIA H200, 139.8
    GiB; tried to allocate 2.00 GiB)`` or ``CPU memory (…)``."""
    import torch

    tried = re.search(r"[Tt]ried to allocate ([0-9.]+ ?[KMGT]i?B)", str(err))
    details = []
    kind = getattr(device, "type", str(device or "cpu"))
    if kind == "cuda" and torch.cuda.is_available():
        index = device.index if getattr(device, "index", None) is not None else \
            torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        details.append(f"{properties.name}, {properties.total_memory / 2**30:.1f} GiB")
    if tried:
        details.append(f"tried to allocate {tried.group(1)}")
    what = "GPU memory" if kind == "cuda" else "CPU memory"
    return what + (f" ({'; '.join(details)})" if details else "")


def restarted_by_torchrun() -> bool:
    """Whether torchrun's elastic agent restarted this process after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def open_run_folder(out: Path, resume: bool, store: CheckpointStore, what: str = "run",
                    other_files: Iterable[str] = ()) -> bool:
    """Check the run folder before any work; True when a checkpoint is to be resumed.

    A folder holding checkpoints or ``other_files`` of an earlier run is refused unless
    ``resume``; ``resume`` without a checkpoint is refused; nothing is written here."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise QnasError(f"--out {out} is a file; give a folder")
    if resume or (restarted_by_torchrun() and store.exists()):
        if not store.exists():
            raise QnasError(f"nothing to resume: {out} holds no {store.prefix}-*.pt checkpoint; "
                            f"run without --resume to start")
        return True
    held = [path.name for path in store.paths()] + \
        [name for name in other_files if (out / name).exists()]
    if held:
        raise QnasError(f"{out} already holds a {what} ({', '.join(held[:3])}); pass --resume to "
                        f"continue it or choose another --out")
    check_writable_folder(out)
    return False


class ResumableRun:
    """A run of epochs of steps that can stop anywhere and resume exactly (see module doc)."""

    checkpoint_format = "qnas-run-checkpoint"
    checkpoint_version = 1
    checkpoint_prefix = "checkpoint"
    what = "run"                     # in messages: "a search", "a retraining run"
    progress_label = "train"
    # set by a subclass: where it trains, its batch size per process and its
    # qnas.runtime.precision.Precision (the out-of-memory line names them)
    device = None
    batch_size: int | None = None
    precision = None

    def __init__(self, out: str | Path, settings: dict, echo: Echo | None = None,
                 tensorboard: bool = False):
        self.out = Path(out)
        self.settings = settings               # what must match to resume
        self._echo = echo
        self.store = CheckpointStore(self.out, prefix=self.checkpoint_prefix)
        if tensorboard:
            check_tensorboard()
        self.tensorboard = bool(tensorboard)
        self._writer = None
        self.epoch = 0
        self.step_in_epoch = 0                 # steps done in the current epoch
        self.sums: dict[str, float] = {}       # of the current epoch, over all ranks
        self.rows: list[dict] = []             # one per finished epoch

    def echo(self, message: str) -> None:
        """A message of the run: into run.log and to the caller's echo (rank 0 only)."""
        if distributed.is_main():
            say(message, self._echo)

    def debug(self, message: str) -> None:
        """A detail for run.log (on the console only with ``-v``); rank 0 only."""
        if distributed.is_main():
            debug(message)

    def log_only(self, message: str) -> None:
        """Into run.log only (what the CLI prints itself, e.g. the line of an error)."""
        if distributed.is_main():
            say(message)

    # --- what a subclass provides ---------------------------------------------------------
    total_epochs: int
    steps_per_epoch: int

    def batches(self, epoch: int) -> Iterable:
        """Every batch of ``epoch``, in the order of an uninterrupted run (the loop skips the
        ones a mid-epoch checkpoint had done)."""
        raise NotImplementedError

    def step(self, batch, epoch: int, index: int) -> dict[str, float]:
        """Train on one batch; returns this rank's numbers, which are summed over ranks."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, sums: dict[str, float]) -> dict:
        """Validate etc.; returns the epoch's log row (the loop adds ``seconds``)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What the subclass needs in a checkpoint (models, optimisers, schedulers, …)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def check_step(self, totals: dict[str, float], epoch: int, index: int) -> None:
        """Refuse non-finite numbers (default: the mean ``loss`` over ``count``)."""
        if "loss" in totals:
            self.require_finite(totals["loss"] / max(totals.get("count", 1.0), 1.0), "training",
                                epoch, index, "a lower learning rate")

    def accumulate(self, totals: dict[str, float]) -> None:
        for key, value in totals.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def step_postfix(self, totals: dict[str, float]) -> str:
        count = max(totals.get("count", 1.0), 1.0)
        return f"loss {totals.get('loss', math.nan) / count:.3f}"

    def write_logs(self) -> None:
        """Rank 0, after each checkpoint: the run's readable logs (CSV, JSON)."""

    def save_extra(self, state: dict) -> None:
        """Rank 0, after each checkpoint: other files made of the same state (best.pt)."""

    def row_text(self, row: dict) -> str:
        return f"epoch {row['epoch']:3d} " + " ".join(
            f"{key} {value:.4g}" for key, value in row.items()
            if key not in ("epoch", "seconds") and isinstance(value, (int, float)))

    def scalars(self, row: dict) -> dict[str, float]:
        """TensorBoard scalars of an epoch's row (tag → value); default: every number."""
        return {key: value for key, value in row.items()
                if key != "epoch" and isinstance(value, (int, float))
                and not isinstance(value, bool)}

    def upgrade_settings(self, recorded: dict) -> dict:
        """The settings recorded in a checkpoint of an older qnas, in today's terms (a subclass
        maps renamed keys); compared with :attr:`settings` on resume."""
        return recorded

    # --- the loop ---------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.epoch >= self.total_epochs

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    def run(self, stop_after_epochs: int | None = None, progress: bool = False) -> bool:
        """Run epochs until done (True) or until ``stop_after_epochs`` ran in this call
        (False). SIGINT/SIGTERM save a checkpoint and raise :class:`Interrupted`."""
        if stop_after_epochs is not None:
            if isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int) \
                    or stop_after_epochs < 1:
                raise QnasError(f"stop after must be a positive integer, got "
                                f"{stop_after_epochs!r}")
        remaining = self.total_epochs - self.epoch
        if stop_after_epochs is not None:
            remaining = min(remaining, stop_after_epochs)
        bar = tqdm(total=self.total_epochs * self.steps_per_epoch, initial=self.global_step,
                   unit="step", desc=self.progress_label, dynamic_ncols=True, leave=False,
                   disable=not progress or not distributed.is_main())
        try:
            with StopOnSignals() as stop:
                for _ in range(remaining):
                    row = self._run_epoch(bar, stop)
                    self.echo(self.row_text(row))
                    # a signal that arrived during validation or the save, on any rank
                    if distributed.all_reduce_sum([float(stop.requested is not None)])[0]:
                        self.interrupt(stop)
        finally:
            bar.close()
            self._close_tensorboard()
        return self.finished

    def _run_epoch(self, bar, stop: StopOnSignals) -> dict:
        epoch, started = self.epoch, time.perf_counter()
        for index, batch in enumerate(self.batches(epoch)):
            if index < self.step_in_epoch:          # done before a mid-epoch checkpoint
                continue
            with self.out_of_memory_guard("a training step", epoch, index):
                values = self.step(batch, epoch, index)
            keys = list(values)
            # one all-reduce per step: the numbers, and whether any rank must stop
            reduced = distributed.all_reduce_sum(
                [float(values[k]) for k in keys] + [float(stop.requested is not None)])
            totals = dict(zip(keys, reduced[:-1]))
            self.check_step(totals, epoch, index)
            self.accumulate(totals)
            self.step_in_epoch = index + 1
            bar.update(1)
            bar.set_postfix_str(f"ep {epoch + 1}/{self.total_epochs} "
                                f"{self.step_postfix(totals)}", refresh=False)
            if reduced[-1]:
                self.interrupt(stop)
        with self.out_of_memory_guard("the end-of-epoch validation", epoch, training=False):
            row = {"epoch": epoch + 1, **self.end_epoch(epoch, dict(self.sums))}
        row["seconds"] = time.perf_counter() - started
        self.epoch += 1
        self.step_in_epoch, self.sums = 0, {}
        self.rows.append(row)
        self.save()
        self._write_scalars(row)
        return row

    # --- TensorBoard ----------------------------------------------------------------------
    def _write_scalars(self, row: dict) -> None:
        if not self.tensorboard or not distributed.is_main():
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run rewrites nothing: points from the epoch on are dropped first
            self._writer = SummaryWriter(log_dir=str(self.out / TENSORBOARD),
                                         purge_step=int(row["epoch"]))
        for tag, value in self.scalars(row).items():
            if math.isfinite(float(value)):
                self._writer.add_scalar(tag, float(value), int(row["epoch"]))
        self._writer.flush()

    def _close_tensorboard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # --- stopping -------------------------------------------------------------------------
    def require_finite(self, value: float, which: str, epoch: int, index: int,
                       remedy: str) -> None:
        """Stop the run when ``value`` (the ``which`` loss) is NaN or infinite."""
        if math.isfinite(value):
            return
        last = self.store.paths()
        where = (f"the last good checkpoint is {last[0]}" if last
                 else "no checkpoint was written yet")
        message = (f"the {which} loss became {value} at epoch {epoch + 1}, step {index + 1}: "
                   f"training diverged; {where}; try {remedy}")
        self.log_only(f"error: {message}")
        raise QnasError(message)

    @contextlib.contextmanager
    def out_of_memory_guard(self, where: str, epoch: int | None = None,
                            index: int | None = None, training: bool = True):
        """Turn running out of memory in the body into ONE line (:meth:`out_of_memory_line`);
        other errors pass unchanged. ``training=False``: the body does not depend on the batch
        size or the precision (an evaluation), so the line does not suggest them."""
        message = None
        try:
            yield
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            message = self.out_of_memory_line(err, where, epoch, index, training)
        if message is None:
            return
        # outside the except block: the failed step's frames (and tensors) can go now
        self._free_device_memory()
        self.log_only(f"error: {message}")
        raise QnasError(message)

    def _free_device_memory(self) -> None:
        import gc

        import torch

        gc.collect()
        if getattr(self.device, "type", None) == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def out_of_memory_line(self, err: BaseException, where: str, epoch: int | None = None,
                           index: int | None = None, training: bool = True) -> str:
        """What ran out, where, at which batch size, and what would work (see the module doc)."""
        from .precision import cuda_has_bf16

        at = ""
        if epoch is not None:
            at = f" at epoch {epoch + 1}" + (f", step {index + 1}" if index is not None else "")
        batch = f", batch {self.batch_size} per process" if self.batch_size and training else ""
        precision = getattr(self.precision, "name", "fp32")
        on_gpu = getattr(self.device, "type", None) == "cuda"
        lower = None
        if precision == "fp32" and training:
            lower = "bf16" if not on_gpu or cuda_has_bf16() else "fp16"
        last = self.store.paths()
        if not training:
            todo = (f"the last good checkpoint is {last[0]}: continue it with --resume --out "
                    f"{self.out}" if last else "no checkpoint was written yet: start again")
            return (f"ran out of {memory_text(err, self.device)} in {where} of the {self.what}"
                    f"{at}; {todo} once more memory is free (other processes on the device?)")
        smaller = "a smaller --batch-size"
        if last:
            cont = f"continue it with --resume --out {self.out}"
            cont += (f" --precision {lower} (half the activation memory)" if lower
                     else " once more memory is free")
            todo = (f"the last good checkpoint is {last[0]}: {cont}, or start a new --out with "
                    f"{smaller}")
        else:
            todo = ("no checkpoint was written yet: start again with " + smaller
                    + (f" or --precision {lower}" if lower else ""))
        return (f"ran out of {memory_text(err, self.device)} in {where} of the {self.what}{at}"
                f"{batch}; {todo}")

    def interrupt(self, stop: StopOnSignals | None) -> None:
        """Save a checkpoint and raise :class:`Interrupted` (another rank's signal counts as
        SIGTERM here)."""
        signum = (stop.requested if stop is not None and stop.requested is not None
                  else signal.SIGTERM)
        path = self.save()
        message = (f"stopped by {signal_name(signum)} at epoch {self.epoch + 1}, step "
                   f"{self.step_in_epoch}; checkpoint {path}; resume with the same command and "
                   f"--resume --out {self.out}")
        self.log_only(f"warning: {message}")
        raise Interrupted(message, signum)

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {"format": self.checkpoint_format, "format_version": self.checkpoint_version,
                "qnas_version": __version__, "config": self.settings,
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "sums": dict(self.sums), "rows": list(self.rows),
                "world_size": distributed.world_size(), "rng": rng_state(),
                **self.state_dict()}

    def save(self) -> Path:
        """Rank 0 writes the checkpoint (then the logs and extras); every rank waits. A write
        that fails ends the run on every rank with one line; the previous checkpoint stays."""
        path = self.store.path_for(self.global_step)
        failure = None
        if distributed.is_main():
            previous = self.store.paths()
            try:
                state = self.checkpoint()
                path = self.store.save(state, self.global_step)
                self.save_extra(state)
                self.write_logs()
                self.debug(f"checkpoint {path} ({path.stat().st_size / 1e6:.1f} MB)")
            except OSError as err:
                kept = (f"the previous checkpoint {previous[0]} is intact" if previous
                        else "no earlier checkpoint exists")
                reason = err.strerror or type(err).__name__
                failure = (f"could not write {getattr(err, 'filename', None) or path} "
                           f"({reason}): {kept}; free some space or fix the disk, then "
                           f"resume with --resume --out {self.out}")
        failure = distributed.broadcast_object(failure)
        if failure:
            raise QnasError(failure)
        distributed.barrier()
        return path

    def restore(self) -> Path:
        """Load the newest good checkpoint (rank 0 reads, every rank receives); returns its
        path. Refuses another kind of checkpoint and other settings."""
        state, path = self.store.load_latest_on_every_rank(warn=self.echo)
        if not isinstance(state, dict) or state.get("format") != self.checkpoint_format:
            raise QnasError(f"{path} is not a checkpoint of {self.what}")
        if int(state.get("format_version", 0)) > self.checkpoint_version:
            raise QnasError(f"{path} has checkpoint format {state['format_version']}, newer than "
                            f"this qnas ({__version__}) reads ({self.checkpoint_version}); "
                            f"upgrade qnas")
        check_same_settings(self.upgrade_settings(dict(state["config"])), self.settings,
                            f"the {self.what} in {self.out}")
        if state.get("world_size", 1) != distributed.world_size():
            self.echo(f"note: the checkpoint was written by {state.get('world_size', 1)} "
                      f"process(es), resuming with {distributed.world_size()}: the data shards "
                      f"differ, so the run will not repeat an uninterrupted one exactly")
        self.load_state_dict(state)
        self.epoch, self.rows = int(state["epoch"]), list(state["rows"])
        self.step_in_epoch = int(state.get("step_in_epoch", 0))
        self.sums = dict(state.get("sums") or {})
        restore_rng(state["rng"])
        return path

    def begin(self, resuming: bool, config: dict) -> Path | None:
        """Resume from the newest good checkpoint (returns its path), or start: rank 0 writes
        the run's ``config.json`` (``--config`` reads it back to repeat the run). From here on
        the run's messages go into ``run.log``."""
        if distributed.is_main():
            start_run_log(self.out)
        if resuming:
            path = self.restore()
            self.echo(f"resumed from {path} at epoch {self.epoch + 1}"
                      + (f", step {self.step_in_epoch}" if self.step_in_epoch else ""))
            return path
        if distributed.is_main():
            write_json_atomic(self.out / CONFIG, config)
            self.debug(f"settings: {config}")
        return None

    def prune_checkpoints(self, keep: int) -> list[Path]:
        """Once the run is complete: delete all but the newest ``keep`` checkpoints (0: all;
        rank 0). Returns the deleted paths. Refused while the run is unfinished."""
        if not self.finished:
            raise QnasError(f"the {self.what} in {self.out} is not finished: its checkpoints "
                            f"are what it resumes from")
        removed = self.store.prune(keep) if distributed.is_main() else []
        for path in removed:
            self.debug(f"removed {path} (--keep-checkpoints {keep})")
        distributed.barrier()
        return removed
