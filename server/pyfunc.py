"""Each committed task as an MLflow model: ``mlflow.pyfunc.load_model("models:/<experiment>.
<task>/<version>")`` and ``mlflow models serve`` run it with sparsecl's own engine.

The model is the run's ``task/`` directory, which the registered model version already
points at: next to the committed ``state.safetensors`` (the task's own state, unchanged)
``save`` adds ``MLmodel`` (flavour ``python_function``, loader module ``server.pyfunc``,
signature, input example) and ``data/sparsecl/weights.safetensors``, the backbone values
at the task's mask positions (``sparse_engine.standalone``), since a task's mask also reads
weights that earlier tasks own. Loading needs an environment with sparsecl installed (the
server's: ``mlflow models serve --env-manager local``).

Input: N × the backbone's input features, float32 (an ndarray, a DataFrame, or JSON
``{"inputs": [[...]]}``; the signature refuses uint8: scale pixels by 1/255 first, as
``Predict`` does, ``sparse_engine.data.as_inputs``). Output: the scores (N × classes,
float32), bit for bit ``Predict``'s for the same batch; with ``params={"output": "label"}``
the labels (int64, the task's own label values).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparse_engine.backbone import BackboneSpec
from sparse_engine.standalone import StandaloneTask

WEIGHTS = "weights.safetensors"
STATE = "state.safetensors"  # the committed task state, in the model's root (the run's task/)
DATA = "sparsecl"  # the model's data directory: data/sparsecl/
OUTPUTS = ("scores", "label")


class TaskModel:
    """What ``mlflow.pyfunc.load_model`` returns the inner model of: one task's engine."""

    def __init__(self, task: StandaloneTask) -> None:
        self.task = task

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """Scores (default) or labels (``params={"output": "label"}``) for ``data``."""
        output = str((params or {}).get("output", "scores"))
        if output not in OUTPUTS:
            raise ValueError(f"params output must be one of {OUTPUTS}, got {output!r}")
        array = data.to_numpy() if hasattr(data, "to_numpy") else np.asarray(data)
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        logits = self.task.logits(x)
        if output == "label":
            classes = np.asarray(self.task.classes, dtype=np.int64)
            return classes[logits.argmax(1).numpy()]
        return logits.numpy()


def _load_pyfunc(data_path: str) -> TaskModel:
    """MLflow's entry point for the loader module: ``data_path`` is ``<model>/data/sparsecl``."""
    data = Path(data_path)
    state = (data.parent.parent / STATE).read_bytes()
    return TaskModel(StandaloneTask(state, (data / WEIGHTS).read_bytes()))


def save(path: Path, spec: BackboneSpec, classes: int, weights: bytes) -> None:
    """Write the MLflow model files of a task into the new directory ``path``: all but the
    task's state, which its run's ``task/`` already holds and the files are copied beside."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    features = int(np.prod(spec.input_shape))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]),
        params=ParamSchema([ParamSpec("output", "string", "scores")]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / DATA
        data.mkdir()
        (data / WEIGHTS).write_bytes(weights)
        mlflow.pyfunc.save_model(
            str(path),
            loader_module=__name__,
            data_path=str(data),
            signature=signature,
            input_example=np.zeros((2, features), dtype=np.float32),
            pip_requirements=["sparsecl"],
        )
