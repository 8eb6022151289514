"""TensorBoard logs of a run, read back with TensorBoard's own reader and HParams logic."""

import gzip
import io
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from google.protobuf import json_format
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import (
    event_accumulator,
    event_file_loader,
    plugin_event_multiplexer,
)
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    list_session_groups,
    plugin_data_pb2,
)

from cnnjax.train.tensorboard import FIGURES_RUN, TensorBoardWriter, member_run, profile, tag

HPARAMS = {
    "seed": np.arange(3),  # numpy values are converted
    "learning_rate": [0.1, 0.3, 0.9],
    "augment": [True, False, True],
    "optimizer": "sgd",  # One value for every member.
}
METRICS = ["train/loss", "val/accuracy", "diverged"]
# Three epochs of a population of three; member 2 diverges in epoch 2.
RECORDS = [
    {
        "train_loss": [2.0, 2.5, 3.0],
        "train_accuracy": [0.3, 0.2, 0.1],
        "val_accuracy": [0.4, 0.3, 0.1],
        "grad_norm": [1.0, 2.0, 4.0],
        "diverged": [False, False, False],
    },
    {
        "train_loss": [1.0, 1.5, None],  # A JSON record's non-finite value.
        "train_accuracy": [0.6, 0.5, 0.1],
        "val_accuracy": [0.7, 0.6, 0.1],
        "grad_norm": np.array([0.5, 1.0, np.inf]),
        "diverged": [False, False, True],
    },
    {
        "train_loss": np.array([0.5, 1.0, np.nan], dtype=np.float32),
        "train_accuracy": [0.8, 0.7, 0.1],
        "val_accuracy": [0.85, 0.75, 0.1],
        "grad_norm": [0.25, 0.5, np.inf],
        "diverged": np.array([False, False, True]),
    },
]


def _write_run(logdir, **kwargs):
    with TensorBoardWriter(logdir, 3, HPARAMS, metrics=METRICS, **kwargs) as tb:
        for epoch, metrics in enumerate(RECORDS, start=1):
            tb.write_epoch(
                epoch,
                metrics,
                learning_rate=jnp.asarray(HPARAMS["learning_rate"]),
                examples_per_second=1e3,
            )
    return tb


def _read(run_dir):
    acc = event_accumulator.EventAccumulator(
        str(run_dir),
        size_guidance={
            event_accumulator.SCALARS: 0,  # 0: keep every event.
            event_accumulator.IMAGES: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    return acc.Reload()


def _scalars(acc, name):
    return [(e.step, e.value) for e in acc.Scalars(name)]


def _hparams_data(acc, name):
    content = acc.PluginTagToContent("hparams")[f"_hparams_/{name}"]
    return plugin_data_pb2.HParamsPluginData.FromString(content)


def _same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("train_loss", "train/loss"),
        ("train_accuracy", "train/accuracy"),
        ("val_loss", "val/loss"),
        ("val_accuracy", "val/accuracy"),
        ("test_loss", "test/loss"),
        ("test_accuracy", "test/accuracy"),
        ("grad_norm", "train/grad_norm"),
        ("update_norm", "train/update_norm"),
        ("param_norm", "train/param_norm"),
        ("example_grad_norm_mean", "train/example_grad_norm_mean"),
        ("example_grad_norm_max", "train/example_grad_norm_max"),
        ("diverged", "diverged"),
        ("stopped_epoch", "stopped_epoch"),
    ],
)
def test_tag_names_split_and_metric(name, expected):
    assert tag(name) == expected


def test_tag_rejects_an_empty_name_or_a_non_string():
    with pytest.raises(ValueError, match="non-empty"):
        tag("")
    with pytest.raises(TypeError, match="must be a str"):
        tag(3)


@pytest.mark.parametrize(
    "members, names",
    [
        (1, ["member_0"]),
        (10, [f"member_{i}" for i in range(10)]),
        (11, [f"member_{i:02d}" for i in range(11)]),
        (101, [f"member_{i:03d}" for i in range(101)]),
    ],
)
def test_member_runs_sort_in_member_order(members, names):
    runs = [member_run(i, members) for i in range(members)]
    assert runs == names == sorted(runs)


def test_member_run_rejects_an_index_outside_the_population():
    with pytest.raises(ValueError, match=r"range\(3\)"):
        member_run(3, 3)


def test_scalars_per_member_and_epoch(tmp_path):
    _write_run(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["member_0", "member_1", "member_2"]
    expected_tags = {
        "train/loss",
        "train/accuracy",
        "val/accuracy",
        "train/grad_norm",
        "diverged",
        "learning_rate",
        "examples_per_second",
    }
    for m in range(3):
        acc = _read(tmp_path / member_run(m, 3))
        assert set(acc.Tags()["scalars"]) == expected_tags
        for name, tb_tag in [
            ("train_loss", "train/loss"),
            ("train_accuracy", "train/accuracy"),
            ("val_accuracy", "val/accuracy"),
            ("grad_norm", "train/grad_norm"),
            ("diverged", "diverged"),
        ]:
            written = _scalars(acc, tb_tag)
            assert [step for step, _ in written] == [1, 2, 3]
            for (_, value), record in zip(written, RECORDS):
                want = record[name][m]
                want = math.nan if want is None else float(np.float32(want))
                assert _same(value, want), (m, tb_tag, value, want)
        assert _scalars(acc, "learning_rate") == [
            (e, np.float32(HPARAMS["learning_rate"][m])) for e in (1, 2, 3)
        ]
        assert _scalars(acc, "examples_per_second") == [(e, 1e3) for e in (1, 2, 3)]
    # Member 2's divergence as TensorBoard shows it: 0/1, NaN for None and nan, inf kept.
    acc = _read(tmp_path / "member_2")
    assert [v for _, v in _scalars(acc, "diverged")] == [0.0, 1.0, 1.0]
    assert [v for _, v in _scalars(acc, "train/grad_norm")] == [4.0, math.inf, math.inf]
    loss = [v for _, v in _scalars(acc, "train/loss")]
    assert loss[0] == 3.0 and math.isnan(loss[1]) and math.isnan(loss[2])


def test_hparams_per_member(tmp_path):
    _write_run(tmp_path)
    for m in range(3):
        acc = _read(tmp_path / member_run(m, 3))
        experiment = _hparams_data(acc, "experiment").experiment
        types = {h.name: api_pb2.DataType.Name(h.type) for h in experiment.hparam_infos}
        assert types == {
            "seed": "DATA_TYPE_FLOAT64",
            "learning_rate": "DATA_TYPE_FLOAT64",
            "augment": "DATA_TYPE_BOOL",
            "optimizer": "DATA_TYPE_STRING",
        }
        assert [i.name.tag for i in experiment.metric_infos] == METRICS
        start = _hparams_data(acc, "session_start_info").session_start_info
        assert start.hparams["seed"].number_value == HPARAMS["seed"][m]
        assert start.hparams["learning_rate"].number_value == HPARAMS["learning_rate"][m]
        assert start.hparams["augment"].bool_value is HPARAMS["augment"][m]
        assert start.hparams["optimizer"].string_value == "sgd"
        end = _hparams_data(acc, "session_end_info").session_end_info
        assert api_pb2.Status.Name(end.status) == "STATUS_SUCCESS"


def _session_groups(logdir):
    """The member sessions as TensorBoard's HParams view lists them (its own handler)."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    context = base_plugin.TBContext(
        logdir=str(logdir),
        multiplexer=multiplexer,
        data_provider=tb_data_provider.MultiplexerDataProvider(multiplexer, str(logdir)),
    )
    request = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=list(api_pb2.Status.values()), start_index=0, slice_size=100
    )
    response = list_session_groups.Handler(
        RequestContext(), backend_context.Context(context), "", request
    ).run()
    return {
        group.name: (
            {k: json_format.MessageToDict(v) for k, v in group.hparams.items()},
            {mv.name.tag: (mv.training_step, mv.value) for mv in group.metric_values},
        )
        for group in response.session_groups
    }


def test_hparams_view_compares_the_members(tmp_path):
    _write_run(tmp_path)
    groups = _session_groups(tmp_path)
    assert sorted(groups) == ["member_0", "member_1", "member_2"]
    for m in range(3):
        hparams, metrics = groups[member_run(m, 3)]
        assert hparams == {
            "seed": HPARAMS["seed"][m],
            "learning_rate": HPARAMS["learning_rate"][m],
            "augment": HPARAMS["augment"][m],
            "optimizer": "sgd",
        }
        assert sorted(metrics) == sorted(METRICS)
        assert metrics["val/accuracy"] == (3, pytest.approx(RECORDS[2]["val_accuracy"][m]))
    # The diverged member shows NaN loss, not its last finite one.
    assert math.isnan(groups["member_2"][1]["train/loss"][1])
    assert groups["member_2"][1]["diverged"] == (3, 1.0)


def test_a_resumed_run_supersedes_later_epochs_and_keeps_one_session(tmp_path):
    hparams = {"seed": [0, 1], "learning_rate": [0.1, 0.3]}
    # The first attempt logs epochs 1-3 but stops (an error) with epoch 2 checkpointed.
    first = TensorBoardWriter(tmp_path, 2, hparams, metrics=["train/loss"])
    for epoch in (1, 2, 3):
        first.write_epoch(epoch, {"train_loss": [10.0 + epoch, 20.0 + epoch]})
    first.close(finished=False)
    # Resumed from epoch 2 (in the same second: event file names must not collide).
    with TensorBoardWriter(tmp_path, 2, hparams, metrics=["train/loss"], start_epoch=2) as tb:
        for epoch in (3, 4):
            tb.write_epoch(epoch, {"train_loss": [100.0 + epoch, 200.0 + epoch]})
    for m, base in enumerate((10.0, 20.0)):
        run = tmp_path / member_run(m, 2)
        assert len(os.listdir(run)) == 2
        acc = _read(run)
        assert _scalars(acc, "train/loss") == [
            (1, base + 1),
            (2, base + 2),
            (3, 10 * base + 3),
            (4, 10 * base + 4),
        ]
    groups = _session_groups(tmp_path)
    assert sorted(groups) == ["member_0", "member_1"]
    assert groups["member_1"] == ({"seed": 1, "learning_rate": 0.3}, {"train/loss": (4, 204.0)})


def test_hparams_are_written_once_per_member_directory(tmp_path):
    _write_run(tmp_path)
    _write_run(tmp_path, start_epoch=3)
    for m in range(3):
        files = sorted((tmp_path / member_run(m, 3)).iterdir())
        assert len(files) == 2
        tags = [
            value.tag
            for path in files
            for event in event_file_loader.EventFileLoader(str(path)).Load()
            if event.HasField("summary")
            for value in event.summary.value
            if value.tag.startswith("_hparams_/")
        ]
        assert tags.count("_hparams_/experiment") == 1
        assert tags.count("_hparams_/session_start_info") == 1


def test_figure_is_written_once_for_the_population(tmp_path):
    figure = Figure(figsize=(4, 3), dpi=50)
    figure.add_subplot().plot([1, 2, 3], [3, 1, 2])
    with TensorBoardWriter(tmp_path, 3, HPARAMS, metrics=METRICS) as tb:
        tb.write_figure("learning_curves", figure, 7)
    acc = _read(tmp_path / FIGURES_RUN)
    (image,) = acc.Images("learning_curves")
    assert image.step == 7
    assert (image.width, image.height) == (200, 150)
    decoded = Image.open(io.BytesIO(image.encoded_image_string))
    assert decoded.format == "PNG" and decoded.size == (200, 150)
    for m in range(3):
        assert _read(tmp_path / member_run(m, 3)).Tags()["images"] == []


def test_session_stays_open_when_the_run_fails(tmp_path):
    with pytest.raises(KeyError):
        with TensorBoardWriter(tmp_path, 1, {"seed": [0]}, metrics=["train/loss"]) as tb:
            tb.write_epoch(1, {"train_loss": [1.0]})
            raise KeyError("boom")
    acc = _read(tmp_path / "member_0")
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert "_hparams_/session_end_info" not in acc.PluginTagToContent("hparams")
    assert _scalars(acc, "train/loss") == [(1, 1.0)]


def test_written_epochs_are_readable_before_close(tmp_path):
    tb = TensorBoardWriter(tmp_path, 2, {"seed": [0, 1]}, metrics=["train/loss"])
    for epoch in range(1, 31):
        tb.write_epoch(epoch, {"train_loss": [epoch, -epoch]})
    # Without close: every epoch is in the file already.
    assert _scalars(_read(tmp_path / "member_1"), "train/loss")[-1] == (30, -30.0)
    tb.close()


def test_close_is_idempotent_and_ends_writing(tmp_path):
    tb = TensorBoardWriter(tmp_path, 1, {"seed": [0]}, metrics=["train/loss"])
    tb.write_epoch(1, {"train_loss": [1.0]})
    tb.close()
    (path,) = (tmp_path / "member_0").iterdir()
    size = path.stat().st_size
    tb.close()
    assert path.stat().st_size == size
    with pytest.raises(RuntimeError, match="closed"):
        tb.write_epoch(2, {"train_loss": [1.0]})
    with pytest.raises(RuntimeError, match="closed"):
        tb.write_figure("curves", Figure(), 2)


def test_disabled_writer_creates_nothing_but_checks_its_arguments(tmp_path):
    logdir = tmp_path / "tb"
    with TensorBoardWriter(logdir, 2, {"seed": [0, 1]}, metrics=["x"], enabled=False) as tb:
        tb.write_epoch(1, {"train_loss": [1.0, 2.0]}, examples_per_second=5.0)
        tb.write_figure("curves", Figure(), 1)
        tb.flush()
        with pytest.raises(ValueError, match="expected one value or 2"):
            tb.write_epoch(2, {"train_loss": [1.0]})
    tb.close()
    assert not logdir.exists()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(members=0), ValueError, "members must be the population size"),
        (
            dict(hparams={"seed": [0, 1, 2]}),
            ValueError,
            r"hparams\['seed'\]: expected one value or 2",
        ),
        (dict(hparams={"seed": [0, None]}), TypeError, r"hparams\['seed'\].*NoneType"),
        (dict(hparams={"opt": ["sgd", 1]}), TypeError, r"hparams\['opt'\].*one kind"),
        (dict(hparams={"shape": [(1, 2), (3, 4)]}), TypeError, r"hparams\['shape'\].*tuple"),
        (dict(metrics=[]), ValueError, "metrics must be a non-empty list"),
        (dict(metrics="train/loss"), ValueError, "metrics must be a non-empty list"),
        (dict(metrics=["a", "a"]), ValueError, "distinct"),
        (dict(start_epoch=-1), ValueError, "start_epoch must be >= 0"),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path, kwargs, error, match):
    args = dict(members=2, hparams={"seed": [0, 1]}, metrics=["train/loss"]) | kwargs
    with pytest.raises(error, match=match):
        TensorBoardWriter(tmp_path, args.pop("members"), args.pop("hparams"), **args)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "epoch, metrics, extra, error, match",
    [
        (1, {"train_loss": [1.0]}, {}, ValueError, r"metrics\['train_loss'\]: expected one .* 2"),
        (1, {"train_loss": ["a", "b"]}, {}, TypeError, "numbers, bools or None"),
        (1, {"train_loss": [1.0, 2.0]}, {"train/loss": 3.0}, ValueError, "both go to tag"),
        (-1, {}, {}, ValueError, "epoch must be >= 0"),
        (1.5, {}, {}, TypeError, "epoch must be an int"),
    ],
)
def test_write_epoch_rejects_bad_values_and_writes_nothing(
    tmp_path, epoch, metrics, extra, error, match
):
    with TensorBoardWriter(tmp_path, 2, {"seed": [0, 1]}, metrics=["train/loss"]) as tb:
        with pytest.raises(error, match=match):
            tb.write_epoch(epoch, metrics, **extra)
    assert _read(tmp_path / "member_0").Tags()["scalars"] == []


def test_profile_traces_the_steps_after_a_warm_up(tmp_path):
    double = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    x = jnp.ones((8, 8))
    calls = []

    def step():
        calls.append(None)
        return double(x)

    trace_dir = profile(tmp_path / "logdir", step, 3)
    assert len(calls) == 4
    assert trace_dir.parent == tmp_path / "logdir" / "plugins" / "profile"
    names = sorted(p.name for p in trace_dir.iterdir())
    assert "perfetto_trace.json.gz" in names
    assert any(n.endswith(".xplane.pb") for n in names)
    assert any(n.endswith(".trace.json.gz") for n in names)
    with gzip.open(trace_dir / "perfetto_trace.json.gz") as f:
        events = json.load(f)["traceEvents"]
    steps = [e["args"]["step_num"] for e in events if e.get("name") == "train"]
    assert sorted(steps) == ["0", "1", "2"]  # The warm-up call is not in the trace.


def test_profile_rejects_zero_steps(tmp_path):
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        profile(tmp_path, lambda: None, 0)
    assert not any(tmp_path.iterdir())
