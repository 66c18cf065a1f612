// The engine's forward passes in C++: the linear layers of a network, their k-WTA and the
// head in one call, for a chunk of up to LANES samples at a time held in vectors (below),
// or one sample at a time for latency (further down).
//
// Activations are kept unit-major, one LANES-wide vector per unit, so every non-zero
// weight updates the chunk's samples with one vector multiply-add:
// - a layer with a dense input (output-major CSR of W) sums, per output unit, its
//   non-zero weights times their inputs' vectors (four accumulators hide FMA latency);
// - a layer fed by k-WTA (input-major CSR of W^T) walks the input units that are active
//   in at least one sample of the chunk and adds each one's row of non-zero weights,
//   times its vector, into the output vectors (weight-stationary: a row is read once per
//   chunk, not once per sample);
// - a dense-stored layer (W^T as inputs x outputs) does the same with dense rows.
// Each sample sits in its own lane and its sums run in the same order whatever else is in
// the chunk, so a sample's logits do not depend on the chunk or on the thread count.
//
// Built once per x86-64 level by setup.py (the engine loads the best one this CPU runs)
// and loaded with ctypes (no Python API here), which releases the GIL for the call.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// Samples per vector: one register's worth of floats (AVX-512: 16; AVX2: 8, measured
// 1.2-3.6x faster than 16-wide vectors split over two registers on AMD Zen 3).
#ifdef __AVX512F__
constexpr int LANES = 16;
#else
constexpr int LANES = 8;
#endif
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint16_t vh __attribute__((vector_size(LANES * sizeof(uint16_t))));
typedef int16_t vs __attribute__((vector_size(LANES * sizeof(int16_t))));

// Columns of the plan's layer table (sparse_engine/plan.py: M_*) and format codes.
enum {
    M_FORMAT, M_IN, M_OUT, M_K, M_VALUES, M_INDICES, M_INDPTR, M_UNITS,
    M_T_VALUES, M_T_INDICES, M_T_INDPTR, M_SCATTER_BELOW, M_COLS
};
enum { OUTPUT_MAJOR = 0, INPUT_MAJOR = 1, DENSE_ROWS = 2 };

inline vf splat(float v) {
    vf r;
    for (int b = 0; b < LANES; ++b) r[b] = v;
    return r;
}

inline bool any_nonzero(const vf& v) {
    for (int b = 0; b < LANES; ++b)
        if (v[b] != 0.0f) return true;
    return false;
}

// ---- k-WTA: the k units with the largest boosted values win, per sample --------------------
//
// Both kernels select the same way. The k-th largest value is found exactly, without
// branches, on order keys (unsigned integers that order as the floats do): the upper 16
// bits of the k-th largest key are built bit by bit from the top, a bit kept where at
// least k keys reach the prefix with it (16 passes of 16-bit vector compares); then its
// lower 16 bits are selected among the few keys that share that upper half. Then, units
// taken in ascending order, a unit wins when its value is above the k-th largest, or
// equal to it while places are left (ties go to the lowest units). The chunk kernel
// selects for its LANES samples at once (a lane per sample); the one-sample kernel runs
// the same passes over LANES units at a time and sums the lanes, then finishes on the few
// units whose key's upper half reaches the k-th's. This replaced a selection per sample
// with nth_element (on candidates above a sampled pivot), with the same winners and so
// the same bits; measured side by side (benchmarks/kernel_ab.py --width 1000 --depth 2
// --pairs 0.1 0.25 --inputs mnist, AVX-512 build, one thread): a forward pass at batch 64
// 1.26 -> 0.56 ms, at batch 16 0.16 -> 0.13 ms, at batch 1 27 -> 25 us (RESULTS.md).

// A key that orders floats as unsigned integers do: a larger float, a larger key (-0 sits
// just below +0, which only refines the float order). Lane by lane, or one float.
inline vu order_keys(const vf& v) {
    vu u;
    __builtin_memcpy(&u, &v, sizeof u);
    return u ^ (vu(vi(u) >> 31) | 0x80000000u);
}

inline uint32_t order_key(float v) {
    uint32_t u;
    __builtin_memcpy(&u, &v, sizeof u);
    return u ^ (uint32_t(int32_t(u) >> 31) | 0x80000000u);
}

inline float from_key(uint32_t key) {
    const uint32_t u = key ^ (uint32_t(~(int32_t(key) >> 31)) | 0x80000000u);
    float v;
    __builtin_memcpy(&v, &u, sizeof v);
    return v;
}

// Bit b set where lane b of v (-1 or 0 per lane) is set.
inline uint32_t lane_bits(const vs& v) {
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    return _mm256_movepi16_mask(reinterpret_cast<__m256i>(v));
#else
    uint32_t bits = 0;
    for (int b = 0; b < LANES; ++b) bits |= uint32_t(v[b] != 0) << b;
    return bits;
#endif
}

// 16-bit counts of at most this many vectors cannot overflow (four sums of a quarter each).
constexpr int64_t COUNT_BLOCK = 32768;

// Per lane, how many of the n vectors of upper halves are >= c.
inline vi count_at_least(const vh* high, int64_t n, const vh c) {
    vi total = vi{};
    for (int64_t j0 = 0; j0 < n; j0 += COUNT_BLOCK) {
        const int64_t j1 = std::min(n, j0 + COUNT_BLOCK);
        vs n0 = vs{}, n1 = n0, n2 = n0, n3 = n0;  // minus the counts
        int64_t j = j0;
        for (; j + 4 <= j1; j += 4) {
            n0 += high[j] >= c;
            n1 += high[j + 1] >= c;
            n2 += high[j + 2] >= c;
            n3 += high[j + 3] >= c;
        }
        for (; j < j1; ++j) n0 += high[j] >= c;
        total -= __builtin_convertvector((n0 + n1) + (n2 + n3), vi);
    }
    return total;
}

// Per lane, how many of the n vectors of upper halves are above top; and the keys (of
// values, unit-major as high) whose upper half is top, pushed to each lane's list (lanes
// in the bits of `lanes`; lane b's list at tied + b * n, count[b] long).
inline vi split_at(const vh* high, const vf* values, int64_t n, const vh top, uint32_t lanes,
                   uint32_t* tied, int64_t* count) {
    vi above = vi{};
    for (int64_t j0 = 0; j0 < n; j0 += COUNT_BLOCK) {
        const int64_t j1 = std::min(n, j0 + COUNT_BLOCK);
        vs a = vs{};
        for (int64_t j = j0; j < j1; ++j) {
            a += high[j] > top;
            for (uint32_t bits = lane_bits(high[j] == top) & lanes; bits; bits &= bits - 1) {
                const int b = __builtin_ctz(bits);
                tied[b * n + count[b]++] = order_key(values[j][b]);
            }
        }
        above -= __builtin_convertvector(a, vi);
    }
    return above;
}

// The upper halves of the values' order keys; then, per lane, the upper half of the k-th
// largest key when sums(count) adds the lanes up as the selection needs.
template <typename Sums>
inline vh top_half(const vf* values, vh* high, int64_t n, Sums sums, const vi need) {
    for (int64_t j = 0; j < n; ++j) high[j] = __builtin_convertvector(order_keys(values[j]) >> 16, vh);
    vh top = vh{};
    for (int bit = 15; bit >= 0; --bit) {
        const vh c = top | uint16_t(1u << bit);
        top = __builtin_convertvector(sums(count_at_least(high, n, c)) >= need, vs) ? c : top;
    }
    return top;
}

inline int32_t lane_sum(const vi& v) {
    int32_t sum = 0;
    for (int b = 0; b < LANES; ++b) sum += v[b];
    return sum;
}

// Whether a unit of value x wins (units visited in ascending order; ties counts down the
// places left at the threshold): a float and its count, or LANES of each, lane by lane.
template <typename T, typename Count>
inline auto wins(T x, T threshold, Count& ties) {
    const auto equal = x == threshold;
    const auto won = (x > threshold) | (equal & (ties > 0));
    ties = equal ? ties - 1 : ties;
    return won;
}

struct Scratch {
    std::vector<vf> h, pre, boosted;  // unit-major: one vector of the chunk's lanes per unit
    std::vector<vh> high;  // the upper halves of boosted's order keys
    std::vector<uint32_t> tied;  // per lane, the keys sharing the k-th's upper half
    std::vector<int32_t> rows;  // active input units
    explicit Scratch(int64_t width)
        : h(width), pre(width), boosted(width), high(width), tied(LANES * width), rows(width) {}
};

// Lane b of h: pre at the k units with the largest boosted values, 0 elsewhere (b < m).
void kwta(Scratch& s, int64_t n, int64_t k, const float* boost, int m) {
    vf* h = s.h.data();
    const vf* pre = s.pre.data();
    const vf zero = splat(0.0f);
    if (k >= n) {
        for (int64_t j = 0; j < n; ++j) {
            h[j] = pre[j];
            for (int b = m; b < LANES; ++b) h[j][b] = 0.0f;
        }
        return;
    }
    vf* boosted = s.boosted.data();
    for (int64_t j = 0; j < n; ++j) boosted[j] = pre[j] * boost[j];
    const vi need = vi{} + int32_t(k);
    const vh top = top_half(boosted, s.high.data(), n, [](const vi& c) { return c; }, need);
    int64_t count[LANES] = {0};
    const vi above = split_at(s.high.data(), boosted, n, top, (1u << m) - 1u, s.tied.data(), count);
    vf threshold = splat(INFINITY);  // lanes beyond m select nothing
    for (int b = 0; b < m; ++b) {
        uint32_t* keys = s.tied.data() + b * n;
        const int64_t rank = k - above[b];  // 1 <= rank <= count[b]
        std::nth_element(keys, keys + rank - 1, keys + count[b], std::greater<uint32_t>());
        threshold[b] = from_key(keys[rank - 1]);
    }
    vi ties = need;  // the units equal to the threshold that win: the lowest ones
    for (int64_t j = 0; j < n; ++j) ties += boosted[j] > threshold;
    for (int b = m; b < LANES; ++b) ties[b] = 0;
    for (int64_t j = 0; j < n; ++j) h[j] = wins(boosted[j], threshold, ties) ? pre[j] : zero;
}

// acc[idx[p]] += vals[p] * v over p in [p, end); a row's indices are distinct, so four
// sums are loaded before any is stored. T is a float or a vector of LANES floats.
template <typename T, typename Index>
inline void add_row(T* acc, const float* vals, const Index* idx, uint32_t p, const uint32_t end,
                    const T v) {
    for (; p + 4 <= end; p += 4) {
        T* d0 = acc + idx[p];
        T* d1 = acc + idx[p + 1];
        T* d2 = acc + idx[p + 2];
        T* d3 = acc + idx[p + 3];
        const T r0 = *d0 + vals[p] * v, r1 = *d1 + vals[p + 1] * v;
        const T r2 = *d2 + vals[p + 2] * v, r3 = *d3 + vals[p + 3] * v;
        *d0 = r0;
        *d1 = r1;
        *d2 = r2;
        *d3 = r3;
    }
    for (; p < end; ++p) acc[idx[p]] += vals[p] * v;
}

// sum of vals[p] * h[idx[p]] over p in [p, end) in four interleaved sums (they hide the
// multiply-add's latency). T is a float or a vector of LANES floats.
template <typename T, typename Index>
inline T dot4(const float* vals, const Index* idx, uint32_t p, const uint32_t end, const T* h) {
    T a0 = T{}, a1 = a0, a2 = a0, a3 = a0;
    for (; p + 4 <= end; p += 4) {
        a0 += vals[p] * h[idx[p]];
        a1 += vals[p + 1] * h[idx[p + 1]];
        a2 += vals[p + 2] * h[idx[p + 2]];
        a3 += vals[p + 3] * h[idx[p + 3]];
    }
    for (; p < end; ++p) a0 += vals[p] * h[idx[p]];
    return (a0 + a1) + (a2 + a3);
}

template <typename Index>
void output_major(Scratch& s, int64_t n_out, const float* vals, const Index* idx,
                  const uint32_t* ptr, const float* bias) {
    const vf* h = s.h.data();
    vf* pre = s.pre.data();
    for (int64_t j = 0; j < n_out; ++j) pre[j] = dot4(vals, idx, ptr[j], ptr[j + 1], h) + bias[j];
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
        add_row(pre, vals, idx, ptr[i], ptr[i + 1], v);
    });
}

// The same with dense rows of W^T: ROWS active rows at a time, over a tile of outputs
// whose sums stay in L1 (each output still adds its rows in input order); measured
// 1.2-3.6x faster than a BLAS matmul and k-WTA (torch.addmm), batch 16 to 256, one thread.
void dense_rows(Scratch& s, int64_t n_in, int64_t n_out, const float* wt, const float* bias) {
    constexpr int ROWS = 8;
    constexpr int64_t TILE = 256;
    const vf* h = s.h.data();
    vf* pre = s.pre.data();
    int32_t* act = s.rows.data();
    int64_t n_act = 0;
    for (int64_t i = 0; i < n_in; ++i)
        if (any_nonzero(h[i])) act[n_act++] = int32_t(i);
    for (int64_t j = 0; j < n_out; ++j) pre[j] = splat(bias[j]);
    for (int64_t j0 = 0; j0 < n_out; j0 += TILE) {
        const int64_t j1 = std::min(n_out, j0 + TILE);
        for (int64_t q = 0; q < n_act; q += ROWS) {
            const int rows = int(std::min<int64_t>(ROWS, n_act - q));
            const float* w[ROWS];
            vf v[ROWS];
            for (int r = 0; r < rows; ++r) {
                w[r] = wt + act[q + r] * n_out;
                v[r] = h[act[q + r]];
            }
            if (rows == ROWS) {
                for (int64_t j = j0; j < j1; ++j) {
                    vf sum = pre[j];
                    for (int r = 0; r < ROWS; ++r) sum += w[r][j] * v[r];
                    pre[j] = sum;
                }
            } else {
                for (int r = 0; r < rows; ++r)
                    for (int64_t j = j0; j < j1; ++j) pre[j] += w[r][j] * v[r];
            }
        }
    }
}

// A plan's arrays and sizes, as sparse_engine/native.py packs them once per plan
// (one int64 array, so that a call passes a handful of arguments).
enum {
    H_META, H_LAYERS, H_VALUES, H_INDICES, H_INDEX_BYTES, H_INDPTR, H_BIAS, H_BOOST,
    H_HEAD_WT, H_FEATURES, H_HEAD_B, H_CLASSES, H_COLS
};

template <typename Index>
struct Net {
    const int64_t* meta;
    int64_t n_layers;
    const float* values;
    const Index* indices;
    const uint32_t* indptr;
    const float* bias;
    const float* boost;
    const float* head_wt;
    int64_t n_feat;
    const float* head_b;
    int64_t classes;

    explicit Net(const int64_t* hd)
        : meta(reinterpret_cast<const int64_t*>(hd[H_META])),
          n_layers(hd[H_LAYERS]),
          values(reinterpret_cast<const float*>(hd[H_VALUES])),
          indices(reinterpret_cast<const Index*>(hd[H_INDICES])),
          indptr(reinterpret_cast<const uint32_t*>(hd[H_INDPTR])),
          bias(reinterpret_cast<const float*>(hd[H_BIAS])),
          boost(reinterpret_cast<const float*>(hd[H_BOOST])),
          head_wt(reinterpret_cast<const float*>(hd[H_HEAD_WT])),
          n_feat(hd[H_FEATURES]),
          head_b(reinterpret_cast<const float*>(hd[H_HEAD_B])),
          classes(hd[H_CLASSES]) {}

    const int64_t* layer(int64_t l) const { return meta + l * M_COLS; }

    // Layer l as the kernels read it.
    struct Layer {
        int64_t format, n_in, n_out, k, scatter_below;
        const float* vals;  // with idx and ptr: CSR of W (output-major), of Wᵀ, or dense Wᵀ
        const Index* idx;
        const uint32_t* ptr;
        const float* bias;
        const float* boost;
        const float* t_vals;  // with t_idx and t_ptr: an output-major layer's input-major copy
        const Index* t_idx;
        const uint32_t* t_ptr;
    };

    Layer at(int64_t l) const {
        const int64_t* r = layer(l);
        return {r[M_FORMAT], r[M_IN], r[M_OUT], r[M_K], r[M_SCATTER_BELOW],
                values + r[M_VALUES], indices + r[M_INDICES], indptr + r[M_INDPTR],
                bias + r[M_UNITS], boost + r[M_UNITS],
                values + r[M_T_VALUES], indices + r[M_T_INDICES], indptr + r[M_T_INDPTR]};
    }

    // The widest activation vector: the input, a layer's output or the head's input.
    int64_t width(int64_t x_cols) const {
        int64_t w = std::max(x_cols, n_feat);
        for (int64_t l = 0; l < n_layers; ++l) w = std::max(w, layer(l)[M_OUT]);
        return w;
    }
};

// The logits of samples lo..hi of x (n x x_cols, row-major), LANES samples per vector.
template <typename Index>
void forward(const Net<Index>& net, const float* x, int64_t x_cols, float* out, int64_t lo,
             int64_t hi) {
    Scratch s(net.width(x_cols));
    std::vector<vf> logits(net.classes);
    for (int64_t c0 = lo; c0 < hi; c0 += LANES) {
        const int m = int(std::min<int64_t>(LANES, hi - c0));
        for (int64_t i = 0; i < x_cols; ++i) {
            vf v = splat(0.0f);
            for (int b = 0; b < m; ++b) v[b] = x[(c0 + b) * x_cols + i];
            s.h[i] = v;
        }
        for (int64_t l = 0; l < net.n_layers; ++l) {
            const auto L = net.at(l);
            if (L.format == OUTPUT_MAJOR)
                output_major(s, L.n_out, L.vals, L.idx, L.ptr, L.bias);
            else if (L.format == INPUT_MAJOR)
                input_major(s, L.n_in, L.n_out, L.vals, L.idx, L.ptr, L.bias);
            else
                dense_rows(s, L.n_in, L.n_out, L.vals, L.bias);
            kwta(s, L.n_out, L.k, L.boost, m);
        }
        for (int64_t c = 0; c < net.classes; ++c) logits[c] = splat(net.head_b[c]);
        for (int64_t i = 0; i < net.n_feat; ++i) {
            const vf v = s.h[i];
            if (!any_nonzero(v)) continue;
            const float* w = net.head_wt + i * net.classes;
            for (int64_t c = 0; c < net.classes; ++c) logits[c] += w[c] * v;
        }
        for (int b = 0; b < m; ++b)
            for (int64_t c = 0; c < net.classes; ++c)
                out[(c0 + b) * net.classes + c] = logits[c][b];
    }
}


// ---- One sample at a time (latency) ------------------------------------------------------
//
// A small batch runs sample by sample with the activations as plain arrays: a dense-input
// layer (output-major) sums each output unit's non-zero weights times their gathered
// inputs, unless the sample has few non-zero inputs and the layer an input-major copy
// (the first layer of an MLP: images are mostly background), then it scatters their rows;
// a layer fed by k-WTA walks the list of winners and scatters each one's row of non-zero
// weights. One thread: sharing a sample's layers with a second thread through
// a spinning worker was measured no faster on the 2-vCPU machines this runs on.

// sum of vals[p] * h[idx[p]] over p in [p, end). With AVX2, eight inputs are loaded
// one by one into a vector (measured faster than the gather instruction on AMD Zen 3).
template <typename Index>
inline float sparse_dot(const float* vals, const Index* idx, uint32_t p, const uint32_t end,
                        const float* h) {
#if defined(__AVX2__) && defined(__FMA__)
    auto inputs = [&](uint32_t q) {
        const Index* i = idx + q;
        return _mm256_setr_ps(h[i[0]], h[i[1]], h[i[2]], h[i[3]], h[i[4]], h[i[5]], h[i[6]],
                              h[i[7]]);
    };
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (; p + 16 <= end; p += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + p), inputs(p), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + p + 8), inputs(p + 8), a1);
    }
    if (p + 8 <= end) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + p), inputs(p), a0);
        p += 8;
    }
    const __m256 a = _mm256_add_ps(a0, a1);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    float sum = _mm_cvtss_f32(q);
    // The remainder is rounded as the kernel built with -march=native rounded it on the
    // project's AMD hosts (GCC's Zen tuning), so tasks stored then keep their bits.
    for (; p < end; ++p) {
        if constexpr (sizeof(Index) == 2)
            sum += __builtin_assoc_barrier(vals[p] * h[idx[p]]);  // a product, then a sum
        else
            sum = std::fma(vals[p], h[idx[p]], sum);
    }
    return sum;
#else
    return dot4(vals, idx, p, end, h);
#endif
}

constexpr int64_t PREFETCH_ROWS = 4;

struct Sample {  // one sample's activations and scratch
    std::vector<float> h, acc;
    std::vector<vf> boosted;  // LANES units a vector, the last one padded (see winners)
    std::vector<vh> high;
    std::vector<uint32_t> tied;
    std::vector<int64_t> act;  // active units (int64: measured 14 % faster than int32 here)
    std::vector<int32_t> cand;
    void fit(int64_t width) {
        if (int64_t(h.size()) >= width) return;
        const int64_t vectors = (width + LANES - 1) / LANES;
        h.assign(width, 0.0f);
        acc.resize(width);
        boosted.resize(vectors);
        high.resize(vectors);
        tied.resize(width);
        act.resize(width);
        cand.resize(vectors * LANES);
    }
};

// act = the units (ascending) with the k largest acc * boost among n. Returns how many.
int64_t winners(Sample& s, const float* boost, int64_t k, int64_t n) {
    int64_t* act = s.act.data();
    if (k >= n) {
        for (int64_t j = 0; j < n; ++j) act[j] = j;
        return n;
    }
    const float* acc = s.acc.data();
    const int64_t vectors = (n + LANES - 1) / LANES;
    float* boosted = reinterpret_cast<float*>(s.boosted.data());
    for (int64_t j = 0; j < n; ++j) boosted[j] = acc[j] * boost[j];
    const float pad = from_key(0);  // a NaN whose key's upper half, 0, no prefix reaches
    for (int64_t j = n; j < vectors * LANES; ++j) boosted[j] = pad;
    auto total = [](const vi& c) { return vi{} + lane_sum(c); };
    const vh* high = s.high.data();
    const uint16_t top = top_half(s.boosted.data(), s.high.data(), vectors, total, vi{} + int32_t(k))[0];
    // The candidates, ascending: the units whose key's upper half reaches top (every
    // winner is one); those above it, and the keys of those at it.
    int32_t* cand = s.cand.data();
    int64_t count = 0;
    const vh at = vh{} + top;
    for (int64_t v = 0; v < vectors; ++v)
        for (uint32_t bits = lane_bits(high[v] >= at); bits; bits &= bits - 1)
            cand[count++] = int32_t(v * LANES + __builtin_ctz(bits));
    uint32_t* keys = s.tied.data();
    int64_t tied = 0;
    for (int64_t q = 0; q < count; ++q) {
        const uint32_t key = order_key(boosted[cand[q]]);
        keys[tied] = key;
        tied += (key >> 16) == top;
    }
    const int64_t rank = k - (count - tied);  // 1 <= rank <= tied
    std::nth_element(keys, keys + rank - 1, keys + tied, std::greater<uint32_t>());
    const float threshold = from_key(keys[rank - 1]);
    int64_t ties = k;  // the candidates equal to the threshold that win: the lowest ones
    for (int64_t q = 0; q < count; ++q) ties -= boosted[cand[q]] > threshold;
    int64_t won = 0;
    for (int64_t q = 0; q < count; ++q) {
        act[won] = cand[q];
        won += wins(boosted[cand[q]], threshold, ties);
    }
    return won;
}

int64_t nonzeros(const float* h, int64_t n, int64_t* act) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
        act[count] = i;
        count += h[i] != 0.0f;
    }
    return count;
}

// acc += each active input's row of non-zero weights times its value. The rows sit at
// scattered places, so each is prefetched a few rows ahead (measured 5 % faster when the
// plan has left the cache since the last call).
template <typename Index>
void scatter_rows(Sample& s, int64_t n_act, const float* vals, const Index* idx,
                  const uint32_t* ptr) {
    float* acc = s.acc.data();
    auto fetch = [&](int64_t q) {
        if (q >= n_act) return;
        const int64_t i = s.act[q];
        const char* v0 = reinterpret_cast<const char*>(vals + ptr[i]);
        const char* v1 = reinterpret_cast<const char*>(vals + ptr[i + 1]);
        for (const char* c = v0; c < v1; c += 64) __builtin_prefetch(c);
        const char* i0 = reinterpret_cast<const char*>(idx + ptr[i]);
        const char* i1 = reinterpret_cast<const char*>(idx + ptr[i + 1]);
        for (const char* c = i0; c < i1; c += 64) __builtin_prefetch(c);
    };
    for (int64_t q = 0; q < PREFETCH_ROWS; ++q) fetch(q);
    for (int64_t q = 0; q < n_act; ++q) {
        fetch(q + PREFETCH_ROWS);
        const int64_t i = s.act[q];
        add_row(acc, vals, idx, ptr[i], ptr[i + 1], s.h[i]);
    }
}

template <typename Index>
void forward_one(const Net<Index>& net, const float* x, int64_t x_cols, float* out, Sample& s) {
    float* h = s.h.data();
    float* acc = s.acc.data();
    std::copy(x, x + x_cols, h);
    int64_t n_act = -1;  // h is dense: its non-zeros are not listed yet
    for (int64_t l = 0; l < net.n_layers; ++l) {
        const auto L = net.at(l);
        const int64_t n_out = L.n_out;
        if (L.format == OUTPUT_MAJOR) {
            if (L.scatter_below > 0) n_act = nonzeros(h, L.n_in, s.act.data());
            if (n_act >= 0 && n_act < L.scatter_below) {
                std::copy(L.bias, L.bias + n_out, acc);
                scatter_rows(s, n_act, L.t_vals, L.t_idx, L.t_ptr);
            } else {
                for (int64_t j = 0; j < n_out; ++j)
                    acc[j] = sparse_dot(L.vals, L.idx, L.ptr[j], L.ptr[j + 1], h) + L.bias[j];
            }
        } else {
            if (n_act < 0) n_act = nonzeros(h, L.n_in, s.act.data());
            std::copy(L.bias, L.bias + n_out, acc);
            if (L.format == INPUT_MAJOR) {
                scatter_rows(s, n_act, L.vals, L.idx, L.ptr);
            } else {
                for (int64_t q = 0; q < n_act; ++q) {
                    const float v = h[s.act[q]];
                    const float* w = L.vals + s.act[q] * n_out;
                    for (int64_t j = 0; j < n_out; ++j) acc[j] += v * w[j];
                }
            }
        }
        n_act = winners(s, L.boost, L.k, n_out);
        std::fill(h, h + std::max(L.n_in, n_out), 0.0f);
        for (int64_t q = 0; q < n_act; ++q) h[s.act[q]] = acc[s.act[q]];
    }
    if (n_act < 0) n_act = nonzeros(h, net.n_feat, s.act.data());
    for (int64_t c = 0; c < net.classes; ++c) out[c] = net.head_b[c];
    for (int64_t q = 0; q < n_act; ++q) {
        const float v = h[s.act[q]];
        const float* w = net.head_wt + s.act[q] * net.classes;
        for (int64_t c = 0; c < net.classes; ++c) out[c] += v * w[c];
    }
}

template <typename Index>
void forward_rows(const Net<Index>& net, const float* x, int64_t x_cols, float* out,
                  int64_t lo, int64_t hi) {
    thread_local Sample s;
    s.fit(net.width(x_cols));
    for (int64_t i = lo; i < hi; ++i)
        forward_one(net, x + i * x_cols, x_cols, out + i * net.classes, s);
}

// Runs run(net) with the plan's index width; -1 for an unknown one.
template <typename Run>
int with_net(const int64_t* hd, Run run) {
    if (hd[H_INDEX_BYTES] == 2)
        run(Net<uint16_t>(hd));
    else if (hd[H_INDEX_BYTES] == 4)
        run(Net<uint32_t>(hd));
    else
        return -1;
    return 0;
}

}  // namespace

extern "C" {

// Samples per vector: chunk bounds that are multiples of this fill whole vectors.
int sparsecl_lanes(void) { return LANES; }

// Columns of a plan's header and of its layer table (sparse_engine/native.py checks it
// packs the same).
int sparsecl_header_cols(void) { return H_COLS; }
int sparsecl_meta_cols(void) { return M_COLS; }

// The highest x86-64 level this CPU and its OS run (1: x86-64 .. 4: x86-64-v4); 0 on
// other architectures. The engine asks the x86-64 build, which runs on any of them.
int sparsecl_cpu_level(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    if (__builtin_cpu_supports("x86-64-v3")) return 3;
    if (__builtin_cpu_supports("x86-64-v2")) return 2;
    return 1;
#else
    return 0;
#endif
}

// The logits of samples lo..hi of x (n x x_cols, row-major) into out (n x classes)
// through a plan's header, LANES samples per vector. Returns 0, or -1 for an unknown
// index width.
int sparsecl_forward(const int64_t* header, const float* x, int64_t x_cols, float* out,
                     int64_t lo, int64_t hi) {
    return with_net(header, [&](const auto& net) { forward(net, x, x_cols, out, lo, hi); });
}

// The logits of samples lo..hi, one sample at a time (small batches: latency).
int sparsecl_forward_rows(const int64_t* header, const float* x, int64_t x_cols, float* out,
                          int64_t lo, int64_t hi) {
    return with_net(header, [&](const auto& net) { forward_rows(net, x, x_cols, out, lo, hi); });
}

}  // extern "C"
