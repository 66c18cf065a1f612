"""The wire form of a task's hyper-parameters: a ``sparsecl.v1.HyperParameters`` message to and
from a dict by field name, next to the stubs so that the server and the client share one
implementation. The fields are those of ``sparse_engine.config.TaskConfig`` (a test checks
that the two agree); ``k`` travels as KSize values: a count stays an int, a fraction a float,
one per hidden layer a tuple, "auto" a count of ``AUTO_K`` (-1); an epoch count that may be
"auto" (``Setting.auto``: epochs, retrain_epochs) travels as ``AUTO_EPOCHS`` (-1) for auto
(the proto documents both); a choice per hidden layer (reuse) as a repeated string."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Mapping
from typing import Any

from sparse_engine.config import AUTO, SETTINGS
from sparsecl.v1 import sparsecl_pb2 as pb

NAMES: tuple[str, ...] = tuple(f.name for f in pb.HyperParameters.DESCRIPTOR.fields)
AUTO_EPOCHS = -1  # "auto" of an epoch count on the wire
AUTO_K = -1  # "auto" of a k-WTA size on the wire: KSize(count=-1)
AUTO_NAMES = frozenset(s.name for s in SETTINGS.values() if s.auto)
# one choice, or one per hidden layer (reuse): a repeated string on the wire
PER_LAYER_CHOICES = frozenset(s.name for s in SETTINGS.values() if s.kind is tuple and s.choices)


def message(values: Mapping[str, Any]) -> pb.HyperParameters:
    """The message of ``values`` (None leaves a field unset: the server's default applies).

    Raises TypeError naming an unknown hyper-parameter, as a call with an unknown keyword."""
    unknown = [name for name in values if name not in NAMES]
    if unknown:
        close = difflib.get_close_matches(unknown[0], NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(
            f"unknown hyper-parameter {unknown[0]!r}{hint}; the hyper-parameters are "
            + ", ".join(NAMES)
        )
    hp = pb.HyperParameters()
    for name, value in values.items():
        if value is None:
            continue
        if name in AUTO_NAMES and value == AUTO:
            setattr(hp, name, AUTO_EPOCHS)
            continue
        if name in PER_LAYER_CHOICES:
            hp.reuse.extend(value if isinstance(value, tuple | list) else (value,))
            continue
        if name != "k":
            setattr(hp, name, value)
            continue
        for v in value if isinstance(value, tuple | list) else (value,):
            if v == AUTO:
                hp.k.append(pb.KSize(count=AUTO_K))
            elif isinstance(v, numbers.Integral):
                hp.k.append(pb.KSize(count=int(v)))
            else:
                hp.k.append(pb.KSize(fraction=float(v)))
    return hp


def values(hp: pb.HyperParameters) -> dict[str, Any]:
    """The fields set in ``hp``, by name (k: one value, or a tuple of one per layer)."""
    found: dict[str, Any] = {
        f.name: v for f, v in hp.ListFields() if f.name != "k" and f.name not in PER_LAYER_CHOICES
    }
    for name in PER_LAYER_CHOICES:
        chosen = tuple(getattr(hp, name))
        if chosen:
            found[name] = chosen[0] if len(chosen) == 1 else chosen
    for name in AUTO_NAMES & found.keys():
        if found[name] == AUTO_EPOCHS:
            found[name] = AUTO
    ks = tuple(
        (AUTO if k.count == AUTO_K else k.count) if k.WhichOneof("size") == "count" else k.fraction
        for k in hp.k
    )
    if ks:
        found["k"] = ks[0] if len(ks) == 1 else ks
    return found
