// lmgen's fused CUDA kernels for decode: each replaces a sequence of candle ops that would
// otherwise be one launch each. Compiled to PTX by crates/lmgen/build.rs (feature `cuda` only)
// and loaded through candle's custom-module cache (src/cuda/mod.rs). One `extern "C"` entry per
// dtype, named `{kernel}_{f32,bf16,f16}` as candle's `kernel_name` spells them.
//
// Arithmetic follows the candle ops each kernel replaces: values are widened to f32, and results
// rounded to the storage dtype where candle's op sequence stores them.
#include "common.cuh"
#include "attend.cuh"

// Residual add then RMSNorm, one block per row: `sum = x + h` (rounded to T, as candle's add),
// `normed = sum / sqrt(mean(sum^2) + eps) * w` (in f32, as candle's rmsnorm).
// x, h: [rows, dim]; w: [dim]; out: [2, rows, dim] = [sum, normed].
template <typename T>
__device__ void add_rms_norm(const T* x, const T* h, const T* w, T* out, int rows, int dim, float eps) {
    __shared__ float scratch[32];
    int row = blockIdx.x;
    const T* xr = x + (size_t)row * dim;
    const T* hr = h + (size_t)row * dim;
    T* sum = out + (size_t)row * dim;
    T* normed = out + (size_t)rows * dim + (size_t)row * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        T s = from_f<T>(to_f(xr[i]) + to_f(hr[i]));
        sum[i] = s;
        float f = to_f(s);
        ss += f * f;
    }
    ss = block_sum(ss, scratch);
    float inv = rsqrtf(ss / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        normed[i] = from_f<T>(to_f(sum[i]) * inv * to_f(w[i]));
    }
}

// `add_rms_norm` for many rows (a prompt): a warp per row, 16-byte loads, the row's sum held in
// registers between the two passes (the one-block-a-row kernel leaves most of a prompt's rows'
// loads waiting behind its block barriers). dim a multiple of V = 16 / sizeof(T), at most
// 32 * V * C (C: the 16-byte chunks a lane holds, 4 or 16 by the entry); every row 16-byte aligned.
template <typename T, int C>
__device__ void add_rms_norm_rows(const T* x, const T* h, const T* w, T* out, int rows, int dim, float eps) {
    constexpr int V = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    int chunks = dim / V;
    const uint4* xr = reinterpret_cast<const uint4*>(x + (size_t)row * dim);
    const uint4* hr = reinterpret_cast<const uint4*>(h + (size_t)row * dim);
    const uint4* wr = reinterpret_cast<const uint4*>(w);
    uint4* sum = reinterpret_cast<uint4*>(out + (size_t)row * dim);
    uint4* normed = reinterpret_cast<uint4*>(out + (size_t)rows * dim + (size_t)row * dim);
    uint4 sv[C];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < C; k++) {
        int c = lane + 32 * k;
        if (c < chunks) {
            uint4 a = xr[c], b = hr[c];
            const T* ae = reinterpret_cast<const T*>(&a);
            const T* be = reinterpret_cast<const T*>(&b);
            T* se = reinterpret_cast<T*>(&sv[k]);
#pragma unroll
            for (int i = 0; i < V; i++) {
                se[i] = from_f<T>(to_f(ae[i]) + to_f(be[i]));
                float f = to_f(se[i]);
                ss += f * f;
            }
            sum[c] = sv[k];
        }
    }
    float inv = rsqrtf(warp_sum(ss) / dim + eps);
#pragma unroll
    for (int k = 0; k < C; k++) {
        int c = lane + 32 * k;
        if (c < chunks) {
            uint4 wv = wr[c], o;
            const T* we = reinterpret_cast<const T*>(&wv);
            const T* se = reinterpret_cast<const T*>(&sv[k]);
            T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
            for (int i = 0; i < V; i++) oe[i] = from_f<T>(to_f(se[i]) * inv * to_f(we[i]));
            normed[c] = o;
        }
    }
}

// Greedy selection and the chosen token's log-probability of each row of raw logits
// [rows, vocab], in two launches (`greedy_part` over chunks of the rows, `greedy_combine`):
// out[row] = (id, logit[id] - logsumexp(row)) as two f32 (ids below 2^24 are
// exact), `id` the first maximum, or the first NaN where the row has one (the host's `argmax`,
// `torch.argmax`); an all -inf row gives id 0. The log-sum-exp is the host's `max + log(sum
// exp(x - max))`, summed in another order.
#define NO_INDEX 0x7fffffff
struct Pick {
    float best;  // largest value seen (NaN skipped)
    int at;      // its first index; NO_INDEX for none
    int nan;     // first NaN's index; NO_INDEX for none
    float m, s;  // running maximum of the finite-or-+inf values, and sum of exp(x - m)
};
__device__ __forceinline__ Pick pick_merge(Pick a, Pick b) {
    Pick r;
    if (b.best > a.best || (b.best == a.best && b.at < a.at)) {
        r.best = b.best;
        r.at = b.at;
    } else {
        r.best = a.best;
        r.at = a.at;
    }
    r.nan = min(a.nan, b.nan);
    r.m = fmaxf(a.m, b.m);
    r.s = r.m == -INFINITY ? 0.f
                           : (a.s == 0.f ? 0.f : a.s * expf(a.m - r.m)) + (b.s == 0.f ? 0.f : b.s * expf(b.m - r.m));
    return r;
}
__device__ __forceinline__ Pick pick_shfl(Pick p, int o) {
    Pick q;
    q.best = __shfl_xor_sync(0xffffffff, p.best, o);
    q.at = __shfl_xor_sync(0xffffffff, p.at, o);
    q.nan = __shfl_xor_sync(0xffffffff, p.nan, o);
    q.m = __shfl_xor_sync(0xffffffff, p.m, o);
    q.s = __shfl_xor_sync(0xffffffff, p.s, o);
    return q;
}
// Element `i` of value `v` added to `p`; a thread's indices rise, so a strictly larger value
// replaces the best (the first maximum stays).
__device__ __forceinline__ void pick_add(Pick& p, float v, int i) {
    if (v != v) {
        p.nan = min(p.nan, i);
        return;
    }
    if (v > p.best) {
        p.best = v;
        p.at = i;
    }
    if (v == -INFINITY) return;
    if (v > p.m) {
        p.s = p.s * expf(p.m - v) + 1.f;
        p.m = v;
    } else {
        p.s += expf(v - p.m);
    }
}
__device__ __forceinline__ Pick pick_none() { return Pick{-INFINITY, NO_INDEX, NO_INDEX, -INFINITY, 0.f}; }

// Each block's share of a row: grid (splits, rows), block z of row `row` taking the elements
// [z * chunk, (z + 1) * chunk) of logits [rows, vocab] into part[row * splits + z].
template <typename T>
__device__ void greedy_part(const T* logits, Pick* part, int vocab, int chunk) {
    __shared__ Pick warps[32];
    int row = blockIdx.y, z = blockIdx.x;
    const T* x = logits + (size_t)row * vocab;
    int hi = min((z + 1) * chunk, vocab);
    Pick p = pick_none();
    for (int i = z * chunk + threadIdx.x; i < hi; i += blockDim.x) pick_add(p, to_f(x[i]), i);
    for (int o = 16; o > 0; o >>= 1) p = pick_merge(p, pick_shfl(p, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    if (lane == 0) warps[warp] = p;
    __syncthreads();
    if (warp != 0) return;
    p = lane < nwarps ? warps[lane] : pick_none();
    for (int o = 16; o > 0; o >>= 1) p = pick_merge(p, pick_shfl(p, o));
    if (lane == 0) part[(size_t)row * gridDim.x + z] = p;
}

// The row's shares merged, one warp per row: out[row] = (id, logprob) as described above.
__device__ void greedy_combine(const Pick* part, float* out, int splits) {
    int row = blockIdx.x, lane = threadIdx.x;
    Pick p = pick_none();
    for (int i = lane; i < splits; i += 32) p = pick_merge(p, part[(size_t)row * splits + i]);
    for (int o = 16; o > 0; o >>= 1) p = pick_merge(p, pick_shfl(p, o));
    if (lane != 0) return;
    float lse = p.m == -INFINITY ? -INFINITY : p.m + logf(p.s);
    int id = p.nan != NO_INDEX ? p.nan : (p.at != NO_INDEX ? p.at : 0);
    float chosen = p.nan != NO_INDEX ? NAN : (p.at != NO_INDEX ? p.best : -INFINITY);
    out[2 * row] = (float)id;
    out[2 * row + 1] = chosen - lse;
}
extern "C" __global__ void lmgen_greedy_combine_f32(const Pick* part, float* out, int splits) {
    pdl_wait();
    pdl_trigger();
    greedy_combine(part, out, splits);
}

// SiLU-gated product over a fused gate/up projection: gate_up [rows, 2 * inter] (the gate's
// columns first) -> out [rows, inter] = silu(gate) * up, silu rounded to T first (candle's
// `silu` then `mul`).
template <typename T>
__device__ void swiglu(const T* gate_up, T* out, int rows, int inter) {
    constexpr int V = 16 / sizeof(T);
    size_t n = (size_t)rows * inter;
    bool aligned = ((reinterpret_cast<uintptr_t>(gate_up) | reinterpret_cast<uintptr_t>(out)) & 15) == 0;
    if (inter % V == 0 && aligned && n / V <= 0xffffffffu) {
        // 16 bytes of gate, of up and of the output a thread at a time, 32-bit index math.
        unsigned per_row = inter / V, count = (unsigned)(n / V);
        for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
            unsigned r = i / per_row, c = (i - r * per_row) * V;
            const T* g = gate_up + (size_t)r * 2 * inter + c;
            uint4 gv = *reinterpret_cast<const uint4*>(g), uv = *reinterpret_cast<const uint4*>(g + inter), o;
            const T* ge = reinterpret_cast<const T*>(&gv);
            const T* ue = reinterpret_cast<const T*>(&uv);
            T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
            for (int e = 0; e < V; e++) {
                float gf = to_f(ge[e]);
                float sf = to_f(from_f<T>(gf / (1.f + expf(-gf))));
                oe[e] = from_f<T>(sf * to_f(ue[e]));
            }
            *reinterpret_cast<uint4*>(out + (size_t)i * V) = o;
        }
        return;
    }
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / inter, c = i % inter;
        float g = to_f(gate_up[r * 2 * inter + c]);
        float u = to_f(gate_up[r * 2 * inter + inter + c]);
        float s = to_f(from_f<T>(g / (1.f + expf(-g))));
        out[i] = from_f<T>(s * u);
    }
}

// The splits of `attend_rows` with `part` combined: part [rows, splits, d + 2] (sums, maximum,
// exponentials' sum) -> out [rows, d], one block per row: each split's terms rescaled to the
// largest maximum, as one pass over all keys would have them (up to f32 rounding). Empty splits
// (maximum -inf) add nothing; a NaN maximum is kept, so a NaN reaches the output as in one pass.
template <typename T>
__device__ void attention_combine(const float* part, T* out, int splits, int d) {
    const float* rp = part + (size_t)blockIdx.x * splits * (d + 2);
    float m = -INFINITY;
    for (int i = 0; i < splits; i++) m = fmaxf(m, rp[i * (d + 2) + d]);
    float l = 0.f;
    for (int i = 0; i < splits; i++) {
        float mi = rp[i * (d + 2) + d];
        if (mi != -INFINITY) l += expf(mi - m) * rp[i * (d + 2) + d + 1];
    }
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.f;
        for (int i = 0; i < splits; i++) {
            float mi = rp[i * (d + 2) + d];
            if (mi != -INFINITY) acc += expf(mi - m) * rp[i * (d + 2) + c];
        }
        out[(size_t)blockIdx.x * d + c] = from_f<T>(acc / l);
    }
}

// Attention of one query per head over `s` cached keys (decode), grouped-query heads:
// `softmax(q k^T * scale) v` with scores and softmax in f32.
// q: [b, nh, 1, d] contiguous; k, v: [b, nkv, s, d] with the last dim contiguous and element
// strides (batch, head, position) given; out: [b, nh, 1, d]. One block per (head, batch), or
// with `part` [b, nh, splits, d + 2] one per (head, batch, split), split z taking the keys
// [z * chunk, (z + 1) * chunk) (`attention_combine` then adds the splits up).
template <typename T>
__device__ void decode_attention(const T* q, const T* k, const T* v, T* out, float* part, int chunk, int nh,
                                 int nkv, int s, int d, long long k_sb, long long k_sh, long long k_ss,
                                 long long v_sb, long long v_sh, long long v_ss, float scale) {
    int head = blockIdx.x, batch = blockIdx.y;
    int kvh = head / (nh / nkv);
    const T* qp = q + ((size_t)batch * nh + head) * d;
    long long lo = 0;
    if (part) {
        lo = min((long long)blockIdx.z * chunk, (long long)s);
        s = (int)(min(lo + chunk, (long long)s) - lo);
        part += (((size_t)batch * nh + head) * gridDim.z + blockIdx.z) * (d + 2);
    }
    StridedRows<T> keys{k + batch * k_sb + kvh * k_sh + lo * k_ss, k_ss};
    StridedRows<T> values{v + batch * v_sb + kvh * v_sh + lo * v_ss, v_ss};
    attend_rows<T>(qp, keys, values, out + ((size_t)batch * nh + head) * d, part, s, d, scale);
}

// The paged engine's decode tokens: `n` sequences of a packed step, each one new token at
// position `tokens[i]` of the step's `total`, attending over the slots
// `slots[offsets[i]..offsets[i + 1]]` of the store (its cached tokens, then the new one).
// index: [tokens (n) | offsets (n + 1) | slots]; q: [1, nh, total, d] contiguous; store_k,
// store_v: [nkv, slot_count, d] contiguous; out: [1, nh, n, d]. One block per (head, sequence).
template <typename T>
__device__ void paged_decode_attention(const T* q, const T* store_k, const T* store_v, T* out,
                                       const uint32_t* index, int nh, int nkv, int total, int n,
                                       int slot_count, int d, float scale) {
    int head = blockIdx.x, i = blockIdx.y;
    int kvh = head / (nh / nkv);
    const uint32_t* tokens = index;
    const uint32_t* offsets = index + n;
    const uint32_t* slots = index + 2 * n + 1;
    uint32_t off = offsets[i];
    int s = (int)(offsets[i + 1] - off);
    const T* qp = q + ((size_t)head * total + tokens[i]) * d;
    size_t head_base = (size_t)kvh * slot_count * d;
    SlotRows<T> keys{store_k + head_base, slots + off, d};
    SlotRows<T> values{store_v + head_base, slots + off, d};
    attend_rows<T>(qp, keys, values, out + ((size_t)head * n + i) * d, nullptr, s, d, scale);
}

// Query heads one block of `grouped_attention` takes (of one key/value head), and the keys of
// one tile (one a thread in the scores).
constexpr int PG_HEADS = 8;
constexpr int PG_TILE = 256;

// Decode attention with the query heads of a key/value head taken together, so each cached key
// and value row is read once for all of them (one block per query head reads it nh / nkv times),
// split across blocks as flash-decoding does. Block (x, y, z): key/value head x / head_blocks,
// its query heads from (x % head_blocks) * PG_HEADS (at most PG_HEADS of them), sequence or
// batch row y (the caller's `Rows` and query pointer), split z of `splits`: the split's tiles of
// PG_TILE keys one after another with a running maximum and sum per head.
// Query head g of the block at `q0 + g * q_stride` [d]; its output row `row0 + g * row_stride`:
// with `part` (splits > 1) its unnormalised sums, maximum and exponentials' sum go to part
// [rows, splits, d + 2] (`attention_combine` adds them up; an empty split writes a maximum of
// -inf), else out [rows, d] itself.
// 256 threads; d a multiple of V = 16 bytes of elements, d / V dividing 32, d <= 128 (the host
// checks: `paged_attention::grouped_applies`). Dynamic shared memory: `grouped_shared_bytes`.
struct GroupHeads {
    int kvh, h0, heads;
};
__device__ __forceinline__ GroupHeads group_heads(int nh, int nkv) {
    const int group = nh / nkv;
    const int head_blocks = (group + PG_HEADS - 1) / PG_HEADS;
    const int kvh = blockIdx.x / head_blocks;
    const int h0 = kvh * group + (blockIdx.x % head_blocks) * PG_HEADS;
    return GroupHeads{kvh, h0, min(PG_HEADS, kvh * group + group - h0)};
}

template <typename T, typename Rows>
__device__ void grouped_attention(const T* q0, size_t q_stride, Rows keys, Rows values, int s, int heads,
                                  size_t row0, size_t row_stride, T* out, float* part, int splits, int d,
                                  float scale) {
    constexpr int V = 16 / sizeof(T);
    extern __shared__ float smem[];
    __shared__ float run_m[PG_HEADS], run_l[PG_HEADS], alpha[PG_HEADS];
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int z = blockIdx.z;
    const int tiles = (s + PG_TILE - 1) / PG_TILE;
    const int per = (tiles + splits - 1) / splits;
    const int t0 = z * per, t1 = min(tiles, t0 + per);
    if (t0 >= t1) {  // an empty split (a short sequence in a launch sized for long ones)
        if (part && threadIdx.x < heads) {
            float* pr = part + ((row0 + threadIdx.x * row_stride) * splits + z) * (d + 2);
            pr[d] = -INFINITY;
            pr[d + 1] = 0.f;
        }
        return;
    }
    float* qs = smem;                        // [PG_HEADS, d]
    float* p = qs + PG_HEADS * d;            // [PG_HEADS, PG_TILE]
    float* partial = p + PG_HEADS * PG_TILE; // [warps, PG_HEADS, d]
    for (int e = threadIdx.x; e < heads * d; e += blockDim.x) {
        int g = e / d, c = e % d;
        qs[e] = to_f(q0[g * q_stride + c]);
    }
    if (threadIdx.x < PG_HEADS) {
        run_m[threadIdx.x] = -INFINITY;
        run_l[threadIdx.x] = 0.f;
    }
    const int chunks = d / V;
    const int groups = blockDim.x / chunks;  // of d / V threads, a value row in 16-byte chunks
    const int rg = threadIdx.x / chunks, c = threadIdx.x % chunks;
    float acc[PG_HEADS][V];
#pragma unroll
    for (int g = 0; g < PG_HEADS; g++) {
#pragma unroll
        for (int e = 0; e < V; e++) acc[g][e] = 0.f;
    }
    __syncthreads();
    for (int t = t0; t < t1; t++) {
        const int lo = t * PG_TILE, cnt = min(PG_TILE, s - lo);
        // Scores: one key a thread, its row loaded once for every head.
        for (int j = threadIdx.x; j < cnt; j += blockDim.x) {
            const T* kr = keys(lo + j);
            float dot[PG_HEADS];
#pragma unroll
            for (int g = 0; g < PG_HEADS; g++) dot[g] = 0.f;
#pragma unroll 8
            for (int cc = 0; cc < chunks; cc++) {
                float kf[V];
                load_elems<T, V>(kr + cc * V, kf);
#pragma unroll
                for (int g = 0; g < PG_HEADS; g++) {
                    if (g < heads) {
                        const float* qg = qs + g * d + cc * V;
#pragma unroll
                        for (int e = 0; e < V; e++) dot[g] = fmaf(qg[e], kf[e], dot[g]);
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < PG_HEADS; g++) {
                if (g < heads) p[g * PG_TILE + j] = dot[g] * scale;
            }
        }
        __syncthreads();
        // Softmax of the tile: one warp a head, against the head's running maximum.
        for (int g = warp; g < heads; g += warps) {
            float m = -INFINITY;
            for (int j = lane; j < cnt; j += 32) m = fmaxf(m, p[g * PG_TILE + j]);
            m = warp_max(m);
            const float m_old = run_m[g], m_new = fmaxf(m_old, m);
            // exp(-inf - -inf) would be NaN: a first tile has nothing to rescale.
            const float a = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
            float l = 0.f;
            for (int j = lane; j < cnt; j += 32) {
                float e = expf(p[g * PG_TILE + j] - m_new);
                p[g * PG_TILE + j] = e;
                l += e;
            }
            l = warp_sum(l);
            if (lane == 0) {
                run_m[g] = m_new;
                run_l[g] = run_l[g] * a + l;
                alpha[g] = a;
            }
        }
        __syncthreads();
        // Values: each group of threads its own keys, a 16-byte chunk of the row a thread.
#pragma unroll
        for (int g = 0; g < PG_HEADS; g++) {
            const float a = g < heads ? alpha[g] : 0.f;
#pragma unroll
            for (int e = 0; e < V; e++) acc[g][e] *= a;
        }
        if (rg < groups) {
            for (int j = rg; j < cnt; j += groups) {
                float vf[V];
                load_elems<T, V>(values(lo + j) + c * V, vf);
#pragma unroll
                for (int g = 0; g < PG_HEADS; g++) {
                    if (g < heads) {
                        const float pg = p[g * PG_TILE + j];
#pragma unroll
                        for (int e = 0; e < V; e++) acc[g][e] = fmaf(pg, vf[e], acc[g][e]);
                    }
                }
            }
        }
        __syncthreads();  // the tile's exponentials read before the next tile's scores
    }
    // The groups' sums: across a warp's groups by shuffles, then across warps in shared memory.
#pragma unroll
    for (int g = 0; g < PG_HEADS; g++) {
#pragma unroll
        for (int e = 0; e < V; e++) {
            for (int o = chunks; o < 32; o <<= 1) acc[g][e] += __shfl_xor_sync(0xffffffff, acc[g][e], o);
        }
    }
    if (lane < chunks) {
#pragma unroll
        for (int g = 0; g < PG_HEADS; g++) {
            if (g < heads) {
#pragma unroll
                for (int e = 0; e < V; e++) partial[(warp * PG_HEADS + g) * d + c * V + e] = acc[g][e];
            }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < heads * d; e += blockDim.x) {
        int g = e / d, cc = e % d;
        float sum = 0.f;
        for (int w = 0; w < warps; w++) sum += partial[(w * PG_HEADS + g) * d + cc];
        size_t row = row0 + g * row_stride;
        if (part) {
            part[(row * splits + z) * (d + 2) + cc] = sum;
        } else {
            out[row * d + cc] = from_f<T>(sum / run_l[g]);
        }
    }
    if (part && threadIdx.x < heads) {
        float* pr = part + ((row0 + threadIdx.x * row_stride) * splits + z) * (d + 2);
        pr[d] = run_m[threadIdx.x];
        pr[d + 1] = run_l[threadIdx.x];
    }
}


// `grouped_attention` over the paged engine's decode tokens (`paged_decode_attention`'s
// arguments; out [1, nh, n, d], part [nh * n, splits, d + 2]): block (x, i, z) takes sequence i.
template <typename T>
__device__ void paged_decode_grouped(const T* q, const T* store_k, const T* store_v, T* out, float* part,
                                     const uint32_t* index, int nh, int nkv, int total, int n,
                                     int slot_count, int d, int splits, float scale) {
    const GroupHeads gh = group_heads(nh, nkv);
    const int i = blockIdx.y;
    const uint32_t* offsets = index + n;
    const uint32_t* slots = index + 2 * n + 1;
    const uint32_t off = offsets[i];
    const size_t head_base = (size_t)gh.kvh * slot_count * d;
    SlotRows<T> keys{store_k + head_base, slots + off, d};
    SlotRows<T> values{store_v + head_base, slots + off, d};
    grouped_attention<T>(q + ((size_t)gh.h0 * total + index[i]) * d, (size_t)total * d, keys, values,
                         (int)(offsets[i + 1] - off), gh.heads, (size_t)gh.h0 * n + i, n, out, part,
                         splits, d, scale);
}

// `grouped_attention` over cache buffers (`decode_attention`'s arguments; out [b, nh, 1, d],
// part [b * nh, splits, d + 2]): block (x, batch, z) takes the batch row's first `s` keys.
template <typename T>
__device__ void decode_grouped(const T* q, const T* k, const T* v, T* out, float* part, int splits, int nh,
                               int nkv, int s, int d, long long k_sb, long long k_sh, long long k_ss,
                               long long v_sb, long long v_sh, long long v_ss, float scale) {
    const GroupHeads gh = group_heads(nh, nkv);
    const int batch = blockIdx.y;
    StridedRows<T> keys{k + batch * k_sb + gh.kvh * k_sh, k_ss};
    StridedRows<T> values{v + batch * v_sb + gh.kvh * v_sh, v_ss};
    const size_t row0 = (size_t)batch * nh + gh.h0;
    grouped_attention<T>(q + row0 * d, d, keys, values, s, gh.heads, row0, 1, out, part, splits, d, scale);
}

// The new keys (or values) of those `n` tokens written into the store at each sequence's last
// slot. src: [1, nkv, total, d] contiguous; dst: [nkv, slot_count, d]; index as above.
template <typename T>
__device__ void paged_kv_write(const T* src, T* dst, const uint32_t* index, int n, int nkv, int total,
                               int slot_count, int d) {
    const uint32_t* tokens = index;
    const uint32_t* offsets = index + n;
    const uint32_t* slots = index + 2 * n + 1;
    size_t count = (size_t)n * nkv * d;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        size_t seq = e / ((size_t)nkv * d), rem = e % ((size_t)nkv * d);
        size_t g = rem / d, c = rem % d;
        uint32_t slot = slots[offsets[seq + 1] - 1];
        if (slot >= (uint32_t)slot_count) continue;
        dst[(g * slot_count + slot) * d + c] = src[(g * total + tokens[seq]) * d + c];
    }
}

// One new token's keys (or values) of each batch row written into a cache buffer at the row's
// slot, read from device memory (a captured decode graph replays this with new slots).
// src: [b, nkv, 1, d] contiguous; dst: [b, nkv, cap, d] contiguous; slots: [b].
template <typename T>
__device__ void kv_write(const T* src, T* dst, const uint32_t* slots, int b, int nkv, int cap, int d) {
    size_t n = (size_t)b * nkv * d;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / ((size_t)nkv * d), rem = i % ((size_t)nkv * d);
        uint32_t slot = slots[row];
        if (slot >= (uint32_t)cap) continue;
        dst[((row * nkv + rem / d) * cap + slot) * d + rem % d] = src[i];
    }
}

// `out = x w^T (+ bias)` for a few rows of activations (decode): one warp per output column,
// each lane reading 16 bytes of the weight row at a time against every row of `x` (from L1);
// sums in f32, rounded to T once (with the bias added before), in the same order either way.
// DB: the next U loads issued before the current U are used (8 in flight per lane), the first
// ones before `pdl_wait` (a dependent launch streams them while the kernel before it finishes);
// else U in flight, with fewer registers: more blocks fit an SM, which a grid of a little more
// than one wave of the DB kernel needs (src/cuda/gemv.rs chooses).
// x: [R, k]; w: [n, k]; bias: [n] or null; out: [R, n]; k a multiple of 16 bytes, x and w
// 16-byte aligned.
template <typename T, int R, bool DB>
__device__ void gemv(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                     T* __restrict__ out, int n, int k) {
    constexpr int V = 16 / sizeof(T);  // elements in 16 bytes
    constexpr int U = 4;               // loads in flight per lane (twice that with DB)
    int lane = threadIdx.x & 31;
    int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= n) {
        pdl_trigger();
        return;
    }
    int chunks = k / V;
    const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)j * k);
    const uint4* xr = reinterpret_cast<const uint4*>(x);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    if constexpr (DB) {
        uint4 next[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int cu = lane + 32 * u;
            next[u] = cu < chunks ? load_stream(wr + cu) : make_uint4(0, 0, 0, 0);
        }
        pdl_wait();
        pdl_trigger();
        for (int c = lane; c < chunks; c += 32 * U) {
            uint4 wv[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                wv[u] = next[u];
                int cn = c + 32 * (U + u);
                next[u] = cn < chunks ? load_stream(wr + cn) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int cu = c + 32 * u;
                if (cu < chunks) {
#pragma unroll
                    for (int r = 0; r < R; r++) acc[r] += dot16<T>(wv[u], __ldg(xr + (size_t)r * chunks + cu));
                }
            }
        }
    } else {
        pdl_wait();
        pdl_trigger();
        int c = lane;
        for (; c + 32 * (U - 1) < chunks; c += 32 * U) {
            uint4 wv[U];
#pragma unroll
            for (int u = 0; u < U; u++) wv[u] = load_stream(wr + c + 32 * u);
#pragma unroll
            for (int u = 0; u < U; u++) {
#pragma unroll
                for (int r = 0; r < R; r++) acc[r] += dot16<T>(wv[u], __ldg(xr + (size_t)r * chunks + c + 32 * u));
            }
        }
        for (; c < chunks; c += 32) {
            uint4 wv = load_stream(wr + c);
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] += dot16<T>(wv, __ldg(xr + (size_t)r * chunks + c));
        }
    }
    float b = bias ? to_f(bias[j]) : 0.f;
#pragma unroll
    for (int r = 0; r < R; r++) {
        float s = warp_sum(acc[r]);
        if (lane == 0) out[(size_t)r * n + j] = from_f<T>(s + b);
    }
}

// 16 quants (int8) of a Q8_0 row times 16 activations from `xp` (T), in f32.
template <typename T>
__device__ __forceinline__ float dot_q8(uint4 qv, const T* xp) {
    constexpr int V = 16 / sizeof(T);
    const int8_t* qs = reinterpret_cast<const int8_t*>(&qv);
    float xf[16];
#pragma unroll
    for (int i = 0; i < 16; i += V) load_elems<T, V>(xp + i, xf + i);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++) s = fmaf((float)qs[i], xf[i], s);
    return s;
}

// A Q8_0 weight's product for R activation rows (decode): the weight is `q * d` per block of
// 32 (quants [n, k] int8, scales [n, k / 32] f16, ggml's Q8_0 split into two arrays at load):
// out[r, j] = sum over blocks b of d_jb * sum_{i in b} q_ji x_ri, f32 sums, rounded to T once.
// One warp per output column; a lane takes 16 quants (half a block) at a time, four in flight,
// and dots them with every row. x: [R, k]; out: [R, n]; k a multiple of 32.
template <typename T, int R>
__device__ void gemv_q8(const T* __restrict__ x, const int8_t* __restrict__ q, const __half* __restrict__ scales,
                        T* __restrict__ out, int n, int k) {
    constexpr int U = 4;
    int lane = threadIdx.x & 31;
    int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= n) return;
    int chunks = k / 16;
    const uint4* qr = reinterpret_cast<const uint4*>(q + (size_t)j * k);
    const __half* sr = scales + (size_t)j * (k / 32);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    int c = lane;
    for (; c + 32 * (U - 1) < chunks; c += 32 * U) {
        uint4 qv[U];
#pragma unroll
        for (int u = 0; u < U; u++) qv[u] = load_stream(qr + c + 32 * u);
#pragma unroll
        for (int u = 0; u < U; u++) {
            int cu = c + 32 * u;
            float d = __half2float(sr[cu >> 1]);
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] = fmaf(d, dot_q8<T>(qv[u], x + (size_t)r * k + (size_t)cu * 16), acc[r]);
        }
    }
    for (; c < chunks; c += 32) {
        uint4 qv = load_stream(qr + c);
        float d = __half2float(sr[c >> 1]);
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = fmaf(d, dot_q8<T>(qv, x + (size_t)r * k + (size_t)c * 16), acc[r]);
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        float s = warp_sum(acc[r]);
        if (lane == 0) out[(size_t)r * n + j] = from_f<T>(s);
    }
}

// The Q8_0 weight as T (prompts: the product then runs on cuBLAS): out[i] = q_i * d_{i / 32},
// rounded to T. q: [n * k] int8; scales: [n * k / 32] f16; out: [n * k].
template <typename T>
__device__ void dequant_q8(const int8_t* __restrict__ q, const __half* __restrict__ scales, T* __restrict__ out,
                           size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        out[i] = from_f<T>((float)q[i] * __half2float(scales[i >> 5]));
    }
}

// The gated MLP's first half for one activation row: `out[j] = silu(g) * u` with `g`, `u` the
// products of `x` with rows `j` and `inter + j` of the fused gate/up weight (plus their bias), each
// rounded to T as the product's output is, silu rounded to T, then the product rounded (the
// `gemv` then `swiglu` launches, in one). One warp per output column, both weight rows streamed.
// x: [k]; w: [2 * inter, k]; bias: [2 * inter] or null; out: [inter].
template <typename T>
__device__ void gemv_swiglu(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                            T* __restrict__ out, int inter, int k) {
    constexpr int V = 16 / sizeof(T);
    constexpr int U = 4;  // loads in flight per weight row per lane
    int lane = threadIdx.x & 31;
    int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= inter) {
        pdl_trigger();
        return;
    }
    int chunks = k / V;
    const uint4* wg = reinterpret_cast<const uint4*>(w + (size_t)j * k);
    const uint4* wu = reinterpret_cast<const uint4*>(w + ((size_t)inter + j) * k);
    const uint4* xr = reinterpret_cast<const uint4*>(x);
    float ag = 0.f, au = 0.f;
    uint4 ng[U], nu[U];
    const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int i = 0; i < U; i++) {
        int ci = lane + 32 * i;
        ng[i] = ci < chunks ? load_stream(wg + ci) : zero;
        nu[i] = ci < chunks ? load_stream(wu + ci) : zero;
    }
    pdl_wait();
    pdl_trigger();
    for (int c = lane; c < chunks; c += 32 * U) {
        uint4 g[U], u[U];
#pragma unroll
        for (int i = 0; i < U; i++) {
            g[i] = ng[i];
            u[i] = nu[i];
            int cn = c + 32 * (U + i);
            ng[i] = cn < chunks ? load_stream(wg + cn) : zero;
            nu[i] = cn < chunks ? load_stream(wu + cn) : zero;
        }
#pragma unroll
        for (int i = 0; i < U; i++) {
            int ci = c + 32 * i;
            if (ci < chunks) {
                uint4 xv = __ldg(xr + ci);
                ag += dot16<T>(g[i], xv);
                au += dot16<T>(u[i], xv);
            }
        }
    }
    ag = warp_sum(ag);
    au = warp_sum(au);
    if (lane == 0) {
        float g = to_f(from_f<T>(ag + (bias ? to_f(bias[j]) : 0.f)));
        float u = to_f(from_f<T>(au + (bias ? to_f(bias[inter + j]) : 0.f)));
        float s = to_f(from_f<T>(g / (1.f + expf(-g))));
        out[j] = from_f<T>(s * u);
    }
}

// One decode token of each batch row, from the fused q/k/v projection to the cache: each query
// and key head RMS-normed over its d features when `qw`/`kw` are given (Qwen3's q_norm/k_norm:
// f32, rounded once, as candle's rms_norm), rotated over its first r features when `cos` is
// given (rotate_half RoPE in T arithmetic, as candle's rope: `x1 c - x2 s`, `x1 s + x2 c`), then
// the queries written to `q_out` and the keys and values into the caches at `slots[row]` (the
// norm, two rope and two kv_write launches, in one).
// qkv: [b, (nh + 2 nkv) * d]; cos, sin: [b, r / 2]; qw, kw: [d]; q_out: [b, nh, d];
// k_cache, v_cache: [b, nkv, cap, d]; slots: [b]. Grid (nh + 2 nkv, b); block: d / 2 threads
// rounded up to a warp, each holding two features: a rotated pair (c, c + r/2) for c < r/2,
// else two passed-through neighbours at r + 2 (c - r/2).
template <typename T>
__device__ void rope_kv_write(const T* qkv, const T* cos, const T* sin, const T* qw, const T* kw, float eps,
                              T* q_out, T* k_cache, T* v_cache, const uint32_t* slots, int nh, int nkv, int d,
                              int r, int cap) {
    __shared__ float scratch[32];
    int head = blockIdx.x, row = blockIdx.y, c = threadIdx.x;
    int half = r / 2;
    bool active = c < d / 2;
    int i1 = c < half ? c : r + 2 * (c - half);
    int i2 = c < half ? c + half : i1 + 1;
    const T* src = qkv + (size_t)row * (nh + 2 * nkv) * d + (size_t)head * d;
    T a = active ? src[i1] : from_f<T>(0.f);
    T b = active ? src[i2] : from_f<T>(0.f);
    bool is_q = head < nh, is_k = !is_q && head < nh + nkv;
    const T* nw = is_q ? qw : (is_k ? kw : nullptr);
    if (nw != nullptr) {  // the same for the whole block
        float fa = to_f(a), fb = to_f(b);
        float inv = rsqrtf(block_sum(fa * fa + fb * fb, scratch) / d + eps);
        if (active) {
            a = from_f<T>(inv * fa * to_f(nw[i1]));
            b = from_f<T>(inv * fb * to_f(nw[i2]));
        }
    }
    if (!active) return;
    if (cos != nullptr && (is_q || is_k) && c < half) {
        T cs = cos[(size_t)row * half + c], sn = sin[(size_t)row * half + c];
        T y1 = a * cs - b * sn;
        T y2 = a * sn + b * cs;
        a = y1;
        b = y2;
    }
    T* dst;
    if (is_q) {
        dst = q_out + ((size_t)row * nh + head) * d;
    } else {
        uint32_t slot = slots[row];
        if (slot >= (uint32_t)cap) return;
        int g = is_k ? head - nh : head - nh - nkv;
        dst = (is_k ? k_cache : v_cache) + (((size_t)row * nkv + g) * cap + slot) * d;
    }
    dst[i1] = a;
    dst[i2] = b;
}

// A prompt's fused q/k/v projection into heads, in one launch: the bias added, each query and
// key head's RMSNorm (Qwen3's `q_norm` / `k_norm`) and rotation (RoPE, as `rope_kv_write`
// pairs the features), each head written in attention's layout. qkv [b * t, (nh + 2 nkv) d]
// contiguous; bias [(nh + 2 nkv) d] or null; cos, sin [b * t, r / 2] or null; qw, kw [d] or null;
// out [b, nh + 2 nkv, t, d]: the query heads, then the key heads, then the value heads. Each warp
// takes one head of one token at a time, a lane the feature pairs c, c + 32, ... (d <= 2 * 32 *
// QKV_PAIRS).
constexpr int QKV_PAIRS = 8;
template <typename T>
__device__ void qkv_heads(const T* qkv, const T* bias, const T* cos, const T* sin, const T* qw, const T* kw,
                          float eps, T* out, int rows, int t, int nh, int nkv, int d, int r) {
    const int heads = nh + 2 * nkv, half = r / 2, pairs = d / 2, lane = threadIdx.x & 31;
    const long long items = (long long)rows * heads;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    for (long long it = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; it < items; it += warps) {
        int row = (int)(it / heads), head = (int)(it % heads);
        const T* src = qkv + ((size_t)row * heads + head) * d;
        const T* bsrc = bias ? bias + (size_t)head * d : nullptr;
        bool is_q = head < nh, is_k = !is_q && head < nh + nkv;
        const T* nw = is_q ? qw : (is_k ? kw : nullptr);
        T a[QKV_PAIRS], b[QKV_PAIRS];
        float ss = 0.f;
#pragma unroll
        for (int p = 0; p < QKV_PAIRS; p++) {
            int c = lane + 32 * p;
            if (c < pairs) {
                int i1 = c < half ? c : r + 2 * (c - half);
                int i2 = c < half ? c + half : i1 + 1;
                T x1 = src[i1], x2 = src[i2];
                if (bsrc) {
                    x1 = from_f<T>(to_f(x1) + to_f(bsrc[i1]));
                    x2 = from_f<T>(to_f(x2) + to_f(bsrc[i2]));
                }
                a[p] = x1;
                b[p] = x2;
                float f1 = to_f(x1), f2 = to_f(x2);
                ss += f1 * f1 + f2 * f2;
            }
        }
        float inv = nw ? rsqrtf(warp_sum(ss) / d + eps) : 0.f;  // the same for the whole warp
        int bi = row / t, ti = row % t;
        T* dst = out + (((size_t)bi * heads + head) * t + ti) * d;
#pragma unroll
        for (int p = 0; p < QKV_PAIRS; p++) {
            int c = lane + 32 * p;
            if (c < pairs) {
                int i1 = c < half ? c : r + 2 * (c - half);
                int i2 = c < half ? c + half : i1 + 1;
                T x1 = a[p], x2 = b[p];
                if (nw) {
                    x1 = from_f<T>(inv * to_f(x1) * to_f(nw[i1]));
                    x2 = from_f<T>(inv * to_f(x2) * to_f(nw[i2]));
                }
                if (cos != nullptr && (is_q || is_k) && c < half) {
                    T cs = cos[(size_t)row * half + c], sn = sin[(size_t)row * half + c];
                    T y1 = x1 * cs - x2 * sn;
                    T y2 = x1 * sn + x2 * cs;
                    x1 = y1;
                    x2 = y2;
                }
                dst[i1] = x1;
                dst[i2] = x2;
            }
        }
    }
}

#define GEMV_OPS(T, SUFFIX, R)                                                                          \
    extern "C" __global__ void lmgen_gemv##R##_##SUFFIX(const T* x, const T* w, const T* bias, T* out,  \
                                                         int n, int k) {                                \
        gemv<T, R, true>(x, w, bias, out, n, k);                                                        \
    }
#define GEMV_Q8_OPS(T, SUFFIX, R)                                                                       \
    extern "C" __global__ void lmgen_gemv_q8_##R##_##SUFFIX(const T* x, const int8_t* q,               \
                                                            const __half* scales, T* out, int n, int k) { \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        gemv_q8<T, R>(x, q, scales, out, n, k);                                                         \
    }
#define GEMV_ALL(T, SUFFIX)                                                                             \
    extern "C" __global__ void lmgen_gemv1s_##SUFFIX(const T* x, const T* w, const T* bias, T* out,     \
                                                     int n, int k) {                                    \
        gemv<T, 1, false>(x, w, bias, out, n, k);                                                       \
    }                                                                                                   \
    GEMV_OPS(T, SUFFIX, 1) GEMV_OPS(T, SUFFIX, 2) GEMV_OPS(T, SUFFIX, 3) GEMV_OPS(T, SUFFIX, 4)         \
    GEMV_Q8_OPS(T, SUFFIX, 1) GEMV_Q8_OPS(T, SUFFIX, 2) GEMV_Q8_OPS(T, SUFFIX, 3)                       \
    GEMV_Q8_OPS(T, SUFFIX, 4) GEMV_Q8_OPS(T, SUFFIX, 5) GEMV_Q8_OPS(T, SUFFIX, 6)                       \
    GEMV_Q8_OPS(T, SUFFIX, 7) GEMV_Q8_OPS(T, SUFFIX, 8)                                                 \
    extern "C" __global__ void lmgen_gemv_swiglu_##SUFFIX(const T* x, const T* w, const T* bias, T* out, \
                                                          int inter, int k) {                           \
        gemv_swiglu<T>(x, w, bias, out, inter, k);                                                      \
    }                                                                                                   \
    extern "C" __global__ void lmgen_dequant_q8_##SUFFIX(const int8_t* q, const __half* scales, T* out, \
                                                         unsigned long long count) {                    \
        dequant_q8<T>(q, scales, out, (size_t)count);                                                   \
    }                                                                                                   \
    extern "C" __global__ void lmgen_rope_kv_write_##SUFFIX(                                            \
        const T* qkv, const T* cos, const T* sin, const T* qw, const T* kw, float eps, T* q_out,        \
        T* k_cache, T* v_cache, const uint32_t* slots, int nh, int nkv, int d, int r, int cap) {        \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        rope_kv_write<T>(qkv, cos, sin, qw, kw, eps, q_out, k_cache, v_cache, slots, nh, nkv, d, r, cap); \
    }                                                                                                   \
    extern "C" __global__ void lmgen_qkv_heads_##SUFFIX(const T* qkv, const T* bias, const T* cos,      \
                                                        const T* sin, const T* qw, const T* kw,         \
                                                        float eps, T* out, int rows, int t, int nh,     \
                                                        int nkv, int d, int r) {                        \
        qkv_heads<T>(qkv, bias, cos, sin, qw, kw, eps, out, rows, t, nh, nkv, d, r);                    \
    }
GEMV_ALL(float, f32)
GEMV_ALL(__nv_bfloat16, bf16)
GEMV_ALL(__half, f16)

#define FUSED_OPS(T, SUFFIX)                                                                            \
    extern "C" __global__ void lmgen_add_rms_norm_##SUFFIX(const T* x, const T* h, const T* w, T* out,  \
                                                           int rows, int dim, float eps) {              \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        add_rms_norm<T>(x, h, w, out, rows, dim, eps);                                                  \
    }                                                                                                   \
    extern "C" __global__ void lmgen_add_rms_norm_rows4_##SUFFIX(const T* x, const T* h, const T* w,    \
                                                                 T* out, int rows, int dim, float eps) { \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        add_rms_norm_rows<T, 4>(x, h, w, out, rows, dim, eps);                                          \
    }                                                                                                   \
    extern "C" __global__ void lmgen_add_rms_norm_rows16_##SUFFIX(const T* x, const T* h, const T* w,   \
                                                                  T* out, int rows, int dim,            \
                                                                  float eps) {                          \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        add_rms_norm_rows<T, 16>(x, h, w, out, rows, dim, eps);                                         \
    }                                                                                                   \
    extern "C" __global__ void lmgen_swiglu_##SUFFIX(const T* gate_up, T* out, int rows, int inter) {   \
        swiglu<T>(gate_up, out, rows, inter);                                                           \
    }                                                                                                   \
    extern "C" __global__ void lmgen_greedy_part_##SUFFIX(const T* logits, Pick* part, int vocab,       \
                                                          int chunk) {                                  \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        greedy_part<T>(logits, part, vocab, chunk);                                                     \
    }                                                                                                   \
    extern "C" __global__ void lmgen_decode_attention_##SUFFIX(                                         \
        const T* q, const T* k, const T* v, T* out, float* part, int chunk, int nh, int nkv, int s,     \
        int d, long long k_sb, long long k_sh, long long k_ss, long long v_sb, long long v_sh,          \
        long long v_ss, float scale) {                                                                  \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        decode_attention<T>(q, k, v, out, part, chunk, nh, nkv, s, d, k_sb, k_sh, k_ss, v_sb, v_sh,     \
                            v_ss, scale);                                                               \
    }                                                                                                   \
    extern "C" __global__ void lmgen_attention_combine_##SUFFIX(const float* part, T* out, int splits,  \
                                                                int d) {                                \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        attention_combine<T>(part, out, splits, d);                                                     \
    }                                                                                                   \
    /* The same over the first `slots[row] + 1` keys of each row: the length read from device */       \
    /* memory, so a captured graph attends over a growing cache. */                                     \
    extern "C" __global__ void lmgen_decode_attention_at_##SUFFIX(                                      \
        const T* q, const T* k, const T* v, T* out, float* part, int chunk, const uint32_t* slots,      \
        int nh, int nkv, int d, long long k_sb, long long k_sh, long long k_ss, long long v_sb,         \
        long long v_sh, long long v_ss, float scale) {                                                  \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        int s = (int)slots[blockIdx.y] + 1;                                                             \
        decode_attention<T>(q, k, v, out, part, chunk, nh, nkv, s, d, k_sb, k_sh, k_ss, v_sb, v_sh,     \
                            v_ss, scale);                                                               \
    }                                                                                                   \
    extern "C" __global__ void lmgen_kv_write_##SUFFIX(const T* src, T* dst, const uint32_t* slots,     \
                                                       int b, int nkv, int cap, int d) {                \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        kv_write<T>(src, dst, slots, b, nkv, cap, d);                                                   \
    }                                                                                                   \
    extern "C" __global__ void lmgen_paged_decode_attention_##SUFFIX(                                   \
        const T* q, const T* store_k, const T* store_v, T* out, const uint32_t* index, int nh, int nkv, \
        int total, int n, int slot_count, int d, float scale) {                                         \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        paged_decode_attention<T>(q, store_k, store_v, out, index, nh, nkv, total, n, slot_count, d,    \
                                  scale);                                                               \
    }                                                                                                   \
    extern "C" __global__ void lmgen_paged_decode_grouped_##SUFFIX(                                     \
        const T* q, const T* store_k, const T* store_v, T* out, float* part, const uint32_t* index,     \
        int nh, int nkv, int total, int n, int slot_count, int d, int splits, float scale) {            \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        paged_decode_grouped<T>(q, store_k, store_v, out, part, index, nh, nkv, total, n, slot_count,   \
                                d, splits, scale);                                                      \
    }                                                                                                   \
    /* decode_attention with a key/value head's query heads in one block (`decode_grouped`): */ \
    /* all `s` keys, or with `slots` the first `slots[row] + 1` of each row. */                    \
    extern "C" __global__ void lmgen_decode_grouped_##SUFFIX(                                         \
        const T* q, const T* k, const T* v, T* out, float* part, int splits, const uint32_t* slots,     \
        int nh, int nkv, int s, int d, long long k_sb, long long k_sh, long long k_ss, long long v_sb,  \
        long long v_sh, long long v_ss, float scale) {                                                  \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        if (slots) s = (int)slots[blockIdx.y] + 1;                                                      \
        decode_grouped<T>(q, k, v, out, part, splits, nh, nkv, s, d, k_sb, k_sh, k_ss, v_sb, v_sh,      \
                          v_ss, scale);                                                                 \
    }                                                                                                   \
    extern "C" __global__ void lmgen_paged_kv_write_##SUFFIX(const T* src, T* dst, const uint32_t* index, \
                                                             int n, int nkv, int total, int slot_count, \
                                                             int d) {                                   \
        pdl_wait();                                                                                     \
        pdl_trigger();                                                                                  \
        paged_kv_write<T>(src, dst, index, n, nkv, total, slot_count, d);                               \
    }

FUSED_OPS(float, f32)
FUSED_OPS(__nv_bfloat16, bf16)
FUSED_OPS(__half, f16)
