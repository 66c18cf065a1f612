"""Compile a committed task into the engine's plan: only the weights the task reads.

A plan holds, per layer, the task's masked weights in the layout its input calls for
(see native/forward.cpp), its bias and its frozen k-WTA state; then the head. The linear
layers' arrays are views into one ``PackedNet`` that the engine hands to a single kernel
call for the whole network, so packing costs no memory. It depends
only on frozen values (the task's mask, biases, k-WTA state, head, and backbone weights
the mask covers, which no later task may write), so it never needs rebuilding while the
task exists.

A task pruned by whole units (``structure="units"``) is compacted first: each layer keeps
only its kept rows and the columns of the previous layer's kept units (and the head only
its kept features), so the engine runs the smaller net, stored dense where its density
reaches ``DENSE_FROM``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .backbone import BackboneSpec, LayerSpec
from .kwta import KWinnersState, expand_units, resolve_k
from .task import Task

LayerFormat = Literal["conv", "input_major", "output_major", "dense_rows"]

# Weight density from which a layer is stored dense: then Wᵀ takes no more memory than
# CSR values + indices, and dense kernels beat sparse ones.
DENSE_FROM = 1 / 3
# Input activation density below which a linear layer is laid out input-major (its
# active inputs index their rows); at or above it, output-major suits a dense input.
SPARSE_INPUT_BELOW = 0.5
# Largest layer side whose column indices are stored as uint16 (half the index bytes).
INDEX16_MAX = 1 << 16

# Format codes and the columns of ``PackedNet.meta`` (the native kernel reads these).
OUTPUT_MAJOR, INPUT_MAJOR, DENSE_ROWS = 0, 1, 2
FORMAT_CODE = {"output_major": OUTPUT_MAJOR, "input_major": INPUT_MAJOR, "dense_rows": DENSE_ROWS}
(
    M_FORMAT,
    M_IN,
    M_OUT,
    M_K,
    M_VALUES,
    M_INDICES,
    M_INDPTR,
    M_UNITS,
    M_T_VALUES,  # the layer's input-major copy (see PackedNet), offsets as above
    M_T_INDICES,
    M_T_INDPTR,
    M_SCATTER_BELOW,  # non-zero inputs below which a sample scatters the copy; 0: no copy
    M_COLS,
) = range(13)


@dataclass(frozen=True)
class PlanMemory:
    """Bytes one plan holds, and the budget: 1.5 × a plain CSR of its non-zero weights."""

    nnz: int  # non-zero weights read by the task, head included
    value_bytes: int
    index_bytes: int
    other_bytes: int  # biases, boost factors, head bias, layer table
    csr_bytes: int  # nnz × 4 + int32 column indices + int64 row pointers (head: dense)

    @property
    def weight_bytes(self) -> int:
        """Values and indices: what grows with the weights the task reads."""
        return self.value_bytes + self.index_bytes

    @property
    def total_bytes(self) -> int:
        return self.value_bytes + self.index_bytes + self.other_bytes

    @property
    def bound_bytes(self) -> int:
        return int(1.5 * self.csr_bytes)


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One compiled layer: weights in ``format``, bias, its k-WTA state, k and boost factors.

    ``values``/``indices``/``indptr`` are: CSR of W (output-major), CSR of Wᵀ
    (input-major), dense Wᵀ with empty index arrays (dense_rows), or the non-zero values
    and their flat positions in the C_out×C_in×3×3 kernel (conv).
    """

    format: LayerFormat
    layer: LayerSpec
    kwta: KWinnersState  # restricted to the layer's kept units, as the layer is
    k: int
    boost: np.ndarray  # float32, units: kwta's boost factors, for the native kernel
    bias: np.ndarray  # float32, out features or channels
    values: np.ndarray
    indices: np.ndarray  # uint16 or uint32, the same for all linear layers (int32 for conv)
    indptr: np.ndarray  # uint32
    nnz: int

    @property
    def n_in(self) -> int:
        return self.layer.fan_in

    @property
    def units(self) -> int:
        return self.layer.units

    def conv_weight(self) -> Tensor:
        """The dense masked conv kernel, rebuilt from the non-zeros (a few µs, never stored)."""
        flat = torch.zeros(self.layer.numel)
        flat[torch.from_numpy(self.indices).long()] = torch.from_numpy(self.values)
        return flat.reshape(self.layer.weight_shape)


@dataclass(frozen=True, eq=False)
class PackedNet:
    """The linear layers of a plan in flat arrays, for the native kernel.

    Row l of ``meta`` (int64) holds linear layer l's format code, fan-in, units, k and its
    offsets into ``values``, ``indices``, ``indptr`` and ``bias``/``boost`` (columns
    ``M_*``). Row pointers are relative to the layer's own ``values``/``indices``.

    The first layer of an MLP reads the network's input, dense or not: it is output-major,
    and also carries an input-major copy (``M_T_*``, after every layer's own arrays) when
    the plan stays within its memory budget with it, so that the one-sample kernel scatters
    the rows of a sample's non-zero inputs when they are fewer than ``M_SCATTER_BELOW``
    (real images are mostly background: about 19 % of MNIST's pixels are non-zero).
    """

    meta: np.ndarray
    values: np.ndarray  # float32
    indices: np.ndarray  # uint16 or uint32
    indptr: np.ndarray  # uint32
    bias: np.ndarray  # float32
    boost: np.ndarray  # float32


@dataclass(frozen=True, eq=False)
class Plan:
    """A task compiled for inference: its layers, its head (stored as Wᵀ) and memory use."""

    name: str
    spec: BackboneSpec
    layers: tuple[LayerPlan, ...]
    head_weight_t: np.ndarray  # float32, features × classes
    head_bias: np.ndarray
    memory: PlanMemory
    net: PackedNet  # the linear layers (views of the same arrays as ``layers``)

    @cached_property
    def n_conv(self) -> int:
        return sum(1 for layer in self.layers if layer.format == "conv")


def boost_factors(state: KWinnersState, units: int) -> np.ndarray:
    """exp((k/n − duty)·strength): computed with the same float32 ops as ``kwinners``."""
    k = resolve_k(state.k, units)
    if state.boost_strength > 0.0:
        boost = torch.exp((k / units - state.duty_cycle.reshape(-1)) * state.boost_strength)
    else:
        boost = torch.ones(units)
    return np.ascontiguousarray(boost.to(torch.float32).numpy())


Csr = tuple[np.ndarray, np.ndarray, np.ndarray]  # values, column indices, row pointers


def _csr(weight: Tensor, mask: Tensor) -> Csr:
    """CSR (float32 values, int64 column indices, int64 row pointers) of the mask's entries."""
    rows, cols = mask.nonzero(as_tuple=True)
    if rows.numel() >= 2**31:
        raise ValueError("a layer with 2**31 or more non-zero weights does not fit int32 indices")
    counts = torch.bincount(rows, minlength=mask.shape[0])
    indptr = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
    indptr[1:] = counts.cumsum(0)
    values = weight[rows, cols].to(torch.float32).contiguous()
    return values.numpy(), cols.numpy(), indptr.numpy()


def layer_format(layer: LayerSpec, weight_density: float, input_density: float) -> LayerFormat:
    """The layout that serves a layer best, given its mask density and its input's density."""
    if layer.kind == "conv":
        return "conv"
    if weight_density >= DENSE_FROM:
        return "dense_rows"
    return "input_major" if input_density < SPARSE_INPUT_BELOW else "output_major"


def _pack(
    layers: Sequence[LayerPlan], copy: Csr | None = None
) -> tuple[PackedNet, list[LayerPlan]]:
    """Concatenate the linear layers' arrays (then the first one's input-major ``copy``);
    each layer plan comes back with views into them."""
    widest = max((max(r.layer.fan_in, r.layer.units) for r in layers), default=0)
    index_dtype = np.uint16 if widest <= INDEX16_MAX else np.uint32
    meta = np.zeros((len(layers), M_COLS), dtype=np.int64)
    offsets = np.zeros(4, dtype=np.int64)  # values, indices, indptr, units
    for row, r in zip(meta, layers, strict=True):
        row[:M_VALUES] = (FORMAT_CODE[r.format], r.layer.fan_in, r.layer.units, r.k)
        row[M_VALUES:M_T_VALUES] = offsets
        offsets += (r.values.size, r.indices.size, r.indptr.size, r.layer.units)
    copies = [] if copy is None else [copy]  # after every layer's own arrays
    if copy is not None:
        meta[0, M_T_VALUES:M_SCATTER_BELOW] = offsets[:3]
        meta[0, M_SCATTER_BELOW] = math.ceil(SPARSE_INPUT_BELOW * layers[0].layer.fan_in)

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype), *(a.reshape(-1) for a in parts)]).astype(
            dtype, copy=False
        )

    net = PackedNet(
        meta,
        cat([r.values for r in layers] + [c[0] for c in copies], np.float32),
        cat([r.indices for r in layers] + [c[1] for c in copies], index_dtype),
        cat([r.indptr for r in layers] + [c[2] for c in copies], np.uint32),
        cat([r.bias for r in layers], np.float32),
        cat([r.boost for r in layers], np.float32),
    )
    plans = []
    for row, r in zip(meta, layers, strict=True):
        v, i, p, u = (int(o) for o in row[M_VALUES:M_T_VALUES])
        plans.append(
            replace(
                r,
                boost=net.boost[u : u + r.layer.units],
                bias=net.bias[u : u + r.layer.units],
                values=net.values[v : v + r.values.size].reshape(r.values.shape),
                indices=net.indices[i : i + r.indices.size],
                indptr=net.indptr[p : p + r.indptr.size],
            )
        )
    return net, plans


@dataclass(frozen=True, eq=False)
class _Layer:
    """What one layer of a task compiles from: its shape, weight, mask, bias, k-WTA state."""

    layer: LayerSpec
    weight: Tensor
    mask: Tensor
    bias: Tensor
    state: KWinnersState


def compact(
    spec: BackboneSpec, weights: Sequence[Tensor], task: Task
) -> tuple[list[_Layer], Tensor]:
    """The task's layers restricted to its kept units, and its head's kept columns.

    Layer i keeps its kept rows (units, or channels with their H×W units) and, as inputs,
    the kept units of layer i − 1; a task with every unit kept comes back unchanged."""
    layers: list[_Layer] = []
    inputs: Tensor | None = None  # kept inputs of the current layer (None = all)
    for layer, w, mask, bias, state in zip(
        spec.layers, weights, task.masks, task.biases, task.kwta, strict=True
    ):
        rows = state.units
        if rows is None and inputs is None:
            layers.append(_Layer(layer, w, mask, bias, state))
            continue
        keep_rows = torch.ones(layer.weight_shape[0], dtype=torch.bool) if rows is None else rows
        row_index = keep_rows.nonzero().reshape(-1)
        col_index = (
            torch.arange(layer.weight_shape[1]) if inputs is None else inputs.nonzero().reshape(-1)
        )
        w_c = w.index_select(0, row_index).index_select(1, col_index)
        m_c = mask.index_select(0, row_index).index_select(1, col_index)
        out_shape = (len(row_index), *layer.out_shape[1:])
        layer_c = LayerSpec(layer.kind, tuple(w_c.shape), out_shape)
        units = expand_units(keep_rows, layer.units)
        state_c = KWinnersState(state.k, state.boost_strength, state.duty_cycle[units])
        layers.append(_Layer(layer_c, w_c, m_c, bias[row_index], state_c))
        # the next layer's inputs: a conv channel feeds its H×W units to a linear layer
        inputs = keep_rows
        following = spec.layers[len(layers)] if len(layers) < len(spec.layers) else None
        if following is not None and following.kind == "linear":
            inputs = units
    head = task.head_weight
    if inputs is not None:
        last = spec.layers[-1]
        features = expand_units(inputs, last.units) if last.kind == "conv" else inputs
        head = head[:, features]
    return layers, head


@torch.no_grad()
def compile_task(spec: BackboneSpec, weights: Sequence[Tensor], task: Task) -> Plan:
    """Compile ``task`` against the backbone's current weights (which its mask keeps frozen);
    a structured task is first compacted to its kept units (``compact``)."""
    compiled: list[LayerPlan] = []
    copy: Csr | None = None
    input_density = 1.0  # the backbone's input (pixels, features) is dense
    csr_bytes = nnz_total = 0
    empty: np.ndarray = np.zeros(0, dtype=np.int64)
    layers_c, head_weight = compact(spec, weights, task)
    for entry in layers_c:
        layer, w, mask, bias, state = (
            entry.layer,
            entry.weight,
            entry.mask,
            entry.bias,
            entry.state,
        )
        nnz = int(mask.sum())
        k = resolve_k(state.k, layer.units)
        fmt = layer_format(layer, nnz / layer.numel, input_density)
        if fmt == "conv":
            flat_mask = mask.reshape(-1)
            values = w.reshape(-1)[flat_mask].to(torch.float32).numpy()
            indices = flat_mask.nonzero().reshape(-1).to(torch.int32).numpy()
            indptr = empty.astype(np.uint32)
        elif fmt == "dense_rows":
            wt = torch.where(mask, w, torch.zeros((), dtype=w.dtype)).t().contiguous()
            values, indices, indptr = wt.to(torch.float32).numpy(), empty, empty
        elif fmt == "output_major":
            values, indices, indptr = _csr(w, mask)
        else:
            values, indices, indptr = _csr(w.t(), mask.t())
        if fmt == "output_major" and not compiled:
            # the network's input may be sparse however dense it is on average (PackedNet)
            copy = _csr(w.t(), mask.t())
        boost = boost_factors(state, layer.units)
        bias_np = np.ascontiguousarray(bias.detach().to(torch.float32).numpy().copy())
        compiled.append(
            LayerPlan(fmt, layer, state, k, boost, bias_np, values, indices, indptr, nnz)
        )
        csr_bytes += nnz * 8 + (w.shape[0] + 1) * 8
        nnz_total += nnz
        input_density = k / layer.units
    convs = [c for c in compiled if c.format == "conv"]
    head_t = np.ascontiguousarray(head_weight.detach().to(torch.float32).t().numpy())
    head_b = np.ascontiguousarray(task.head_bias.detach().to(torch.float32).numpy().copy())

    def memory_of(net: PackedNet) -> PlanMemory:
        return PlanMemory(
            nnz=nnz_total + head_t.size,
            value_bytes=sum(c.values.nbytes for c in convs) + net.values.nbytes + head_t.nbytes,
            index_bytes=sum(c.indices.nbytes + c.indptr.nbytes for c in convs)
            + net.indices.nbytes
            + net.indptr.nbytes,
            other_bytes=sum(c.boost.nbytes + c.bias.nbytes for c in convs)
            + net.bias.nbytes
            + net.boost.nbytes
            + head_b.nbytes
            + net.meta.nbytes,
            csr_bytes=csr_bytes + head_t.nbytes,
        )

    unpacked = [c for c in compiled if c.format != "conv"]
    net, linear = _pack(unpacked, copy)
    memory = memory_of(net)
    if memory.total_bytes > memory.bound_bytes:  # no room for the input-major copy
        net, linear = _pack(unpacked)
        memory = memory_of(net)
    return Plan(task.name, spec, (*convs, *linear), head_t, head_b, memory, net)
