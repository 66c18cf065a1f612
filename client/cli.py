"""The ``sparsecl`` command line: run the server, add tasks, predict, list, evaluate, analyze."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparse_engine.tune import TuneReport


def _k(text: str) -> int | float | str | tuple[int | float | str, ...]:
    """--k: a count ('20'), a fraction ('0.1'), 'auto' (about 4·√units), or one per layer
    ('0.1,auto')."""
    values: list[int | float | str] = []
    for v in text.split(","):
        try:
            values.append(v if v == "auto" else float(v) if "." in v else int(v))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{v!r} is neither a count, a fraction nor 'auto'"
            ) from None
    return values[0] if len(values) == 1 else tuple(values)


def _pair(text: str) -> tuple[float, int | float | str | tuple[int | float | str, ...]]:
    """--tune-pairs: DENSITY[:K], K as --k takes it (default 'auto'): '0.05', '0.1:0.25',
    '0.2:20,auto'."""
    density, _, k = text.partition(":")
    try:
        return float(density), _k(k) if k else "auto"
    except ValueError:
        raise argparse.ArgumentTypeError(f"{density!r} is not a density") from None


def _per_layer(choices: tuple[str, ...]) -> Any:
    """A parser of one of ``choices``, or one per layer ('none,all'), as --reuse takes."""

    def parse(text: str) -> str | tuple[str, ...]:
        values = tuple(text.split(","))
        bad = [v for v in values if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{bad[0]!r} is not one of {', '.join(choices)} (one, or one per hidden layer)"
            )
        return values[0] if len(values) == 1 else values

    return parse


def _epochs(text: str) -> int | str:
    """--epochs, --retrain-epochs: a count ('3') or 'auto' (until validation plateaus)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor 'auto'") from None


def _floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers ('-1,0.1,1')."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None


def hyper_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per hyper-parameter of a task (sparse_engine.config.SETTINGS), None when unset."""
    from sparse_engine.config import SETTINGS

    group = parser.add_argument_group("hyper-parameters (unset: the defaults shown)")
    for s in SETTINGS.values():
        flag = "--" + s.name.replace("_", "-")
        allowed = f"; in {s.range.text}" if s.range else ""
        help = f"{s.help}{allowed} (default {s.default})".replace("%", "%%")  # argparse's %
        if s.kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        elif s.auto:
            group.add_argument(flag, type=_epochs, metavar="auto|N", help=help)
        elif s.kind is tuple and s.choices:
            metavar = "|".join(s.choices) + "[,...]"
            group.add_argument(flag, type=_per_layer(s.choices), metavar=metavar, help=help)
        else:
            kind = _k if s.kind is tuple else s.kind
            group.add_argument(flag, type=kind, choices=s.choices or None, help=help)


def hyper_values(args: argparse.Namespace) -> dict[str, Any]:
    """The hyper-parameters given on the command line (see ``hyper_flags``)."""
    from sparse_engine.config import SETTINGS

    return {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}


def serve_options(serve: argparse.ArgumentParser) -> None:
    from server.config import DEFAULT_DATA_DIR, DEFAULT_PORT, LIMITS, ROLES, ServerConfig
    from sparse_engine.config import BACKENDS, DEFAULT_BACKBONE, DEVICES

    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"0 = any free port (default {DEFAULT_PORT})"
    )
    serve.add_argument("--host", default=ServerConfig.host, help="interface to listen on")
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"embedded store: sqlite + artifacts live here (default ./{DEFAULT_DATA_DIR})",
    )
    serve.add_argument(
        "--tracking-uri", default=None, help="any MLflow tracking URI instead of the embedded store"
    )
    serve.add_argument(
        "--backbone",
        default=None,
        help=f"backbone of a new store (default {DEFAULT_BACKBONE}, an MLP for "
        "28×28 inputs); an existing store keeps its own",
    )
    serve.add_argument(
        "--device",
        default=ServerConfig.device,
        choices=DEVICES,
        help="where tasks train: auto = a CUDA GPU when there is one, else the CPU; cuda "
        "without a GPU stops the server at start. Committed tasks are served by the CPU "
        f"engine whatever the device (default {ServerConfig.device})",
    )
    scaling = serve.add_argument_group("scaling out (see README, Scaling out)")
    scaling.add_argument(
        "--role",
        default=ServerConfig.role,
        choices=ROLES,
        help="all: learn and serve (default); trainer: the same, as the store's one writer; "
        "inference: serve only, a read-only replica of --tracking-uri that picks up new tasks",
    )
    scaling.add_argument(
        "--poll-seconds",
        type=float,
        default=ServerConfig.poll_seconds,
        help="--role inference: look for newly committed tasks this often "
        f"(default {ServerConfig.poll_seconds:g})",
    )
    scaling.add_argument(
        "--lease-seconds",
        type=float,
        default=ServerConfig.lease_seconds,
        help="with --tracking-uri: the writer's lease on the store; a server killed without "
        f"releasing it blocks its successor this long (default {ServerConfig.lease_seconds:g})",
    )
    security = serve.add_argument_group("security (see README, Security)")
    security.add_argument("--tls-cert", type=Path, help="PEM certificate chain: turns TLS on")
    security.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca", type=Path, help="PEM CA: mutual TLS, clients need a cert it signed"
    )
    security.add_argument(
        "--tokens", type=Path, help="token file, one 'read|write|read,write TOKEN' per line"
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext on a non-loopback --host (refused otherwise)",
    )
    engine = serve.add_argument_group("inference engine (see README, Inference engine)")
    engine.add_argument(
        "--engine-threads",
        type=int,
        default=ServerConfig.engine_threads,
        help="threads per Predict (default: PyTorch's)",
    )
    engine.add_argument(
        "--interop-threads",
        type=int,
        default=ServerConfig.interop_threads,
        help="PyTorch inter-op threads (default: its own)",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="serve the Open Inference Protocol (KServe v2) over HTTP/REST on this port too "
        "(0 = any free port; default: gRPC only)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0 = any free port; "
        "default: none)",
    )
    engine.add_argument(
        "--engine-backend",
        default=ServerConfig.engine_backend,
        choices=BACKENDS,
        help="auto: the native C++ kernel for this CPU, else the torch.sparse fallback "
        f"(default {ServerConfig.engine_backend})",
    )
    limits = serve.add_argument_group("limits (see README, Operations)")
    for name, help in LIMITS.items():
        default = getattr(ServerConfig, name)
        limits.add_argument(
            "--" + name.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"{help} (default {default:g})",
        )
    environment_defaults(serve)


ENV_PREFIX = "SPARSECL_"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_name(dest: str) -> str:
    """The environment variable of an option: SPARSECL_ and its name, e.g. SPARSECL_MAX_BATCH."""
    return ENV_PREFIX + dest.upper()


def environment_defaults(parser: argparse.ArgumentParser) -> None:
    """Each option of ``parser`` takes its default from its environment variable when that
    is set (12-factor configuration); the command line still wins. A value that does not
    parse stops the command with the variable's name."""
    for action in parser._actions:
        value = os.environ.get(env_name(action.dest))
        if not action.option_strings or action.dest == "help" or value is None:
            continue
        try:
            if isinstance(action, argparse._StoreTrueAction):
                if value.lower() not in TRUE + FALSE:
                    raise ValueError(f"not one of {TRUE + FALSE}")
                default: Any = value.lower() in TRUE
            else:
                default = action.type(value) if callable(action.type) else value
                if action.choices is not None and default not in action.choices:
                    raise ValueError(f"not one of {tuple(action.choices)}")
        except ValueError as e:
            parser.error(f"{env_name(action.dest)}={value!r}: {e}")
        parser.set_defaults(**{action.dest: default})


def _store_options(store: argparse.ArgumentParser) -> None:
    from server.config import DEFAULT_DATA_DIR

    store_commands = store.add_subparsers(dest="store_command", required=True)
    check = store_commands.add_parser(
        "check",
        help="report each task: committed, failed or damaged (exit 0 healthy, 1 damaged, "
        "2 the store cannot be opened)",
    )
    where = check.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="embedded store's data dir"
    )
    where.add_argument("--tracking-uri", default=None, help="any MLflow tracking URI instead")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command. The options of ``serve`` and ``store`` come from the
    server's configuration, imported only when ``command`` names one of them: a client
    command (or ``--help``) never imports the server."""
    from sparse_engine.config import DEFAULT_BACKBONE

    from .client import CALL_TIMEOUT, DEFAULT_ADDRESS, LEARN_TIMEOUT

    parser = argparse.ArgumentParser(prog="sparsecl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server (embedded MLflow by default)")
    if command == "serve":
        serve_options(serve)

    def client_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument(
            "--address",
            default=DEFAULT_ADDRESS,
            help=f"server HOST:PORT (default {DEFAULT_ADDRESS})",
        )
        sub.add_argument(
            "--token",
            default=os.environ.get("SPARSECL_TOKEN"),
            help="bearer token (default: $SPARSECL_TOKEN)",
        )
        sub.add_argument("--tls-ca", type=Path, help="PEM CA that signed the server's cert: TLS")
        sub.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
        sub.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert")
        sub.add_argument(
            "--timeout",
            type=float,
            default=None,
            help=f"seconds the call may take ('inf': no limit; default {CALL_TIMEOUT:g}, or "
            f"{LEARN_TIMEOUT:g} for add-task and analyze, which train)",
        )
        return sub

    add = client_command("add-task", "upload a task from .npz files and follow its learning")
    add.add_argument("name")
    add.add_argument("--train", type=Path, required=True, help=".npz with x and y")
    add.add_argument(
        "--val",
        type=Path,
        default=None,
        help=".npz with x and y (default: hold out 10 %% of --train)",
    )
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    from sparse_engine.tune import CANDIDATES, TOLERANCE

    pairs = ", ".join(f"({d:g}, {k})" for d, k in CANDIDATES)
    add.add_argument(
        "--tune",
        action="store_true",
        help=f"first learn the task once per (density, k) pair: {pairs}, each scored on the "
        "validation split; keep the smallest density within --tune-tolerance of the best "
        "(costs one learn per pair; the chosen one is kept)",
    )
    add.add_argument(
        "--tune-tolerance",
        type=float,
        default=None,
        metavar="FRACTION",
        help=f"--tune: validation accuracy a smaller density may lose (default {TOLERANCE:g})",
    )
    add.add_argument(
        "--tune-pairs",
        type=_pair,
        nargs="+",
        default=None,
        metavar="DENSITY[:K]",
        help="--tune over these (density, k) pairs instead, 1 to 9 (K as --k takes it, "
        "default auto; e.g. 0.05 0.1:0.25 0.2:20,auto); implies --tune",
    )
    hyper_flags(add)
    predict = client_command(
        "predict", "predict labels (or scores) of one task, or, without NAME, infer the task"
    )
    predict.add_argument(
        "name",
        nargs="?",
        default=None,
        help="the task (default: task-free, each example's task inferred among the "
        "committed ones; prints task, label and confidence per example)",
    )
    predict.add_argument("--data", type=Path, required=True, help=".npz with x")
    predict.add_argument(
        "--out",
        type=Path,
        default=None,
        help="save a .npy here instead of printing one row per example (without NAME: an "
        ".npz holding task, label and confidence per example)",
    )
    predict.add_argument(
        "--scores",
        action="store_true",
        help="per-class scores (columns in the task's label order) instead",
    )

    health = client_command(
        "health", "the server's gRPC health: exit 0 SERVING, 1 not (yet), 2 unreachable"
    )
    health.add_argument(
        "--service", default="", help="a service's health (default: the server's as a whole)"
    )
    tasks = client_command("tasks", "list the tasks")
    tasks.add_argument("--json", action="store_true", help="machine-readable output")

    delete = client_command(
        "delete", "delete a committed task (no longer served; its MLflow run is kept)"
    )
    delete.add_argument("name")

    evaluate = client_command("evaluate", "accuracy of one task, or of all, on labelled data")
    evaluate.add_argument("name", nargs="?", default=None)
    evaluate.add_argument("--data", type=Path, required=True, help=".npz with x and y")
    evaluate.add_argument(
        "--reference",
        type=Path,
        help="JSON {task: accuracy learned alone on a fresh backbone}: adds each task's "
        "forward transfer (accuracy - alone) and FWT (their mean after the first task)",
    )

    analyze = client_command(
        "analyze", "analyse a committed task (weight-agnostic, layer robustness, noise)"
    )
    analyze.add_argument("analysis", choices=("weight-agnostic", "layer-robustness", "noise"))
    analyze.add_argument("name", help="a committed task")
    analyze.add_argument("--data", type=Path, required=True, help=".npz with x and y to evaluate")
    analyze.add_argument(
        "--train", type=Path, help="noise: .npz with x and y to train the dense comparison on"
    )
    analyze.add_argument(
        "--weights", type=_floats, help="weight-agnostic: shared weights, e.g. -1,-0.1,0.1,1"
    )
    analyze.add_argument(
        "--no-sign",
        action="store_true",
        help="weight-agnostic: every kept weight = w (default: w × sign of the trained weight)",
    )
    analyze.add_argument(
        "--noise-levels", type=_floats, help="noise: std levels × the inputs' std, e.g. 0,0.2,0.5"
    )
    analyze.add_argument("--epochs", type=int, help="noise: dense epochs (default: the task's)")
    analyze.add_argument("--draws", type=int, help="random draws averaged (default 3)")
    analyze.add_argument("--seed", type=int)
    analyze.add_argument("--json", action="store_true", help="machine-readable output")

    demo = commands.add_parser("demo", help="learn Split-MNIST task by task in-process")
    demo.add_argument("--backbone", default=DEFAULT_BACKBONE)
    demo.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use at most this many training examples per task",
    )
    hyper_flags(demo)

    backup = commands.add_parser(
        "backup", help="consistent snapshot of an embedded store's data dir (server may run)"
    )
    backup.add_argument("data_dir", type=Path, help="the data dir (mlflow.db + artifacts/)")
    backup.add_argument("dest", type=Path, help="a new or empty folder for the backup")
    backup.add_argument(
        "--tracking-uri", default=None, help="refused: back up a remote store with its own tools"
    )
    restore = commands.add_parser(
        "restore", help="restore a backup into a new or empty data dir, then `serve` it"
    )
    restore.add_argument("backup", type=Path, help="a folder written by `sparsecl backup`")
    restore.add_argument("data_dir", type=Path, help="a new or empty folder")
    store = commands.add_parser("store", help="inspect the task store without a server")
    if command == "store":
        _store_options(store)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from server.config import ServerConfig
    from server.main import run

    given = vars(args)  # the options of the fields of ServerConfig, of the same names
    fields = [f.name for f in dataclasses.fields(ServerConfig) if f.name in given]
    return run(ServerConfig(**{name: given[name] for name in fields}))


def _client(args: argparse.Namespace) -> Any:
    """A Client for the command's --address, --token and TLS options."""
    from .client import Client

    return Client(
        args.address,
        args.timeout,
        token=args.token,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def _add_task(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .client import Progress, Queued, TaskInfo
    from .convert import load_npz

    train = load_npz(args.train)
    val = load_npz(args.val) if args.val else None
    bar: Any = None
    info: TaskInfo | None = None
    report: TuneReport | None = None
    tune = {
        "tune": args.tune,
        "tune_tolerance": args.tune_tolerance,
        "tune_pairs": args.tune_pairs,
    }
    with _client(args) as client:
        try:
            for event in client.add_task(args.name, train, val, **tune, **hyper_values(args)):
                if isinstance(event, Progress) and event.tune is not None:
                    report = event.tune
                if isinstance(event, Queued) and event.position and not args.quiet:
                    print(f"queued behind {event.position} task(s)", file=sys.stderr)
                elif isinstance(event, Progress) and not args.quiet:
                    total = max(1, event.total_epochs * event.steps_per_epoch)
                    if bar is None:
                        bar = tqdm(total=total, desc=args.name, unit="step", file=sys.stderr)
                    done = (event.epoch - 1) * event.steps_per_epoch + event.step
                    if event.step == 0 and event.phase in ("train", "retrain"):
                        done = event.epoch * event.steps_per_epoch
                    if event.phase == "commit":
                        done = total
                    if event.phase == "tune":  # trials: the bar counts the chosen one's replay
                        done = 0
                    if event.tune is not None:
                        t = event.tune.trials[-1]
                        bar.write(
                            f"tune trial {len(event.tune.trials)}: density {t.density:g}, "
                            f"k {t.k}: val accuracy {t.val_accuracy:.4f} ({t.seconds:.1f} s)",
                            file=sys.stderr,
                        )
                    bar.n = min(total, max(bar.n, done))
                    bar.set_postfix(
                        phase=event.phase,
                        loss=f"{event.loss:.3f}",
                        acc=f"{event.accuracy:.3f}",
                        density=f"{event.density:.3f}",
                    )
                    bar.refresh()
                    if event.stopped:
                        bar.write(
                            f"{event.phase} stopped ({event.stopped}) after "
                            f"{event.phase_epochs} epoch(s), keeping epoch {event.kept_epoch}",
                            file=sys.stderr,
                        )
                elif isinstance(event, TaskInfo):
                    info = event
        finally:
            if bar is not None:
                bar.close()
    if info is None:
        raise RuntimeError("the server ended the upload without a task record")
    if report is not None:
        print(tune_text(report))
    print(
        f"task {info.name!r} committed: id {info.id}, classes {list(info.classes)}, "
        f"val accuracy {info.val_accuracy:.4f}, density "
        f"{sum(info.density) / len(info.density):.3f}, owns {info.weights_owned} weights "
        f"(learned as {info.learned_as}), "
        f"MLflow run {info.mlflow_run_id} (model {info.model_name} v{info.model_version})"
    )
    if info.reuse is not None:
        print(reuse_text(info.reuse))
    return 0


def reuse_text(reuse: Any) -> str:
    """What a task could read of earlier tasks and reads (a client.TaskReuse), in lines."""
    lines = [
        f"reuse {','.join(reuse.choice)}: reads "
        + (
            ", ".join(f"task {i}: {sum(w)} weights" for i, w in reuse.read_from.items())
            or "no earlier weight"
        )
    ]
    if reuse.baseline is not None:
        scores = ", ".join(f"task {i} {100 * a:.2f} %" for i, a in reuse.scores.items())
        chosen = ", ".join(map(str, reuse.chosen)) or "none"
        lines.append(
            f"similar: probe accuracy {scores} vs random features {100 * reuse.baseline:.2f} % "
            f"(margin {100 * (reuse.margin or 0):.1f} points): chose task(s) {chosen}"
        )
    return "\n".join(lines)


def _predict_task_free(args: argparse.Namespace, x: Any) -> int:
    """``sparsecl predict --data x.npz`` without a name: task, label and confidence."""
    import numpy as np

    if args.scores:
        print("sparsecl predict: --scores needs a task NAME", file=sys.stderr)
        return 2
    with _client(args) as client:
        inferred = client.predict(None, x)
    if args.out is not None:
        with args.out.open("wb") as f:  # np.savez would append .npz to another suffix
            np.savez(f, task=inferred.tasks, label=inferred.labels, confidence=inferred.confidence)
        print(
            f"saved task, label and confidence of {len(inferred.labels)} examples to {args.out}",
            file=sys.stderr,
        )
    else:
        for task, label, conf in zip(
            inferred.tasks, inferred.labels, inferred.confidence, strict=True
        ):
            print(f"{task}\t{label}\t{conf:.4f}")
    return 0


def tune_text(report: TuneReport) -> str:
    """A tune search's report for the terminal: one line per trial, the choice and cost."""
    lines = [f"tune: {len(report.trials)} trial(s), {report.seconds:.1f} s in all"]
    for i, t in enumerate(report.trials):
        mark = "  <- chosen" if i == report.chosen else ""
        k_units = ",".join(map(str, t.k_units))
        lines.append(
            f"  density {t.density:g}, k {t.k} ({k_units} units): val accuracy "
            f"{t.val_accuracy:.4f}, {t.seconds:.1f} s{mark}"
        )
    choice = report.choice
    lines.append(
        f"chose density {choice.density:g}, k {choice.k}: the smallest density within "
        f"{report.tolerance:g} of the best validation accuracy"
    )
    return "\n".join(lines)


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .convert import load_npz

    x, _ = load_npz(args.data, need_labels=False)
    if args.name is None:
        return _predict_task_free(args, x)
    with _client(args) as client:
        prediction = client.predict(args.name, x)
    result = prediction.scores if args.scores else prediction.labels
    if args.out is not None:
        np.save(args.out, result)
        print(
            f"saved {result.shape} {'scores' if args.scores else 'labels'} to {args.out}",
            file=sys.stderr,
        )
    elif args.scores:
        np.savetxt(sys.stdout, result, fmt="%.6g")
    else:
        np.savetxt(sys.stdout, result, fmt="%d")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.delete_task(args.name)
    info = result.task
    print(
        f"task {info.name!r} deleted: id {info.id}, {sum(result.freed_weights)} weights freed, "
        f"{sum(result.retired_weights)} kept frozen for the tasks reading them, MLflow run "
        f"{info.mlflow_run_id} kept (model {info.model_name} v{info.model_version}, tagged "
        "deleted)"
    )
    return 0


def _tasks(args: argparse.Namespace) -> int:
    import dataclasses

    with _client(args) as client:
        tasks = client.tasks()
    if args.json:
        rows = [
            dataclasses.asdict(t) | {"created": t.created.isoformat() if t.created else None}
            for t in tasks
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not tasks:
        print("no tasks yet")
        return 0
    print(
        f"{'id':>3}  {'name':<20} {'state':<10} {'classes':<16} {'val_acc':>7} "
        f"{'density':>7} {'owned':>9} {'learned':>9} {'plan':>9}  mlflow"
    )
    for t in tasks:
        density = f"{sum(t.density) / len(t.density):.3f}" if t.density else "-"
        acc = f"{t.val_accuracy:.4f}" if t.state == "committed" else "-"
        plan = f"{t.plan_bytes / 1e6:.2f} MB" if t.plan_bytes else "-"
        where = (
            f"{t.model_name} v{t.model_version} (run {t.mlflow_run_id})"
            if t.model_name
            else (t.mlflow_run_id or "") + (f"  {t.error}" if t.error else "")
        )
        classes = ",".join(map(str, t.classes)) or "-"
        print(
            f"{t.id or '-':>3}  {t.name:<20} {t.state:<10} {classes:<16} {acc:>7} "
            f"{density:>7} {t.weights_owned:>9} {t.learned_as or '-':>9} {plan:>9}  {where}"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .convert import load_npz

    x, y = load_npz(args.data)
    with _client(args) as client:
        results = client.evaluate(x, y, args.name)
    reference = json.loads(args.reference.read_text()) if args.reference else {}
    for r in results:
        alone = reference.get(r.task)
        transfer = (
            f"  transfer {100 * (r.accuracy - alone):+.2f} points" if alone is not None else ""
        )
        print(f"{r.task:<24} accuracy {r.accuracy:.4f}  ({r.examples} examples){transfer}")
    if len(results) > 1:
        print(f"{'mean':<24} accuracy {sum(r.accuracy for r in results) / len(results):.4f}")
    if len(results) > 1 and all(r.task in reference for r in results):
        from sparse_engine.metrics import forward_transfer

        alone = [float(reference[r.task]) for r in results]
        fwt = forward_transfer([r.accuracy for r in results], alone)[1]
        print(f"{'FWT':<24} {100 * fwt:+.2f} points (tasks after the first, in id order)")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    import dataclasses

    from .convert import load_npz

    data = load_npz(args.data)
    train = load_npz(args.train) if args.train else None
    with _client(args) as client:
        result = client.analyze(
            args.name,
            args.analysis,
            data,
            train=train,
            weights=args.weights,
            keep_sign=False if args.no_sign else None,
            noise_levels=args.noise_levels,
            epochs=args.epochs,
            draws=args.draws,
            seed=args.seed,
        )
    print(json.dumps(dataclasses.asdict(result), indent=2) if args.json else result.format())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sparse_engine.config import TaskConfig
    from sparse_engine.demo import run_demo

    run_demo(args.backbone, TaskConfig(**hyper_values(args)), args.train_limit)
    return 0


def _backup(args: argparse.Namespace) -> int:
    from server.datadir import DataDirError, backup
    from server.store import redact

    if args.tracking_uri:  # main() prints DataDirError (a ValueError) and exits 2
        raise DataDirError(
            f"{redact(args.tracking_uri)} is a remote MLflow store: back it up with its "
            "database's own tools (pg_dump, mysqldump, ...) and its artifact store's (bucket "
            "versioning or copy); `sparsecl backup` snapshots an embedded store's data dir only"
        )
    backup(args.data_dir, args.dest)
    print(f"backed up {args.data_dir} to {args.dest}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from server.datadir import restore

    restore(args.backup, args.data_dir)  # main() prints a DataDirError and exits 2
    print(f"restored {args.backup} into {args.data_dir}: serve it with --data-dir {args.data_dir}")
    return 0


def _store(args: argparse.Namespace) -> int:
    import logging

    from server.config import ServerConfig
    from server.storecheck import UNUSABLE, check

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    config = ServerConfig(data_dir=args.data_dir, tracking_uri=args.tracking_uri)
    status, lines = check(config.resolved_tracking_uri, config.artifact_root, config.experiment)
    if status == UNUSABLE:
        print(f"sparsecl store check: error: {lines[0]}", file=sys.stderr)
    else:
        print("\n".join(lines))
    return status


def _health(args: argparse.Namespace) -> int:
    """For container health checks and scripts: 0 SERVING, 1 not serving (or no such
    service), 2 no answer."""
    import grpc

    from .client import ClientError

    with _client(args) as client:
        try:
            status = client.health(args.service)
        except ClientError as e:
            print(f"{args.address}: {e.code.name}: {e.message}", file=sys.stderr)
            return 1 if e.code == grpc.StatusCode.NOT_FOUND else 2
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


COMMANDS = {
    "serve": _serve,
    "health": _health,
    "add-task": _add_task,
    "predict": _predict,
    "tasks": _tasks,
    "delete": _delete,
    "evaluate": _evaluate,
    "analyze": _analyze,
    "demo": _demo,
    "backup": _backup,
    "restore": _restore,
    "store": _store,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; client errors print the server's status and message, exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    from .client import ClientError

    try:
        return COMMANDS[args.command](args)
    except ClientError as e:
        print(f"sparsecl {args.command}: error: {e.code.name}: {e.message}", file=sys.stderr)
        return 1
    except (OSError, KeyError, ValueError) as e:
        print(f"sparsecl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
