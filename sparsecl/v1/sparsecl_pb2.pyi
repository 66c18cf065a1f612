from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]

class Split(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_UNSPECIFIED: _ClassVar[Split]
    SPLIT_TRAIN: _ClassVar[Split]
    SPLIT_VAL: _ClassVar[Split]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_TRAINING: _ClassVar[TaskState]
    TASK_STATE_COMMITTED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_DAMAGED: _ClassVar[TaskState]
    TASK_STATE_DELETED: _ClassVar[TaskState]

class Analysis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANALYSIS_UNSPECIFIED: _ClassVar[Analysis]
    ANALYSIS_WEIGHT_AGNOSTIC: _ClassVar[Analysis]
    ANALYSIS_LAYER_ROBUSTNESS: _ClassVar[Analysis]
    ANALYSIS_NOISE: _ClassVar[Analysis]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_UINT8: DType
DTYPE_INT64: DType
DTYPE_INT32: DType
DTYPE_FLOAT64: DType
SPLIT_UNSPECIFIED: Split
SPLIT_TRAIN: Split
SPLIT_VAL: Split
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_TRAINING: TaskState
TASK_STATE_COMMITTED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_DAMAGED: TaskState
TASK_STATE_DELETED: TaskState
ANALYSIS_UNSPECIFIED: Analysis
ANALYSIS_WEIGHT_AGNOSTIC: Analysis
ANALYSIS_LAYER_ROBUSTNESS: Analysis
ANALYSIS_NOISE: Analysis

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class KSize(_message.Message):
    __slots__ = ("count", "fraction")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    count: int
    fraction: float
    def __init__(self, count: _Optional[int] = ..., fraction: _Optional[float] = ...) -> None: ...

class HyperParameters(_message.Message):
    __slots__ = ("density", "k", "epochs", "retrain_epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "saliency", "prune_rounds", "retrain", "saliency_batches", "boost_strength", "boost_strength_factor", "duty_cycle_period", "seed", "rewind_epoch", "method", "supermask_train_head", "rigl_interval", "rigl_drop_fraction", "structure", "patience", "max_epochs", "reuse")
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SALIENCY_FIELD_NUMBER: _ClassVar[int]
    PRUNE_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_FIELD_NUMBER: _ClassVar[int]
    SALIENCY_BATCHES_FIELD_NUMBER: _ClassVar[int]
    BOOST_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    BOOST_STRENGTH_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DUTY_CYCLE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REWIND_EPOCH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SUPERMASK_TRAIN_HEAD_FIELD_NUMBER: _ClassVar[int]
    RIGL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    RIGL_DROP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    STRUCTURE_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    density: float
    k: _containers.RepeatedCompositeFieldContainer[KSize]
    epochs: int
    retrain_epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    saliency: str
    prune_rounds: int
    retrain: str
    saliency_batches: int
    boost_strength: float
    boost_strength_factor: float
    duty_cycle_period: int
    seed: int
    rewind_epoch: int
    method: str
    supermask_train_head: bool
    rigl_interval: int
    rigl_drop_fraction: float
    structure: str
    patience: int
    max_epochs: int
    reuse: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, density: _Optional[float] = ..., k: _Optional[_Iterable[_Union[KSize, _Mapping]]] = ..., epochs: _Optional[int] = ..., retrain_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., optimizer: _Optional[str] = ..., momentum: _Optional[float] = ..., weight_decay: _Optional[float] = ..., saliency: _Optional[str] = ..., prune_rounds: _Optional[int] = ..., retrain: _Optional[str] = ..., saliency_batches: _Optional[int] = ..., boost_strength: _Optional[float] = ..., boost_strength_factor: _Optional[float] = ..., duty_cycle_period: _Optional[int] = ..., seed: _Optional[int] = ..., rewind_epoch: _Optional[int] = ..., method: _Optional[str] = ..., supermask_train_head: bool = ..., rigl_interval: _Optional[int] = ..., rigl_drop_fraction: _Optional[float] = ..., structure: _Optional[str] = ..., patience: _Optional[int] = ..., max_epochs: _Optional[int] = ..., reuse: _Optional[_Iterable[str]] = ...) -> None: ...

class AddTaskHeader(_message.Message):
    __slots__ = ("name", "hyper_parameters", "labels", "train_examples", "val_examples", "tune")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HYPER_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    VAL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TUNE_FIELD_NUMBER: _ClassVar[int]
    name: str
    hyper_parameters: HyperParameters
    labels: _containers.RepeatedScalarFieldContainer[int]
    train_examples: int
    val_examples: int
    tune: TuneRequest
    def __init__(self, name: _Optional[str] = ..., hyper_parameters: _Optional[_Union[HyperParameters, _Mapping]] = ..., labels: _Optional[_Iterable[int]] = ..., train_examples: _Optional[int] = ..., val_examples: _Optional[int] = ..., tune: _Optional[_Union[TuneRequest, _Mapping]] = ...) -> None: ...

class TuneRequest(_message.Message):
    __slots__ = ("tolerance", "pairs")
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    tolerance: float
    pairs: _containers.RepeatedCompositeFieldContainer[TunePair]
    def __init__(self, tolerance: _Optional[float] = ..., pairs: _Optional[_Iterable[_Union[TunePair, _Mapping]]] = ...) -> None: ...

class TunePair(_message.Message):
    __slots__ = ("density", "k")
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    density: float
    k: _containers.RepeatedCompositeFieldContainer[KSize]
    def __init__(self, density: _Optional[float] = ..., k: _Optional[_Iterable[_Union[KSize, _Mapping]]] = ...) -> None: ...

class TuneTrial(_message.Message):
    __slots__ = ("density", "k", "k_units", "val_accuracy", "seconds", "error")
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    K_UNITS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    density: float
    k: _containers.RepeatedCompositeFieldContainer[KSize]
    k_units: _containers.RepeatedScalarFieldContainer[int]
    val_accuracy: float
    seconds: float
    error: str
    def __init__(self, density: _Optional[float] = ..., k: _Optional[_Iterable[_Union[KSize, _Mapping]]] = ..., k_units: _Optional[_Iterable[int]] = ..., val_accuracy: _Optional[float] = ..., seconds: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class TuneReport(_message.Message):
    __slots__ = ("trials", "chosen", "tolerance", "seconds")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[TuneTrial]
    chosen: int
    tolerance: float
    seconds: float
    def __init__(self, trials: _Optional[_Iterable[_Union[TuneTrial, _Mapping]]] = ..., chosen: _Optional[int] = ..., tolerance: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class ExampleChunk(_message.Message):
    __slots__ = ("split", "x", "y")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    split: Split
    x: Tensor
    y: Tensor
    def __init__(self, split: _Optional[_Union[Split, str]] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., y: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class AddTaskRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: AddTaskHeader
    chunk: ExampleChunk
    def __init__(self, header: _Optional[_Union[AddTaskHeader, _Mapping]] = ..., chunk: _Optional[_Union[ExampleChunk, _Mapping]] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "epoch", "step", "loss", "accuracy", "density", "free_capacity", "total_epochs", "steps_per_epoch", "stopped", "phase_epochs", "kept_epoch", "tune")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    FREE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    PHASE_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    KEPT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TUNE_FIELD_NUMBER: _ClassVar[int]
    phase: str
    epoch: int
    step: int
    loss: float
    accuracy: float
    density: float
    free_capacity: float
    total_epochs: int
    steps_per_epoch: int
    stopped: str
    phase_epochs: int
    kept_epoch: int
    tune: TuneReport
    def __init__(self, phase: _Optional[str] = ..., epoch: _Optional[int] = ..., step: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., density: _Optional[float] = ..., free_capacity: _Optional[float] = ..., total_epochs: _Optional[int] = ..., steps_per_epoch: _Optional[int] = ..., stopped: _Optional[str] = ..., phase_epochs: _Optional[int] = ..., kept_epoch: _Optional[int] = ..., tune: _Optional[_Union[TuneReport, _Mapping]] = ...) -> None: ...

class AddTaskEvent(_message.Message):
    __slots__ = ("queued", "progress", "task")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    queued: Queued
    progress: Progress
    task: TaskInfo
    def __init__(self, queued: _Optional[_Union[Queued, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., task: _Optional[_Union[TaskInfo, _Mapping]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("name", "state", "id", "classes", "density", "weights_owned", "weights_read", "val_accuracy", "free_capacity", "mlflow_run_id", "model_name", "model_version", "created_unix_ms", "seconds", "error", "hyper_parameters", "plan_bytes", "reuse", "learned_as")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_OWNED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_READ_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FREE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HYPER_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PLAN_BYTES_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    LEARNED_AS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: TaskState
    id: int
    classes: _containers.RepeatedScalarFieldContainer[int]
    density: _containers.RepeatedScalarFieldContainer[float]
    weights_owned: int
    weights_read: int
    val_accuracy: float
    free_capacity: _containers.RepeatedScalarFieldContainer[float]
    mlflow_run_id: str
    model_name: str
    model_version: str
    created_unix_ms: int
    seconds: float
    error: str
    hyper_parameters: HyperParameters
    plan_bytes: int
    reuse: TaskReuse
    learned_as: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., id: _Optional[int] = ..., classes: _Optional[_Iterable[int]] = ..., density: _Optional[_Iterable[float]] = ..., weights_owned: _Optional[int] = ..., weights_read: _Optional[int] = ..., val_accuracy: _Optional[float] = ..., free_capacity: _Optional[_Iterable[float]] = ..., mlflow_run_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., seconds: _Optional[float] = ..., error: _Optional[str] = ..., hyper_parameters: _Optional[_Union[HyperParameters, _Mapping]] = ..., plan_bytes: _Optional[int] = ..., reuse: _Optional[_Union[TaskReuse, _Mapping]] = ..., learned_as: _Optional[str] = ...) -> None: ...

class TaskReuse(_message.Message):
    __slots__ = ("choice", "chosen", "baseline", "scores", "margin", "read_from", "claimed")
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    READ_FROM_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    choice: _containers.RepeatedScalarFieldContainer[str]
    chosen: _containers.RepeatedScalarFieldContainer[int]
    baseline: float
    scores: _containers.RepeatedCompositeFieldContainer[ReuseScore]
    margin: float
    read_from: _containers.RepeatedCompositeFieldContainer[ReadFrom]
    claimed: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, choice: _Optional[_Iterable[str]] = ..., chosen: _Optional[_Iterable[int]] = ..., baseline: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[ReuseScore, _Mapping]]] = ..., margin: _Optional[float] = ..., read_from: _Optional[_Iterable[_Union[ReadFrom, _Mapping]]] = ..., claimed: _Optional[_Iterable[int]] = ...) -> None: ...

class ReuseScore(_message.Message):
    __slots__ = ("task_id", "accuracy")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    accuracy: float
    def __init__(self, task_id: _Optional[int] = ..., accuracy: _Optional[float] = ...) -> None: ...

class ReadFrom(_message.Message):
    __slots__ = ("task_id", "weights")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    weights: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task_id: _Optional[int] = ..., weights: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("task", "x")
    TASK_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    task: str
    x: Tensor
    def __init__(self, task: _Optional[str] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("scores", "labels", "classes", "tasks", "confidence", "task_probs", "task_names", "rule")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TASK_PROBS_FIELD_NUMBER: _ClassVar[int]
    TASK_NAMES_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    scores: Tensor
    labels: Tensor
    classes: _containers.RepeatedScalarFieldContainer[int]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    confidence: Tensor
    task_probs: Tensor
    task_names: _containers.RepeatedScalarFieldContainer[str]
    rule: str
    def __init__(self, scores: _Optional[_Union[Tensor, _Mapping]] = ..., labels: _Optional[_Union[Tensor, _Mapping]] = ..., classes: _Optional[_Iterable[int]] = ..., tasks: _Optional[_Iterable[str]] = ..., confidence: _Optional[_Union[Tensor, _Mapping]] = ..., task_probs: _Optional[_Union[Tensor, _Mapping]] = ..., task_names: _Optional[_Iterable[str]] = ..., rule: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTaskRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTaskResponse(_message.Message):
    __slots__ = ("task", "freed_weights", "retired_weights", "free_capacity")
    TASK_FIELD_NUMBER: _ClassVar[int]
    FREED_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    RETIRED_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FREE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    task: TaskInfo
    freed_weights: _containers.RepeatedScalarFieldContainer[int]
    retired_weights: _containers.RepeatedScalarFieldContainer[int]
    free_capacity: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, task: _Optional[_Union[TaskInfo, _Mapping]] = ..., freed_weights: _Optional[_Iterable[int]] = ..., retired_weights: _Optional[_Iterable[int]] = ..., free_capacity: _Optional[_Iterable[float]] = ...) -> None: ...

class GetBackboneRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LayerInfo(_message.Message):
    __slots__ = ("kind", "weight_shape", "out_shape", "weights", "free_weights", "free_capacity")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FREE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FREE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    kind: str
    weight_shape: _containers.RepeatedScalarFieldContainer[int]
    out_shape: _containers.RepeatedScalarFieldContainer[int]
    weights: int
    free_weights: int
    free_capacity: float
    def __init__(self, kind: _Optional[str] = ..., weight_shape: _Optional[_Iterable[int]] = ..., out_shape: _Optional[_Iterable[int]] = ..., weights: _Optional[int] = ..., free_weights: _Optional[int] = ..., free_capacity: _Optional[float] = ...) -> None: ...

class BackboneInfo(_message.Message):
    __slots__ = ("spec", "seed", "input_shape", "layers", "free_capacity", "tasks", "max_tasks", "tracking_uri", "experiment_id", "engine")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    FREE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    TRACKING_URI_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    spec: str
    seed: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerInfo]
    free_capacity: float
    tasks: int
    max_tasks: int
    tracking_uri: str
    experiment_id: str
    engine: EngineInfo
    def __init__(self, spec: _Optional[str] = ..., seed: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[_Union[LayerInfo, _Mapping]]] = ..., free_capacity: _Optional[float] = ..., tasks: _Optional[int] = ..., max_tasks: _Optional[int] = ..., tracking_uri: _Optional[str] = ..., experiment_id: _Optional[str] = ..., engine: _Optional[_Union[EngineInfo, _Mapping]] = ...) -> None: ...

class EngineInfo(_message.Message):
    __slots__ = ("backend", "isa", "warning")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ISA_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    backend: str
    isa: str
    warning: str
    def __init__(self, backend: _Optional[str] = ..., isa: _Optional[str] = ..., warning: _Optional[str] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("task", "x", "y")
    TASK_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    task: str
    x: Tensor
    y: Tensor
    def __init__(self, task: _Optional[str] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., y: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class TaskAccuracy(_message.Message):
    __slots__ = ("task", "accuracy", "examples")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    task: str
    accuracy: float
    examples: int
    def __init__(self, task: _Optional[str] = ..., accuracy: _Optional[float] = ..., examples: _Optional[int] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskAccuracy]
    def __init__(self, results: _Optional[_Iterable[_Union[TaskAccuracy, _Mapping]]] = ...) -> None: ...

class AnalyzeRequest(_message.Message):
    __slots__ = ("task", "analysis", "x", "y", "train_x", "train_y", "weights", "keep_sign", "noise_levels", "epochs", "draws", "seed")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    TRAIN_X_FIELD_NUMBER: _ClassVar[int]
    TRAIN_Y_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    KEEP_SIGN_FIELD_NUMBER: _ClassVar[int]
    NOISE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    task: str
    analysis: Analysis
    x: Tensor
    y: Tensor
    train_x: Tensor
    train_y: Tensor
    weights: _containers.RepeatedScalarFieldContainer[float]
    keep_sign: bool
    noise_levels: _containers.RepeatedScalarFieldContainer[float]
    epochs: int
    draws: int
    seed: int
    def __init__(self, task: _Optional[str] = ..., analysis: _Optional[_Union[Analysis, str]] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., y: _Optional[_Union[Tensor, _Mapping]] = ..., train_x: _Optional[_Union[Tensor, _Mapping]] = ..., train_y: _Optional[_Union[Tensor, _Mapping]] = ..., weights: _Optional[_Iterable[float]] = ..., keep_sign: bool = ..., noise_levels: _Optional[_Iterable[float]] = ..., epochs: _Optional[int] = ..., draws: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class AnalysisRow(_message.Message):
    __slots__ = ("label", "values")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    label: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class AnalysisSummary(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("task", "analysis", "columns", "rows", "summary", "examples", "mlflow_run_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    task: str
    analysis: Analysis
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[AnalysisRow]
    summary: _containers.RepeatedCompositeFieldContainer[AnalysisSummary]
    examples: int
    mlflow_run_id: str
    def __init__(self, task: _Optional[str] = ..., analysis: _Optional[_Union[Analysis, str]] = ..., columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[AnalysisRow, _Mapping]]] = ..., summary: _Optional[_Iterable[_Union[AnalysisSummary, _Mapping]]] = ..., examples: _Optional[int] = ..., mlflow_run_id: _Optional[str] = ...) -> None: ...
