"""notebooks/colab.ipynb, executed on this CPU as a user would run it, so it cannot rot.

The notebook reads ``CNNJAX_NOTEBOOK_FAST=1`` (1 epoch on 256 images of the bundled MNIST set, no
network) and ``CNNJAX_NOTEBOOK_RUNS`` (where its runs go); outside Colab it skips the install and
uses this checkout. Its training and figures run as child processes of the kernel, which inherit
this test's environment (XLA optimisations off: small programs compile faster).
"""

import pathlib
import sys

import jax
import nbformat
import pytest
from nbclient import NotebookClient

from cnnjax.train import RunDir

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"


def _outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if kind in o.get("data", {})]


def _text(cell):
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream"
    )


def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CNNJAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("CNNJAX_NOTEBOOK_RUNS", str(tmp_path))
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    # One extra cell, in memory only: which Python the kernel (and so every child) runs.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, if any cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert pathlib.Path(_text(code[-1]).strip()).resolve() == pathlib.Path(sys.executable).resolve()
    everything = "\n".join(_text(c) for c in code)
    # Not on Colab: no clone, no pip; this checkout is the repository.
    assert f"repository: {ROOT}" in everything
    assert "pip install" not in everything and "Cloning" not in everything
    # The kernel's children see the devices this process sees.
    devices = jax.devices()
    assert (
        f"JAX sees {len(devices)} x {devices[0].device_kind} ({devices[0].platform})" in everything
    )

    for name in ("lenet", "sweep"):
        assert (tmp_path / name / "learning_curves.png").stat().st_size > 0
        with RunDir(tmp_path / name, read_only=True) as run:
            data = run.read_info().data
        assert data["source"] == "bundled" and data["num_train"] == 256
    with RunDir(tmp_path / "sweep", read_only=True) as run:
        sweep = run.read_summary()
    assert len(sweep["test_accuracy"]) == 12 and sweep["trained_epochs"] == 1

    figures = sorted((tmp_path / "chapter6").glob("*.png"))
    assert figures, "chapter6.py drew no figures"
    # Both learning curves and every chapter figure are shown in the notebook.
    shown = sum(len(_outputs(c, "image/png")) for c in code)
    assert shown == 2 + len(figures)


def test_colab_notebook_does_not_set_up_a_tpu_node():
    # jax.tools.colab_tpu.setup_tpu() dialled the retired Colab TPU Node; on today's TPU runtimes
    # (one v5e chip on the VM) JAX finds the chip itself, and the call no longer helps.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "colab_tpu" not in code and "setup_tpu" not in code
