"""Compiled (numba) kernels of the inference engine.

Every kernel handles the samples ``lo..hi`` of a batch and releases the GIL, so the
engine runs chunks of a batch on its own threads; a sample's result never depends on
which chunk it is in, so it is bit-identical whatever the thread count.

The engine's main kernels run a whole network in one call (no Python between layers):
- ``forward_rows``, one sample at a time (small batches, latency): a dense-input layer
  gathers its inputs per output unit (output-major CSR, vectorised over the non-zeros);
  a layer fed by k-WTA walks the list of the k winners and scatters each winner's row of
  non-zero weights (input-major CSR: CSR of Wᵀ) into the accumulators;
- ``forward_blocked``, chunks of up to ``CHUNK`` samples (larger batches): activations
  are kept unit-major (unit × sample), so in a dense-input layer every non-zero weight
  updates the chunk's samples with one run of vector operations; layers fed by k-WTA
  scatter each sample's winners as above.
k-WTA selects the k-th largest boosted value exactly (a sampled pivot narrows it to a
few candidates) and keeps the winners in ascending unit order.

Weight layouts (float32 values; uint16 or uint32 column indices and uint32 row
pointers: unsigned indices spare numba's negative-index checks):
- input-major: CSR of Wᵀ, one row per input unit holding its non-zero outgoing weights;
- output-major: CSR of W, one row per output unit (dense input × sparse weight);
- dense-rows: Wᵀ as a dense (inputs × outputs) array, for layers whose mask is dense.
The per-layer kernels further down serve plans with a layer that is best run as a BLAS
matmul (a dense mask at a large batch).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .plan import (
    INPUT_MAJOR,
    M_FORMAT,
    M_IN,
    M_INDICES,
    M_INDPTR,
    M_K,
    M_OUT,
    M_UNITS,
    M_VALUES,
    OUTPUT_MAJOR,
)

_FAST = {"contract", "reassoc"}  # lets sums vectorize; inputs are known finite

# samples a blocked forward keeps together (its activations are unit × CHUNK)
CHUNK = 64
# a chunk's width is a multiple of LANES samples (one vector), and so are thread chunks
LANES = 8
# samples an output-major batch kernel computes together (vectorised over samples)
OUT_CHUNK = 64
# the k-th largest of n values is searched among a sample of n / _SAMPLE_STEP first
_SAMPLE_STEP = 8


@njit(nogil=True, cache=True)
def _quickselect(buf: np.ndarray, n: int, k: int) -> float:
    """The k-th largest of ``buf[:n]`` (quickselect in place; ``buf`` is scratch)."""
    target = k - 1
    lo = 0
    hi = n - 1
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
def kth_largest(vals: np.ndarray, n: int, k: int, buf: np.ndarray) -> float:
    """The exact k-th largest of ``vals[:n]``; ``buf`` (n floats) is scratch.

    A pivot t taken from every ``_SAMPLE_STEP``-th value, a little below where the k-th
    largest should fall, leaves few values ≥ t; when at least k are, the answer is the
    k-th largest of those (else it falls back to selecting among all n).
    """
    samples = n // _SAMPLE_STEP
    if samples >= 32 and 4 * k <= n:
        for q in range(samples):
            buf[q] = vals[q * _SAMPLE_STEP]
        expected = k * samples / n
        rank = min(samples, int(expected + 3.0 * math.sqrt(expected) + 2.0))
        t = _quickselect(buf, samples, rank)
        count = 0
        for j in range(n):
            v = vals[j]
            buf[count] = v
            count += 1 if v >= t else 0
        if count >= k:
            return _quickselect(buf, count, k)
    for j in range(n):
        buf[j] = vals[j]
    return _quickselect(buf, n, k)


@njit(nogil=True, cache=True)
def _winners(
    acc: np.ndarray,
    boost: np.ndarray,
    k: int,
    n: int,
    boosted: np.ndarray,
    buf: np.ndarray,
    win: np.ndarray,
) -> int:
    """Writes to ``win`` the units (ascending) with the k largest acc·boost among the first n.

    Ties at the threshold go to the lowest units. Returns how many (min(k, n)).
    """
    if k >= n:
        for j in range(n):
            win[j] = j
        return n
    for j in range(n):
        boosted[j] = acc[j] * boost[j]
    threshold = kth_largest(boosted, n, k, buf)
    above = 0
    for j in range(n):
        above += 1 if boosted[j] > threshold else 0
    ties = k - above
    count = 0
    for j in range(n):
        v = boosted[j]
        if v > threshold:
            win[count] = j
            count += 1
        elif v == threshold and ties > 0:
            win[count] = j
            count += 1
            ties -= 1
    return count


@njit(nogil=True, cache=True)
def _kwta_row(acc: np.ndarray, boost: np.ndarray, k: int, out: np.ndarray, buf: np.ndarray) -> None:
    """out = acc at the k largest acc·boost, 0 elsewhere (ties at the threshold: lowest index)."""
    n = acc.shape[0]
    boosted = np.empty(n, dtype=np.float32)
    win = np.empty(n, dtype=np.int64)
    count = _winners(acc, boost, k, n, boosted, buf, win)
    out[:] = 0.0
    for q in range(count):
        out[win[q]] = acc[win[q]]


@njit(nogil=True, cache=True)
def _width(x: np.ndarray, meta: np.ndarray, head_wt: np.ndarray) -> int:
    """The widest activation vector the network has: its input, a layer or the head's input."""
    width = max(x.shape[1], head_wt.shape[0])
    for row in range(meta.shape[0]):
        width = max(width, meta[row, M_OUT])
    return width


@njit(nogil=True, cache=True)
def _nonzeros(h: np.ndarray, n: int, out: np.ndarray) -> int:
    """Writes the positions of h[:n]'s non-zeros to ``out``; returns how many."""
    count = 0
    for i in range(n):
        if h[i] != 0.0:
            out[count] = i
            count += 1
    return count


@njit(nogil=True, cache=True, fastmath=_FAST)
def forward_rows(
    x: np.ndarray,
    meta: np.ndarray,
    values: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    bias: np.ndarray,
    boost: np.ndarray,
    head_wt: np.ndarray,
    head_b: np.ndarray,
    out: np.ndarray,
    lo: int,
    hi: int,
) -> None:
    """Logits of samples ``lo..hi``: every linear layer, its k-WTA and the head, per sample."""
    # Layers index views of the packed arrays from 0 (never a signed offset), so that
    # numba drops its negative-index checks and the inner loops vectorise.
    width = _width(x, meta, head_wt)
    h = np.zeros(width, dtype=np.float32)
    acc = np.empty(width, dtype=np.float32)
    boosted = np.empty(width, dtype=np.float32)
    buf = np.empty(width, dtype=np.float32)
    act = np.empty(width, dtype=np.int64)
    classes = head_b.shape[0]
    for s in range(lo, hi):
        for i in range(x.shape[1]):
            h[i] = x[s, i]
        n_act = -1  # h is dense: its active units are not listed yet
        for layer in range(meta.shape[0]):
            fmt = meta[layer, M_FORMAT]
            n_in = meta[layer, M_IN]
            n_out = meta[layer, M_OUT]
            vals = values[meta[layer, M_VALUES] :]
            idx = indices[meta[layer, M_INDICES] :]
            ptr = indptr[meta[layer, M_INDPTR] :]
            lb = bias[meta[layer, M_UNITS] :]
            if fmt == OUTPUT_MAJOR:
                for j in range(n_out):
                    a = np.float32(0.0)
                    for p in range(ptr[j], ptr[j + 1]):
                        a += vals[p] * h[idx[p]]
                    acc[j] = a + lb[j]
            else:
                if n_act < 0:
                    n_act = _nonzeros(h, n_in, act)
                _scatter_layer(h, n_act, act, fmt, n_out, vals, idx, ptr, lb, acc)
            lboost = boost[meta[layer, M_UNITS] :]
            n_act = _winners(acc, lboost, meta[layer, M_K], n_out, boosted, buf, act)
            for j in range(n_out):
                h[j] = 0.0
            for q in range(n_act):
                h[act[q]] = acc[act[q]]
        if n_act < 0:
            n_act = _nonzeros(h, head_wt.shape[0], act)
        o = out[s]
        for c in range(classes):
            o[c] = head_b[c]
        for q in range(n_act):
            i = act[q]
            v = h[i]
            w = head_wt[i]
            for c in range(classes):
                o[c] += v * w[c]


@njit(nogil=True, cache=True, fastmath=_FAST)
def _scatter_layer(
    h: np.ndarray,
    n_act: int,
    act: np.ndarray,
    fmt: int,
    n_out: int,
    vals: np.ndarray,
    idx: np.ndarray,
    ptr: np.ndarray,
    lb: np.ndarray,
    acc: np.ndarray,
) -> None:
    """acc = bias + the weight rows of the active inputs act[:n_act], scaled by h."""
    for j in range(n_out):
        acc[j] = lb[j]
    for q in range(n_act):
        i = act[q]
        v = h[i]
        if fmt == INPUT_MAJOR:
            for p in range(ptr[i], ptr[i + 1]):
                acc[idx[p]] += v * vals[p]
        else:
            row = vals[i * n_out : (i + 1) * n_out]
            for j in range(n_out):
                acc[j] += v * row[j]


@njit(nogil=True, cache=True, fastmath=_FAST)
def forward_blocked(
    x: np.ndarray,
    meta: np.ndarray,
    values: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    bias: np.ndarray,
    boost: np.ndarray,
    head_wt: np.ndarray,
    head_b: np.ndarray,
    out: np.ndarray,
    lo: int,
    hi: int,
) -> None:
    """Logits of samples ``lo..hi``, a chunk of samples at a time.

    A layer with a dense input (output-major) runs vectorised over the chunk's samples;
    a layer fed by k-WTA scatters each sample's winners, as ``forward_rows`` does.
    ``hs[i, b]`` is unit i of the chunk's sample b (a row holds cs samples).
    """
    if hi <= lo:
        return
    width = _width(x, meta, head_wt)
    cs = min(CHUNK, (hi - lo + LANES - 1) // LANES * LANES)
    hs = np.zeros((width, cs), dtype=np.float32)
    pre = np.empty((width, cs), dtype=np.float32)
    acc = np.empty(cs, dtype=np.float32)
    col = np.empty(width, dtype=np.float32)
    h = np.zeros(width, dtype=np.float32)
    boosted = np.empty(width, dtype=np.float32)
    buf = np.empty(width, dtype=np.float32)
    act = np.empty(width, dtype=np.int64)
    classes = head_b.shape[0]
    for c0 in range(lo, hi, cs):
        m = min(cs, hi - c0)
        lanes = (m + LANES - 1) // LANES * LANES
        xc = x[c0 : c0 + m]
        for i in range(x.shape[1]):
            hrow = hs[i]
            for b in range(m):
                hrow[b] = xc[b, i]
            for b in range(m, lanes):
                hrow[b] = 0.0
        for layer in range(meta.shape[0]):
            fmt = meta[layer, M_FORMAT]
            n_in = meta[layer, M_IN]
            n_out = meta[layer, M_OUT]
            vals = values[meta[layer, M_VALUES] :]
            idx = indices[meta[layer, M_INDICES] :]
            ptr = indptr[meta[layer, M_INDPTR] :]
            lb = bias[meta[layer, M_UNITS] :]
            lboost = boost[meta[layer, M_UNITS] :]
            k = meta[layer, M_K]
            if fmt == OUTPUT_MAJOR:
                for j in range(n_out):
                    for b in range(lanes):
                        acc[b] = 0.0
                    for p in range(ptr[j], ptr[j + 1]):
                        w = vals[p]
                        src = hs[idx[p]]
                        for b in range(lanes):
                            acc[b] += w * src[b]
                    bj = lb[j]
                    dst = pre[j]
                    for b in range(lanes):
                        dst[b] = acc[b] + bj
            else:
                for b in range(m):
                    for i in range(n_in):
                        h[i] = hs[i, b]
                    n_act = _nonzeros(h, n_in, act)
                    _scatter_layer(h, n_act, act, fmt, n_out, vals, idx, ptr, lb, col)
                    for j in range(n_out):
                        pre[j, b] = col[j]
            hs[:n_out] = 0.0
            for b in range(m):
                for j in range(n_out):
                    col[j] = pre[j, b]
                count = _winners(col, lboost, k, n_out, boosted, buf, act)
                for q in range(count):
                    j = act[q]
                    hs[j, b] = col[j]
        n_feat = head_wt.shape[0]
        for b in range(m):
            for i in range(n_feat):
                h[i] = hs[i, b]
            n_act = _nonzeros(h, n_feat, act)
            o = out[c0 + b]
            for c in range(classes):
                o[c] = head_b[c]
            for q in range(n_act):
                i = act[q]
                v = h[i]
                w = head_wt[i]
                for c in range(classes):
                    o[c] += v * w[c]


# ---- per-layer kernels: plans with a layer run as a BLAS matmul --------------------------


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
    data = np.ones(2, dtype=f32)
    bias = np.zeros(2, dtype=f32)
    out = np.empty((2, 2), dtype=f32)
    weight_t = np.ones((3, 2), dtype=f32)
    meta = np.array([[INPUT_MAJOR, 3, 2, 1, 0, 0, 0, 0]], dtype=np.int64)
    head = np.ones((2, 2), dtype=f32)
    for index_dtype in (np.uint16, np.uint32):
        indices = np.array([0, 1], dtype=index_dtype)
        for forward in (forward_rows, forward_blocked):
            forward(x, meta, data, indices, indptr, bias, bias, head, bias, out, 0, 2)
        input_major_layer(x, indptr, indices, data, bias, bias, 1, out, 0, 2)
        output_major_layer(x, indptr[:3], indices, data, bias, bias, 1, out, 0, 2)
        output_major_batch_layer(
            np.ascontiguousarray(x.T), indptr[:3], indices, data, bias, bias, 1, out, 0, 2
        )
    dense_rows_layer(x, weight_t, bias, bias, 1, out, 0, 2)
    kwta_rows(out.copy(), bias, 1, out, 0, 2)
    sparse_head(x, weight_t, bias, out, 0, 2)
