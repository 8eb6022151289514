"""TensorBoard logs of a run: per-member scalars, the population's figure, HParams, profiles.

A run trains a population of ``P`` members. TensorBoard compares *runs* (directories of event
files), so each member gets its own run and the HParams view gets one session per member::

    <logdir>/member_0 ... member_<P-1>   one run per member: scalars at step = epoch, and the
                                         member's HParams session (its seed, learning rate, ...)
    <logdir>/figures                     figures of the whole population (written once, not P
                                         times)
    <logdir>/plugins/profile/<time>/     traces taken by :func:`profile`

* :func:`tag` -- the scalar tag of a metric name (``val_accuracy`` -> ``val/accuracy``).
* :class:`TensorBoardWriter` -- writes the event files; one per run, on the primary process.
* :func:`profile` -- a ``jax.profiler`` trace of a few steps, where TensorBoard's profile plugin
  looks for it, with a Perfetto copy beside it.

Event files are built from tensorboardX's protocol buffers and summaries (no TensorFlow) and
written synchronously: once :meth:`TensorBoardWriter.write_epoch` returns, TensorBoard can read
the epoch. (``tensorboardX.SummaryWriter`` queues events to a thread, and its ``flush`` does not
wait for the queue, so a reader started right after it can miss the latest events.)
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

# tensorboardX's package import also imports torch when torch is installed (seconds of every
# run's start-up, only for torch tensors, which cnnjax never passes; torch is an optional
# extra). It is hidden for that one import: ``import torch`` then raises ImportError, which
# tensorboardX handles as torch being absent.
_HIDE_TORCH = "torch" not in sys.modules
if _HIDE_TORCH:
    sys.modules["torch"] = None  # type: ignore[assignment]
try:
    from tensorboardX.proto import event_pb2, summary_pb2
    from tensorboardX.record_writer import masked_crc32c
    from tensorboardX.summary import hparams as hparams_summaries
finally:
    if _HIDE_TORCH:
        del sys.modules["torch"]

__all__ = ["FIGURES_RUN", "TensorBoardWriter", "member_run", "profile", "tag"]

# The run (sub-directory of the logdir) that holds figures of the whole population.
FIGURES_RUN = "figures"

# Metric-name prefixes that name the data split a metric was measured on.
_SPLITS = ("train", "val", "test")

HParam = str | bool | int | float


def tag(name: str) -> str:
    """The TensorBoard scalar tag of a metric name from an epoch record.

    Tags group charts by the data split they were measured on: ``<split>/<metric>``.

    * ``train_loss`` -> ``train/loss``; ``val_accuracy`` -> ``val/accuracy``; ``test_loss`` ->
      ``test/loss`` (a name ``<split>_<metric>`` with split ``train``, ``val`` or ``test``);
    * ``diverged`` -> ``diverged`` and ``stopped_epoch`` -> ``stopped_epoch`` (the member's
      state, not a measurement of a split);
    * any other name is a training statistic: ``grad_norm`` -> ``train/grad_norm``,
      ``example_grad_norm_max`` -> ``train/example_grad_norm_max``.

    Args:
      name: a key of an epoch record's ``metrics``.

    Returns:
      The tag the writer files the metric under.

    Raises:
      ValueError: if ``name`` is empty.
      TypeError: if ``name`` is not a str.
    """
    if not isinstance(name, str):
        raise TypeError(f"tag: name must be a str (a metric name), got {type(name).__name__}")
    if not name:
        raise ValueError("tag: name must be a non-empty metric name, got ''")
    if name in ("diverged", "stopped_epoch"):
        return name
    split, _, metric = name.partition("_")
    if split in _SPLITS and metric:
        return f"{split}/{metric}"
    return f"train/{name}"


def member_run(index: int, members: int) -> str:
    """The run (sub-directory) name of member ``index`` of a population of ``members``.

    ``member_<index>``, zero-padded to the width of ``members - 1`` so that TensorBoard, which
    sorts runs by name, lists members in order: ``member_0`` .. ``member_9`` for 10 members,
    ``member_00`` .. ``member_10`` for 11.

    Raises:
      ValueError: if ``index`` is not in ``range(members)``.
    """
    if not 0 <= index < members:
        raise ValueError(f"member_run: index must be in range({members}), got {index}")
    return f"member_{index:0{len(str(members - 1))}d}"


def _event_file_name() -> str:
    # TensorBoard reads a run's event files in name order, and after a resume the later file must
    # come last (a restarted run's events supersede the old ones). tensorboardX names files by the
    # second, so two writers in one second would share (and truncate) one file; nanoseconds after
    # the seconds keep names unique and in time order.
    seconds, nanos = divmod(time.time_ns(), 10**9)
    return f"events.out.tfevents.{seconds:010d}.{nanos:09d}.{socket.gethostname()}.{os.getpid()}"


class _EventFile:
    """One event file: TFRecord framing around serialized ``Event`` protos, written in order.

    ``flush`` hands the events to the OS (every reader sees them); ``close`` also syncs the file
    to disk. (tensorboardX's ``RecordWriter.flush`` syncs to disk every time, a few ms per file:
    with a run per member that would cost every epoch ``P`` disk syncs.)
    """

    def __init__(self, directory: pathlib.Path):
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _event_file_name()
        while path.exists():  # Same nanosecond (a coarse clock): pick the next name.
            path = directory / _event_file_name()
        self.path = path
        self._file = open(path, "xb")
        self.write(event_pb2.Event(file_version="brain.Event:2"))

    def write(self, event: event_pb2.Event, step: int | None = None) -> None:
        event.wall_time = time.time()
        if step is not None:
            event.step = step
        data = event.SerializeToString()
        # A record: the data's length (uint64), the length's masked CRC-32C, the data, the
        # data's masked CRC-32C; little-endian.
        length = struct.pack("<Q", len(data))
        self._file.write(length + struct.pack("<I", masked_crc32c(length)))
        self._file.write(data + struct.pack("<I", masked_crc32c(data)))

    def summary(self, values: Sequence[summary_pb2.Summary.Value], step: int) -> None:
        self.write(event_pb2.Event(summary=summary_pb2.Summary(value=list(values))), step)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _has_event_files(directory: pathlib.Path) -> bool:
    return directory.is_dir() and any("tfevents" in p.name for p in directory.iterdir())


def _as_hparam(name: str, value: Any) -> HParam:
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (str, bool, int, float)):
        raise TypeError(
            f"hparams[{name!r}]: each value must be a str, bool, int or float, got "
            f"{type(value).__name__} {value!r}; convert it (e.g. str(value)) before passing it"
        )
    return value


def _kind(value: HParam) -> str:
    # TensorBoard's HParams types: a bool is not a number there.
    return "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "number"


def _per_member(name: str, values: Any, members: int) -> list[Any]:
    """``values`` as a list of ``members`` values: a list, tuple or 1-d array of that length, or
    one value that every member shares."""
    if isinstance(values, (np.ndarray, jax.Array)):
        values = np.asarray(values).tolist()  # Python numbers; a 0-d array becomes one value.
    if not isinstance(values, (list, tuple)):
        return [values] * members
    if len(values) != members:
        raise ValueError(
            f"{name}: expected one value or {members} (one per member), got {len(values)}"
        )
    return list(values)


def _scalar(name: str, value: Any) -> float:
    """A metric value as the float TensorBoard stores: bools 0/1, ``None`` NaN."""
    if value is None:
        return math.nan
    if not isinstance(value, (str, bytes)):
        try:
            return float(value)  # Also bools (0/1) and numpy scalars.
        except (TypeError, ValueError):
            pass
    raise TypeError(
        f"{name}: values must be numbers, bools or None, got {type(value).__name__} {value!r}"
    )


def _png_size(png: bytes) -> tuple[int, int]:
    # The PNG header's IHDR chunk: width and height, big-endian, at bytes 16..24.
    return struct.unpack(">II", png[16:24])


class TensorBoardWriter:
    """TensorBoard event files for a population: one run per member, HParams to compare them.

    Scalars: :meth:`write_epoch` files an epoch record's metrics for every member at
    ``step = epoch``, under the tags of :func:`tag`, plus extra values by their own names.

    Missing and non-finite values are written, not skipped: ``None`` (how a JSON record holds
    a non-finite number) as NaN, ``nan``/``inf`` as they are. TensorBoard then has the epoch at
    which a member's values stopped being finite, and its HParams view, which shows each
    member's latest value, shows NaN for a diverged member rather than its last finite value,
    which would make it look healthy.

    HParams: at construction every member's run gets the experiment (the hyper-parameter names
    and ``metrics``, the tags the HParams view shows for each member) and the session start (the
    member's values); :meth:`close` writes the session end. The experiment is identical in every
    member's run: TensorBoard reads it from the first run it finds (it expects one), so any
    member's serves, and each member directory stays complete on its own.

    Resuming: pass the restored checkpoint's epoch as ``start_epoch``. Each member's directory
    gets a new event file (TensorBoard merges a run's files, in name order), and the writer marks
    a restart at step ``start_epoch + 1`` (a ``SessionLog.START`` event), after which TensorBoard
    drops what an earlier attempt wrote for later epochs, since the resumed run writes them again.
    HParams are not written again into a directory that already holds event files: TensorBoard
    keeps the first summary metadata of a run's tag and ignores later ones, so a second copy
    could never change the view, and a changed copy would be silently ignored. Because of that
    rule, a *new* run belongs in an empty ``logdir``.

    ``enabled=False`` (the non-primary processes of a multi-process run) makes a writer that
    checks its arguments and writes nothing, not even a directory.

    Use it as a context manager, or call :meth:`close`::

        with TensorBoardWriter(logdir, 2, {"seed": [0, 1], "learning_rate": [0.1, 0.3]},
                               metrics=["train/loss", "val/accuracy"]) as tb:
            tb.write_epoch(1, record["metrics"], learning_rate=[0.1, 0.3])

    Args:
      logdir: the directory TensorBoard is pointed at (``tensorboard --logdir``); created if
        missing.
      members: the population size ``P`` (>= 1).
      hparams: hyper-parameter name -> a sequence of ``P`` values (one per member, e.g.
        ``seed``, ``learning_rate``) or one value all members share. Values are ``str``,
        ``bool``, ``int`` or ``float`` (numpy scalars are converted), one of those kinds per
        name.
      metrics: the scalar tags the HParams view lists for each member, e.g. ``["train/loss",
        "val/accuracy", "diverged"]`` (see :func:`tag`); it shows each one's latest value.
      start_epoch: the epoch the run starts after: 0 for a new run, the restored checkpoint's
        epoch for a resumed one.
      enabled: write files; ``False`` on processes other than the primary one.

    Attributes:
      logdir, members, metrics, start_epoch, enabled: as given (``metrics`` a tuple).
      hparams: per member, its hyper-parameters (a name -> value dict, shared values included).
      member_dirs: the members' run directories, ``logdir / member_run(i, members)``.
      figures_dir: the run directory of :meth:`write_figure`, ``logdir / FIGURES_RUN``.

    Raises:
      ValueError: if ``members`` < 1, an hparam has the wrong number of values, ``metrics`` is
        empty or repeats a tag, or ``start_epoch`` < 0.
      TypeError: if an hparam value is not a str, bool, int or float, or mixes those kinds.
      OSError: if a member's directory or event file cannot be created.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        members: int,
        hparams: Mapping[str, HParam | Sequence[HParam]],
        *,
        metrics: Sequence[str],
        start_epoch: int = 0,
        enabled: bool = True,
    ):
        if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
            raise ValueError(f"members must be the population size, an int >= 1, got {members!r}")
        if isinstance(metrics, str) or not metrics or len(set(metrics)) != len(metrics):
            raise ValueError(
                f"metrics must be a non-empty list of distinct scalar tags (e.g. "
                f"['train/loss', 'val/accuracy']), got {metrics!r}"
            )
        for metric in metrics:
            if not isinstance(metric, str) or not metric:
                raise ValueError(f"metrics: each must be a non-empty scalar tag, got {metric!r}")
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, (int, np.integer)):
            raise TypeError(f"start_epoch must be an int, got {type(start_epoch).__name__}")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0 (0 for a new run), got {start_epoch}")
        self.logdir = pathlib.Path(logdir)
        self.members = int(members)
        self.metrics = tuple(metrics)
        self.enabled = bool(enabled)
        self.start_epoch = int(start_epoch)
        self.hparams = self._member_hparams(hparams)
        self.member_dirs = tuple(
            self.logdir / member_run(i, self.members) for i in range(self.members)
        )
        self.figures_dir = self.logdir / FIGURES_RUN
        self._members: list[_EventFile] = []
        self._figures: _EventFile | None = None
        self._closed = False
        if self.enabled:
            try:
                for directory, member_hparams in zip(self.member_dirs, self.hparams, strict=True):
                    self._members.append(self._open(directory, member_hparams))
            except BaseException:  # e.g. a full disk: close what was opened, then report it.
                for events in self._members:
                    events.close()
                raise

    def _member_hparams(
        self, hparams: Mapping[str, HParam | Sequence[HParam]]
    ) -> tuple[dict[str, HParam], ...]:
        """Per member, its hyper-parameters as a name -> value dict (checked)."""
        if not isinstance(hparams, Mapping):
            raise TypeError(
                f"hparams must be a mapping name -> values, got {type(hparams).__name__}"
            )
        columns = {}
        for name, values in hparams.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"hparams: names must be non-empty strings, got {name!r}")
            column = [
                _as_hparam(name, v) for v in _per_member(f"hparams[{name!r}]", values, self.members)
            ]
            kinds = {_kind(v) for v in column}
            if len(kinds) > 1:
                raise TypeError(
                    f"hparams[{name!r}]: members' values must be of one kind (str, bool or "
                    f"number) so TensorBoard can compare them, got {sorted(kinds)}"
                )
            columns[name] = column
        return tuple({k: v[i] for k, v in columns.items()} for i in range(self.members))

    def _open(
        self, directory: pathlib.Path, hparams: dict[str, HParam] | None = None
    ) -> _EventFile:
        """A new event file in ``directory``, with the run's HParams (unless it already has
        event files) and its (re)start marker."""
        resumed = _has_event_files(directory)
        events = _EventFile(directory)
        if hparams is not None and not resumed:
            experiment, session_start, _ = hparams_summaries(hparams, dict.fromkeys(self.metrics))
            events.write(event_pb2.Event(summary=experiment), step=0)
            events.write(event_pb2.Event(summary=session_start), step=0)
        # TensorBoard takes a run's first START as its start and each later one as a restart: it
        # drops the events of steps >= this one that earlier files hold.
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        events.write(event_pb2.Event(session_log=start), step=self.start_epoch + 1)
        events.flush()
        return events

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RuntimeError(
                f"TensorBoardWriter.{method}: the writer is closed; write before close()"
            )

    def write_epoch(
        self,
        epoch: int,
        metrics: Mapping[str, Sequence[Any]],
        **extra: Any,
    ) -> None:
        """Writes one epoch's scalars for every member, at ``step = epoch``, and flushes them.

        Args:
          epoch: the epoch (TensorBoard's step), >= 0.
          metrics: an epoch record's ``metrics``: name -> ``P`` values (floats, bools, ``None``),
            filed under :func:`tag` of the name (bools as 0/1, ``None`` as NaN).
          **extra: more values, each filed under its own name: ``P`` values, one per member
            (e.g. ``learning_rate=[...]``), or one value for the whole run (e.g.
            ``examples_per_second=1234.5``), written into every member's run so that its
            charts and the HParams view have it.

        Raises:
          ValueError: if a value sequence does not hold ``P`` values, two names map to one tag,
            or ``epoch`` < 0.
          TypeError: if a value is not a number, bool or ``None``.
          RuntimeError: if the writer is closed.
        """
        self._check_open("write_epoch")
        step = _step(epoch)
        rows: dict[str, list[float]] = {}
        sources: dict[str, str] = {}
        for source, name, values in [
            *((f"metrics[{k!r}]", tag(k), v) for k, v in metrics.items()),
            *((k, k, v) for k, v in extra.items()),
        ]:
            if name in rows:
                raise ValueError(
                    f"write_epoch: {source} and {sources[name]} both go to tag {name!r}; rename "
                    "one of them"
                )
            values = _per_member(source, values, self.members)
            rows[name] = [_scalar(source, v) for v in values]
            sources[name] = source
        if not self.enabled:
            return
        for i, events in enumerate(self._members):
            events.summary(
                [summary_pb2.Summary.Value(tag=k, simple_value=v[i]) for k, v in rows.items()], step
            )
        self.flush()

    def write_figure(self, tag: str, figure: Any, epoch: int) -> None:
        """Writes a matplotlib figure as an image at ``step = epoch``, once for the population.

        The figure goes into the ``figures`` run beside the members' runs: a figure such as the
        learning curves already shows every member, so writing it into each member's run would
        store it ``P`` times and show ``P`` identical images. TensorBoard's Images tab shows it
        under the run ``figures``; that run has no scalars and no HParams session, so the other
        views are unaffected.

        Args:
          tag: the image's tag, e.g. ``"learning_curves"``.
          figure: a ``matplotlib.figure.Figure``, rendered as PNG at its own size and dpi (the
            caller keeps and closes it).
          epoch: the epoch (TensorBoard's step), >= 0.

        Raises:
          ValueError: if ``tag`` is empty or ``epoch`` < 0.
          TypeError: if ``figure`` cannot be saved as PNG.
          RuntimeError: if the writer is closed.
        """
        self._check_open("write_figure")
        step = _step(epoch)
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"write_figure: tag must be a non-empty string, got {tag!r}")
        if not callable(getattr(figure, "savefig", None)):
            raise TypeError(
                f"write_figure: figure must be a matplotlib Figure, got {type(figure).__name__}"
            )
        if not self.enabled:
            return
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        png = buffer.getvalue()
        width, height = _png_size(png)
        image = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=4, encoded_image_string=png
        )
        if self._figures is None:
            self._figures = self._open(self.figures_dir)
        self._figures.summary([summary_pb2.Summary.Value(tag=tag, image=image)], step)
        self._figures.flush()

    def flush(self) -> None:
        """Hands every event written so far to the OS, where TensorBoard can read it.

        :meth:`write_epoch` and :meth:`write_figure` flush already; :meth:`close` also syncs the
        files to disk.
        """
        for events in (*self._members, *([self._figures] if self._figures else [])):
            events.flush()

    def close(self, *, finished: bool = True) -> None:
        """Ends each member's HParams session (if ``finished``) and closes the event files.

        Idempotent: later calls do nothing.

        Args:
          finished: the run ended normally. ``False`` (it stopped on an error) writes no
            session end, so the session stays open in the HParams view and a resumed run that
            finishes can end it (TensorBoard keeps the first session end it reads).
        """
        if self._closed:
            return
        self._closed = True
        if finished and self._members:
            _, _, session_end = hparams_summaries({}, {})
            for events in self._members:
                events.write(event_pb2.Event(summary=session_end), step=0)
        for events in (*self._members, *([self._figures] if self._figures else [])):
            events.close()

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(finished=exc_type is None)


def _step(epoch: Any) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise TypeError(f"epoch must be an int, got {type(epoch).__name__} {epoch!r}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return int(epoch)


def profile(
    logdir: str | os.PathLike[str],
    step_fn: Callable[[], Any],
    num_steps: int,
    *,
    name: str = "train",
) -> pathlib.Path:
    """Traces ``num_steps`` calls of ``step_fn`` with ``jax.profiler`` for TensorBoard.

    ``step_fn()`` runs once untraced first, so that compilation and first-call costs stay out of
    the trace, then ``num_steps`` times inside ``jax.profiler.trace(logdir,
    create_perfetto_trace=True)``. Each call is blocked on (``jax.block_until_ready``), so the
    trace holds the device work of exactly those steps, and is marked as a step
    (``jax.profiler.StepTraceAnnotation``) for the profile plugin's step-time view. A step that
    threads state updates it through its closure, e.g.::

        def step():
            nonlocal state
            state, metrics = train_step(state, batch)
            return metrics

    The trace lands where TensorBoard's profile plugin looks: ``<logdir>/plugins/profile/
    <timestamp>/`` holds ``<host>.xplane.pb`` and ``<host>.trace.json.gz``, and beside them
    ``perfetto_trace.json.gz`` for https://ui.perfetto.dev. Viewing the trace in TensorBoard
    needs the profile plugin (``pip install xprof``, also published as
    ``tensorboard-plugin-profile``); taking it needs only jax (no TensorFlow).

    Args:
      logdir: the TensorBoard log directory (created if missing).
      step_fn: one step; called ``num_steps + 1`` times, its result is blocked on.
      num_steps: how many steps to trace, >= 1.
      name: the steps' name in the trace.

    Returns:
      The trace's directory, ``<logdir>/plugins/profile/<timestamp>``.

    Raises:
      ValueError: if ``num_steps`` < 1.
      RuntimeError: if another ``jax.profiler`` trace is running.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"profile: num_steps must be an int, got {type(num_steps).__name__}")
    if num_steps < 1:
        raise ValueError(f"profile: num_steps must be >= 1, got {num_steps}")
    jax.block_until_ready(step_fn())
    with jax.profiler.trace(str(logdir), create_perfetto_trace=True):
        for step in range(int(num_steps)):
            with jax.profiler.StepTraceAnnotation(name, step_num=step):
                jax.block_until_ready(step_fn())
    # jax names the directory after the second the trace stopped and finds it again as the newest
    # one (to add the Perfetto file); so do we.
    traces = pathlib.Path(logdir) / "plugins" / "profile"
    return max(traces.iterdir(), key=os.path.getmtime)
