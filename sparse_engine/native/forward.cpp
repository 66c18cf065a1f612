// The engine's blocked forward pass in C++ with explicit vectors: a whole network (its
// linear layers, k-WTA and head) for a chunk of up to LANES samples at a time.
//
// Activations are kept unit-major, one LANES-wide vector per unit, so every non-zero
// weight updates the chunk's samples with one vector multiply-add:
// - a layer with a dense input (output-major CSR of W) sums, per output unit, its
//   non-zero weights times their inputs' vectors (four accumulators hide FMA latency);
// - a layer fed by k-WTA (input-major CSR of W^T) walks the input units that are active
//   in at least one sample of the chunk and adds each one's row of non-zero weights,
//   times its vector, into the output vectors (weight-stationary: a row is read once per
//   chunk, not once per sample);
// - a dense-stored layer (W^T as inputs x outputs) does the same with a dense row.
// Each sample sits in its own lane and its sums run in the same order whatever else is
// in the chunk, so a sample's logits do not depend on the chunk or on the thread count.
// k-WTA picks, per sample, the exact k-th largest boosted value and keeps the winners
// (ties at the threshold go to the lowest units), as the numba kernels do.
//
// Loaded with ctypes (no Python API here), which releases the GIL for the call.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

constexpr int LANES = 16;
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));

// Columns of the plan's layer table (sparse_engine/plan.py: M_*) and format codes.
enum { M_FORMAT, M_IN, M_OUT, M_K, M_VALUES, M_INDICES, M_INDPTR, M_UNITS, M_COLS };
enum { OUTPUT_MAJOR = 0, INPUT_MAJOR = 1, DENSE_ROWS = 2 };
constexpr int SAMPLE_STEP = 8;

inline vf splat(float v) {
    vf r;
    for (int b = 0; b < LANES; ++b) r[b] = v;
    return r;
}

// Bit b set where a[b] >= b[b].
inline uint32_t lanes_at_least(const vf& a, const vf& b) {
#ifdef __AVX512F__
    return _mm512_cmp_ps_mask(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b),
                              _CMP_GE_OQ);
#else
    uint32_t bits = 0;
    for (int lane = 0; lane < LANES; ++lane) bits |= uint32_t(a[lane] >= b[lane]) << lane;
    return bits;
#endif
}

inline bool any_nonzero(const vf& v) {
    for (int b = 0; b < LANES; ++b)
        if (v[b] != 0.0f) return true;
    return false;
}

struct Scratch {
    std::vector<vf> h, pre, boosted;  // unit-major: one vector of the chunk's lanes per unit
    std::vector<float> cand, col, buf;  // per-lane candidates (LANES x width), scratch
    explicit Scratch(int64_t width)
        : h(width), pre(width), boosted(width), cand(LANES * width), col(width), buf(width) {}
};

// Lane b of h: pre at the k units with the largest boosted values, 0 elsewhere (b < m).
//
// Per lane, a threshold a little below the k-th largest comes from a strided sample of
// its values; one vector pass collects each lane's values above it, and the exact k-th
// largest is selected among those few. Ties at the threshold go to the lowest units.
void kwta(Scratch& s, int64_t n, int64_t k, const float* boost, int m) {
    vf* h = s.h.data();
    const vf* pre = s.pre.data();
    if (k >= n) {
        for (int64_t j = 0; j < n; ++j) {
            h[j] = pre[j];
            for (int b = m; b < LANES; ++b) h[j][b] = 0.0f;
        }
        return;
    }
    vf* boosted = s.boosted.data();
    for (int64_t j = 0; j < n; ++j) boosted[j] = pre[j] * boost[j];
    const float inf = INFINITY;
    vf pivot = splat(inf);  // lanes beyond m select nothing
    const int64_t samples = n / SAMPLE_STEP;
    const bool sampled = samples >= 32 && 4 * k <= n;
    float* buf = s.buf.data();
    for (int b = 0; b < m; ++b) {
        pivot[b] = -inf;
        if (!sampled) continue;
        for (int64_t q = 0; q < samples; ++q) buf[q] = boosted[q * SAMPLE_STEP][b];
        const double expected = double(k) * double(samples) / double(n);
        const int64_t rank =
            std::min<int64_t>(samples, int64_t(expected + 3.0 * std::sqrt(expected) + 2.0));
        std::nth_element(buf, buf + rank - 1, buf + samples, std::greater<float>());
        pivot[b] = buf[rank - 1];
    }
    float* cand = s.cand.data();
    int64_t count[LANES] = {0};
    for (int64_t j = 0; j < n; ++j) {
        const vf v = boosted[j];
        for (uint32_t bits = lanes_at_least(v, pivot); bits != 0; bits &= bits - 1) {
            const int b = __builtin_ctz(bits);
            cand[b * n + count[b]++] = v[b];
        }
    }
    vf threshold = splat(inf);
    for (int b = 0; b < m; ++b) {
        float* c = cand + b * n;
        if (count[b] < k) {  // the sample's pivot was too high: select among all values
            for (int64_t j = 0; j < n; ++j) c[j] = boosted[j][b];
            count[b] = n;
        }
        std::nth_element(c, c + k - 1, c + count[b], std::greater<float>());
        threshold[b] = c[k - 1];
    }
    typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));
    vi above = {0}, equal = {0};
    for (int64_t j = 0; j < n; ++j) {
        above -= boosted[j] > threshold;  // a true lane compares as -1
        equal -= boosted[j] == threshold;
    }
    const vf zero = splat(0.0f);
    for (int64_t j = 0; j < n; ++j) h[j] = boosted[j] >= threshold ? pre[j] : zero;
    for (int b = 0; b < m; ++b) {
        int64_t ties = k - above[b];
        if (equal[b] == ties) continue;
        for (int64_t j = 0; j < n; ++j)  // more ties than places: the lowest units win
            if (boosted[j][b] == threshold[b]) h[j][b] = ties-- > 0 ? pre[j][b] : 0.0f;
    }
}

template <typename Index>
void output_major(Scratch& s, int64_t n_out, const float* vals, const Index* idx,
                  const uint32_t* ptr, const float* bias) {
    const vf* h = s.h.data();
    vf* pre = s.pre.data();
    for (int64_t j = 0; j < n_out; ++j) {
        vf a0 = splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
        uint32_t p = ptr[j];
        const uint32_t end = ptr[j + 1];
        for (; p + 4 <= end; p += 4) {
            a0 += vals[p] * h[idx[p]];
            a1 += vals[p + 1] * h[idx[p + 1]];
            a2 += vals[p + 2] * h[idx[p + 2]];
            a3 += vals[p + 3] * h[idx[p + 3]];
        }
        for (; p < end; ++p) a0 += vals[p] * h[idx[p]];
        pre[j] = ((a0 + a1) + (a2 + a3)) + bias[j];
    }
}

// pre = bias + the sum over input units i active in some lane of add_row(i, h[i], pre).
template <typename AddRow>
void add_active_rows(Scratch& s, int64_t n_in, int64_t n_out, const float* bias, AddRow add_row) {
    const vf* h = s.h.data();
    vf* pre = s.pre.data();
    for (int64_t j = 0; j < n_out; ++j) pre[j] = splat(bias[j]);
    for (int64_t i = 0; i < n_in; ++i)
        if (any_nonzero(h[i])) add_row(i, h[i], pre);
}

template <typename Index>
void input_major(Scratch& s, int64_t n_in, int64_t n_out, const float* vals, const Index* idx,
                 const uint32_t* ptr, const float* bias) {
    add_active_rows(s, n_in, n_out, bias, [&](int64_t i, const vf v, vf* pre) {
        uint32_t p = ptr[i];
        const uint32_t end = ptr[i + 1];
        for (; p + 4 <= end; p += 4) {  // a row's indices are distinct: load four, then store
            vf* d0 = pre + idx[p];
            vf* d1 = pre + idx[p + 1];
            vf* d2 = pre + idx[p + 2];
            vf* d3 = pre + idx[p + 3];
            const vf r0 = *d0 + vals[p] * v, r1 = *d1 + vals[p + 1] * v;
            const vf r2 = *d2 + vals[p + 2] * v, r3 = *d3 + vals[p + 3] * v;
            *d0 = r0;
            *d1 = r1;
            *d2 = r2;
            *d3 = r3;
        }
        for (; p < end; ++p) pre[idx[p]] += vals[p] * v;
    });
}

void dense_rows(Scratch& s, int64_t n_in, int64_t n_out, const float* wt, const float* bias) {
    add_active_rows(s, n_in, n_out, bias, [&](int64_t i, const vf v, vf* pre) {
        const float* row = wt + i * n_out;
        for (int64_t j = 0; j < n_out; ++j) pre[j] += row[j] * v;
    });
}

template <typename Index>
void forward(const float* x, int64_t x_cols, const int64_t* meta, int64_t n_layers,
             const float* values, const Index* indices, const uint32_t* indptr,
             const float* bias, const float* boost, const float* head_wt, int64_t n_feat,
             const float* head_b, int64_t classes, float* out, int64_t lo, int64_t hi) {
    int64_t width = std::max(x_cols, n_feat);
    for (int64_t l = 0; l < n_layers; ++l) width = std::max(width, meta[l * M_COLS + M_OUT]);
    Scratch s(width);
    std::vector<vf> logits(classes);
    for (int64_t c0 = lo; c0 < hi; c0 += LANES) {
        const int m = int(std::min<int64_t>(LANES, hi - c0));
        for (int64_t i = 0; i < x_cols; ++i) {
            vf v = splat(0.0f);
            for (int b = 0; b < m; ++b) v[b] = x[(c0 + b) * x_cols + i];
            s.h[i] = v;
        }
        for (int64_t l = 0; l < n_layers; ++l) {
            const int64_t* row = meta + l * M_COLS;
            const int64_t n_in = row[M_IN], n_out = row[M_OUT];
            const float* vals = values + row[M_VALUES];
            const Index* idx = indices + row[M_INDICES];
            const uint32_t* ptr = indptr + row[M_INDPTR];
            const float* lb = bias + row[M_UNITS];
            if (row[M_FORMAT] == OUTPUT_MAJOR)
                output_major(s, n_out, vals, idx, ptr, lb);
            else if (row[M_FORMAT] == INPUT_MAJOR)
                input_major(s, n_in, n_out, vals, idx, ptr, lb);
            else
                dense_rows(s, n_in, n_out, vals, lb);
            kwta(s, n_out, row[M_K], boost + row[M_UNITS], m);
        }
        for (int64_t c = 0; c < classes; ++c) logits[c] = splat(head_b[c]);
        for (int64_t i = 0; i < n_feat; ++i) {
            const vf v = s.h[i];
            if (!any_nonzero(v)) continue;
            const float* w = head_wt + i * classes;
            for (int64_t c = 0; c < classes; ++c) logits[c] += w[c] * v;
        }
        for (int b = 0; b < m; ++b)
            for (int64_t c = 0; c < classes; ++c) out[(c0 + b) * classes + c] = logits[c][b];
    }
}

}  // namespace

extern "C" {

// Samples per vector: chunk bounds that are multiples of this fill whole vectors.
int sparsecl_lanes(void) { return LANES; }

// Logits of samples lo..hi of x (n x x_cols, row-major) through a packed plan
// (sparse_engine.plan.PackedNet); index_bytes is 2 (uint16 indices) or 4 (uint32).
// Returns 0, or -1 for an index width it does not know.
int sparsecl_forward(const float* x, int64_t x_cols, const int64_t* meta, int64_t n_layers,
                     const float* values, const void* indices, int64_t index_bytes,
                     const uint32_t* indptr, const float* bias, const float* boost,
                     const float* head_wt, int64_t n_feat, const float* head_b, int64_t classes,
                     float* out, int64_t lo, int64_t hi) {
    if (index_bytes == 2)
        forward(x, x_cols, meta, n_layers, values, static_cast<const uint16_t*>(indices), indptr,
                bias, boost, head_wt, n_feat, head_b, classes, out, lo, hi);
    else if (index_bytes == 4)
        forward(x, x_cols, meta, n_layers, values, static_cast<const uint32_t*>(indices), indptr,
                bias, boost, head_wt, n_feat, head_b, classes, out, lo, hi);
    else
        return -1;
    return 0;
}

}  // extern "C"
