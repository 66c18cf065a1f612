"""The ``sparsecl`` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsecl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="learn Split-MNIST task by task in-process")
    demo.add_argument("--backbone", default="mlp:784-1000-1000")
    demo.add_argument("--density", type=float, default=0.1)
    demo.add_argument("--k", type=float, default=0.1)
    demo.add_argument("--epochs", type=int, default=2)
    demo.add_argument("--retrain-epochs", type=int, default=2)
    demo.add_argument("--train-limit", type=int, default=None,
                      help="use at most this many training examples per task")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from sparse_engine.config import TaskConfig
        from sparse_engine.demo import run_demo

        config = TaskConfig(density=args.density, k=args.k, epochs=args.epochs,
                            retrain_epochs=args.retrain_epochs)
        run_demo(args.backbone, config, args.train_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
