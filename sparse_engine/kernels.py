"""Compiled (numba) kernels of the inference engine: one masked layer followed by k-WTA.

Every kernel handles the samples ``lo..hi`` of a batch and releases the GIL, so the
engine runs chunks of a batch on its own threads. Activations between layers are dense
rows that are zero outside the k winners; a kernel fed by a k-WTA layer skips the zeros,
so it touches only the weight rows of the active units.

Weight layouts (all float32 values, uint32 indices and row pointers: unsigned
indices spare numba's negative-index checks, which otherwise triple the inner loops' cost):
- input-major: CSR of Wᵀ, one row per input unit holding its non-zero outgoing weights;
  an active input unit indexes straight into its row (sparse input × sparse weight);
- output-major: CSR of W, one row per output unit (dense input × sparse weight);
- dense-rows: Wᵀ as a dense (inputs × outputs) array, for layers whose mask is dense.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FAST = {"contract", "reassoc"}  # lets sums vectorize; inputs are known finite

# samples an output-major batch kernel computes together (vectorised over samples)
OUT_CHUNK = 64


@njit(nogil=True, cache=True)
def _kth_largest(buf: np.ndarray, k: int) -> float:
    """The k-th largest value of ``buf`` (quickselect in place; ``buf`` is scratch)."""
    target = k - 1
    lo = 0
    hi = buf.shape[0] - 1
    while lo < hi:
        a, b, c = buf[lo], buf[(lo + hi) >> 1], buf[hi]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        i, j = lo, hi
        while i <= j:
            while buf[i] > pivot:
                i += 1
            while buf[j] < pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    return buf[target]


@njit(nogil=True, cache=True)
def _kwta_row(acc: np.ndarray, boost: np.ndarray, k: int, out: np.ndarray, buf: np.ndarray) -> None:
    """out = acc at the k largest acc·boost, 0 elsewhere (ties at the threshold: lowest index)."""
    n = acc.shape[0]
    if k >= n:
        out[:] = acc
        return
    for j in range(n):
        buf[j] = acc[j] * boost[j]
    threshold = _kth_largest(buf, k)
    count = 0
    for j in range(n):
        if acc[j] * boost[j] > threshold:
            out[j] = acc[j]
            count += 1
        else:
            out[j] = 0.0
    if count < k:
        for j in range(n):
            if acc[j] * boost[j] == threshold:
                out[j] = acc[j]
                count += 1
                if count == k:
                    break


@njit(nogil=True, cache=True, fastmath=_FAST)
def input_major_layer(
    x: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    bias: np.ndarray,
    boost: np.ndarray,
    k: int,
    out: np.ndarray,
    lo: int,
    hi: int,
) -> None:
    """Sparse input × input-major sparse weight, then k-WTA; rows ``lo..hi`` of ``out``."""
    n_in = x.shape[1]
    acc = np.empty(bias.shape[0], dtype=np.float32)
    buf = np.empty_like(acc)
    for s in range(lo, hi):
        acc[:] = bias
        row = x[s]
        for i in range(n_in):
            v = row[i]
            if v != 0.0:
                for p in range(indptr[i], indptr[i + 1]):
                    acc[indices[p]] += v * data[p]
        _kwta_row(acc, boost, k, out[s], buf)


@njit(nogil=True, cache=True, fastmath=_FAST)
def dense_rows_layer(
    x: np.ndarray,
    weight_t: np.ndarray,
    bias: np.ndarray,
    boost: np.ndarray,
    k: int,
    out: np.ndarray,
    lo: int,
    hi: int,
) -> None:
    """Sparse input × dense Wᵀ (rows of active units only), then k-WTA."""
    n_in = x.shape[1]
    n_out = bias.shape[0]
    acc = np.empty(n_out, dtype=np.float32)
    buf = np.empty_like(acc)
    for s in range(lo, hi):
        acc[:] = bias
        row = x[s]
        for i in range(n_in):
            v = row[i]
            if v != 0.0:
                w = weight_t[i]
                for j in range(n_out):
                    acc[j] += v * w[j]
        _kwta_row(acc, boost, k, out[s], buf)


@njit(nogil=True, cache=True, fastmath=_FAST)
def output_major_layer(
    x: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    bias: np.ndarray,
    boost: np.ndarray,
    k: int,
    out: np.ndarray,
    lo: int,
    hi: int,
) -> None:
    """Dense input × output-major sparse weight, one sample at a time, then k-WTA."""
    n_out = bias.shape[0]
    acc = np.empty(n_out, dtype=np.float32)
    buf = np.empty_like(acc)
    for s in range(lo, hi):
        row = x[s]
        for j in range(n_out):
            a = np.float32(0.0)
            for p in range(indptr[j], indptr[j + 1]):
                a += data[p] * row[indices[p]]
            acc[j] = a + bias[j]
        _kwta_row(acc, boost, k, out[s], buf)


@njit(nogil=True, cache=True, fastmath=_FAST)
def output_major_batch_layer(
    x_t: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    bias: np.ndarray,
    boost: np.ndarray,
    k: int,
    out: np.ndarray,
    lo: int,
    hi: int,
) -> None:
    """Dense input (given transposed, inputs × batch) × output-major sparse weight, then k-WTA.

    Each non-zero weight is applied to a contiguous run of samples, so the inner loop
    is vectorised over the batch.
    """
    n_in = x_t.shape[0]
    n_out = bias.shape[0]
    chunk = np.empty((n_in, OUT_CHUNK), dtype=np.float32)
    pre = np.empty((n_out, OUT_CHUNK), dtype=np.float32)
    acc = np.empty(OUT_CHUNK, dtype=np.float32)
    column = np.empty(n_out, dtype=np.float32)
    buf = np.empty_like(column)
    for c0 in range(lo, hi, OUT_CHUNK):
        m = min(OUT_CHUNK, hi - c0)
        # a local copy indexed from 0 lets the inner loop vectorise without index checks
        for i in range(n_in):
            for b in range(m):
                chunk[i, b] = x_t[i, c0 + b]
        for j in range(n_out):
            for b in range(m):
                acc[b] = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                w = data[p]
                src = chunk[indices[p]]
                for b in range(m):
                    acc[b] += w * src[b]
            for b in range(m):
                pre[j, b] = acc[b] + bias[j]
        for b in range(m):
            for j in range(n_out):
                column[j] = pre[j, b]
            _kwta_row(column, boost, k, out[c0 + b], buf)


@njit(nogil=True, cache=True, fastmath=_FAST)
def sparse_head(
    x: np.ndarray, weight_t: np.ndarray, bias: np.ndarray, out: np.ndarray, lo: int, hi: int
) -> None:
    """Logits = bias + Σ over the active units of x_i · Wᵀ[i] (the head reads k rows)."""
    n_in = x.shape[1]
    n_out = bias.shape[0]
    for s in range(lo, hi):
        o = out[s]
        o[:] = bias
        row = x[s]
        for i in range(n_in):
            v = row[i]
            if v != 0.0:
                w = weight_t[i]
                for j in range(n_out):
                    o[j] += v * w[j]


@njit(nogil=True, cache=True)
def kwta_rows(
    pre: np.ndarray, boost: np.ndarray, k: int, out: np.ndarray, lo: int, hi: int
) -> None:
    """k-WTA of pre-activations computed elsewhere (a dense matmul), rows ``lo..hi``."""
    buf = np.empty(pre.shape[1], dtype=np.float32)
    for s in range(lo, hi):
        _kwta_row(pre[s], boost, k, out[s], buf)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel, so a first request is not slow."""
    f32, u32 = np.float32, np.uint32
    x = np.ones((2, 3), dtype=f32)
    indptr = np.array([0, 1, 1, 2], dtype=u32)
    indices = np.array([0, 1], dtype=u32)
    data = np.ones(2, dtype=f32)
    bias = np.zeros(2, dtype=f32)
    out = np.empty((2, 2), dtype=f32)
    weight_t = np.ones((3, 2), dtype=f32)
    input_major_layer(x, indptr, indices, data, bias, bias, 1, out, 0, 2)
    output_major_layer(x, indptr[:3], indices, data, bias, bias, 1, out, 0, 2)
    output_major_batch_layer(
        np.ascontiguousarray(x.T), indptr[:3], indices, data, bias, bias, 1, out, 0, 2
    )
    dense_rows_layer(x, weight_t, bias, bias, 1, out, 0, 2)
    kwta_rows(out.copy(), bias, 1, out, 0, 2)
    sparse_head(x, weight_t, bias, out, 0, 2)
