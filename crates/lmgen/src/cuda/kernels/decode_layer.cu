// One decoder layer of a batch-1 decode step in one launch (src/cuda/decode_layer.rs): the
// residual add and RMSNorm, the fused q/k/v product with its bias, the heads' rotation, the cache
// write, the attention over the cache, o_proj, the second add and RMSNorm, gate/up with SwiGLU and
// down: what the ~9 launches of `fused.cu` compute a layer (`add_rms_norm`, `gemv`,
// `rope_kv_write`, `decode_attention_at`, `attention_combine`, `gemv`, `add_rms_norm`,
// `gemv_swiglu`, `gemv`), with the same sums in the same order within each product and the same
// roundings to T. A small model's step is a chain of kernels of a few microseconds each, bound
// by their latency rather than their bytes: here every block of one grid (all resident) runs the
// phases in turn, a grid-wide barrier between two phases where one reads what the other wrote,
// and each warp loads the first weights of its next row before it waits at the barrier (weights
// depend on nothing a step computes), so the memory works while the grid synchronises.
#include "common.cuh"
#include "attend.cuh"

// Threads a block (the host launches this many: src/cuda/decode_layer.rs `THREADS`).
constexpr int LAYER_THREADS = 512;
// 16-byte loads per lane of a weight row issued before the barrier, and kept in flight after.
constexpr int LAYER_U = 4;

// Waits until every block of the grid has arrived here for the `k`-th time (from 0) in this
// launch: `bar` counts arrivals, zeroed before the launch. The writes of every block before
// its arrival are visible to every block after the wait. `red`: the arrival as a release fence
// and a reduction that returns nothing (no round trip before the polling starts); else a full
// fence and an atomic add (a diagnosis: LMGEN_CUDA_LAYER_BARRIER=atomic).
__device__ __forceinline__ void grid_barrier(unsigned int* bar, unsigned int k, bool red) {
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int target = (k + 1) * gridDim.x;
        if (red) {
            asm volatile("fence.acq_rel.gpu;\n\tred.relaxed.gpu.global.add.u32 [%0], 1;" ::"l"(bar) : "memory");
        } else {
            __threadfence();
            atomicAdd(bar, 1u);
        }
        unsigned int seen;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(bar) : "memory");
        } while (seen < target);
        if (!red) __threadfence();
    }
    __syncthreads();
}

// 16 bytes another block wrote in this launch: read from L2, never a stale L1 line.
__device__ __forceinline__ uint4 load_shared_l2(const void* p) { return __ldcg(reinterpret_cast<const uint4*>(p)); }

// The first LAYER_U 16-byte chunks of a weight row this lane takes (lane, lane + 32, ...).
__device__ __forceinline__ void row_start(const uint4* wr, int chunks, int lane, uint4 (&pre)[LAYER_U]) {
#pragma unroll
    for (int u = 0; u < LAYER_U; u++) {
        int c = lane + 32 * u;
        pre[u] = c < chunks ? load_stream(wr + c) : make_uint4(0, 0, 0, 0);
    }
}

// This lane's share of a weight row's dot product with `xs` (shared memory, `chunks` 16-byte
// chunks), its first chunks already in `pre` (`row_start`): chunk c = lane, lane + 32, ... added
// in that order, the next LAYER_U loads issued before the current ones are used (as `gemv`).
template <typename T>
__device__ __forceinline__ float row_dot(const uint4* wr, const uint4* xs, int chunks, int lane,
                                         const uint4 (&pre)[LAYER_U]) {
    constexpr int U = LAYER_U;
    uint4 next[U];
#pragma unroll
    for (int u = 0; u < U; u++) next[u] = pre[u];
    float acc = 0.f;
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
            if (cu < chunks) acc += dot16<T>(wv[u], xs[cu]);
        }
    }
    return acc;
}

// Two weight rows against the same `xs` (a rotated pair of q/k features, a gate row and its up
// row), each summed as `row_dot` sums one.
template <typename T>
__device__ __forceinline__ float2 row_dot2(const uint4* wa, const uint4* wb, const uint4* xs, int chunks, int lane,
                                           const uint4 (&pa)[LAYER_U], const uint4 (&pb)[LAYER_U]) {
    constexpr int U = LAYER_U;
    uint4 na[U], nb[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        na[u] = pa[u];
        nb[u] = pb[u];
    }
    float acc_a = 0.f, acc_b = 0.f;
    for (int c = lane; c < chunks; c += 32 * U) {
        uint4 va[U], vb[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            va[u] = na[u];
            vb[u] = nb[u];
            int cn = c + 32 * (U + u);
            na[u] = cn < chunks ? load_stream(wa + cn) : make_uint4(0, 0, 0, 0);
            nb[u] = cn < chunks ? load_stream(wb + cn) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int cu = c + 32 * u;
            if (cu < chunks) {
                uint4 xv = xs[cu];
                acc_a += dot16<T>(va[u], xv);
                acc_b += dot16<T>(vb[u], xv);
            }
        }
    }
    return make_float2(acc_a, acc_b);
}

// The pair of features (i1, i2) of a head that `rope_kv_write` gives thread `c` (c < d / 2): a
// rotated pair (c, c + r / 2) for c < r / 2, else two passed-through neighbours.
__device__ __forceinline__ int2 head_pair(int c, int r) {
    int half = r / 2;
    int i1 = c < half ? c : r + 2 * (c - half);
    return make_int2(i1, c < half ? c + half : i1 + 1);
}

// With `trace` (a diagnosis, LMGEN_CUDA_LAYER_TRACE): block 0's SM clock at each phase boundary.
#define STAMP(i)                                                         \
    if (trace != nullptr && blockIdx.x == 0 && threadIdx.x == 0) {       \
        trace[i] = clock64();                                            \
    }

// x, pending: [H] (the residual stream and the previous layer's MLP output not yet added to it;
// pending null for the first layer); attn_norm, mlp_norm: [H]; w_qkv: [(nh + 2 nkv) d, H],
// b_qkv: [(nh + 2 nkv) d] or null; cos, sin: [r / 2] or null (no rotation); w_o: [H, nh d];
// w_gu: [2 inter, H] (gate rows, then up rows); w_down: [H, inter]; biases [n] or null;
// k_cache, v_cache: [nkv, cap, d], the token written at slot slots[0] (skipped at or past cap);
// out: [2, H] = (x + pending + attention, the MLP's output); q_buf [nh d], part
// [nh, splits, d + 2], o_buf [H], act [inter]: scratch; bar: one u32, zero; red: the barrier's kind.
// Dynamic shared memory: `stage_bytes` (the product's input row, or the attention's scores and
// sums) then the residual row [H] of T. trace: null, or [13] SM clocks (`STAMP`).
template <typename T>
__device__ void decode_layer(const T* __restrict__ x, const T* __restrict__ pending, const T* __restrict__ attn_norm,
                             const T* __restrict__ mlp_norm, float eps1, float eps2, const T* __restrict__ w_qkv,
                             const T* __restrict__ b_qkv, const T* __restrict__ cos, const T* __restrict__ sin,
                             const T* __restrict__ w_o, const T* __restrict__ b_o, const T* __restrict__ w_gu,
                             const T* __restrict__ b_gu, const T* __restrict__ w_down, const T* __restrict__ b_down,
                             T* k_cache, T* v_cache, const uint32_t* __restrict__ slots, T* __restrict__ out,
                             T* q_buf, float* part, T* o_buf, T* act, unsigned int* bar, int H, int nh, int nkv,
                             int d, int r, int inter, int cap, int splits, int stage_bytes, float scale,
                             bool red, long long* trace) {
    extern __shared__ float smem[];
    __shared__ float scratch[32];
    constexpr int V = 16 / sizeof(T);
    T* xs = reinterpret_cast<T*>(smem);                                              // the stage
    T* res = reinterpret_cast<T*>(reinterpret_cast<char*>(smem) + stage_bytes);      // [H]
    const uint4* xs4 = reinterpret_cast<const uint4*>(smem);
    int tid = threadIdx.x, lane = tid & 31;
    int warps = blockDim.x >> 5;
    int gw = blockIdx.x * warps + (tid >> 5), total_warps = gridDim.x * warps;
    int qkv_rows = (nh + 2 * nkv) * d, pairs = qkv_rows / 2, attn_width = nh * d;
    uint4 pa[LAYER_U], pb[LAYER_U];

    // Phase 0: the first rows' weights, then the residual add and the attention's RMSNorm, each
    // block for itself (the rows are small, and every block needs them whole).
    auto qkv_pair = [&](int p) {
        int head = p / (d / 2);
        int2 i = head_pair(p % (d / 2), r);
        return make_int2(head * d + i.x, head * d + i.y);
    };
    if (gw < pairs) {
        int2 j = qkv_pair(gw);
        row_start(reinterpret_cast<const uint4*>(w_qkv + (size_t)j.x * H), H / V, lane, pa);
        row_start(reinterpret_cast<const uint4*>(w_qkv + (size_t)j.y * H), H / V, lane, pb);
    }
    STAMP(0);
    pdl_wait();
    float ss = 0.f;
    for (int i = tid; i < H; i += blockDim.x) {
        T s = pending ? from_f<T>(to_f(x[i]) + to_f(pending[i])) : x[i];
        res[i] = s;
        float f = to_f(s);
        ss += f * f;
    }
    float inv = rsqrtf(block_sum(ss, scratch) / H + eps1);
    for (int i = tid; i < H; i += blockDim.x) xs[i] = from_f<T>(to_f(res[i]) * inv * to_f(attn_norm[i]));
    __syncthreads();
    STAMP(1);

    // Phase 1: q/k/v, a warp per pair of features a head's rotation mixes; lane 0 adds the bias,
    // rotates (in T arithmetic, as `rope_kv_write`) and writes the queries out, the keys and
    // values into the cache.
    uint32_t slot = slots[0];
    for (int p = gw; p < pairs; p += total_warps) {
        int2 j = qkv_pair(p);
        const uint4* wa = reinterpret_cast<const uint4*>(w_qkv + (size_t)j.x * H);
        const uint4* wb = reinterpret_cast<const uint4*>(w_qkv + (size_t)j.y * H);
        float2 acc = row_dot2<T>(wa, wb, xs4, H / V, lane, pa, pb);
        if (p + total_warps < pairs) {
            int2 jn = qkv_pair(p + total_warps);
            row_start(reinterpret_cast<const uint4*>(w_qkv + (size_t)jn.x * H), H / V, lane, pa);
            row_start(reinterpret_cast<const uint4*>(w_qkv + (size_t)jn.y * H), H / V, lane, pb);
        }
        float a = warp_sum(acc.x), b = warp_sum(acc.y);
        if (lane == 0) {
            int head = p / (d / 2), c = p % (d / 2);
            int2 i = head_pair(c, r);
            T ta = from_f<T>(a + (b_qkv ? to_f(b_qkv[j.x]) : 0.f));
            T tb = from_f<T>(b + (b_qkv ? to_f(b_qkv[j.y]) : 0.f));
            bool is_q = head < nh, is_k = !is_q && head < nh + nkv;
            if (cos != nullptr && (is_q || is_k) && c < r / 2) {
                T cs = cos[c], sn = sin[c];
                T y1 = ta * cs - tb * sn;
                T y2 = ta * sn + tb * cs;
                ta = y1;
                tb = y2;
            }
            T* dst = nullptr;
            if (is_q) {
                dst = q_buf + (size_t)head * d;
            } else if (slot < (uint32_t)cap) {
                int g = is_k ? head - nh : head - nh - nkv;
                dst = (is_k ? k_cache : v_cache) + ((size_t)g * cap + slot) * d;
            }
            if (dst) {
                dst[i.x] = ta;
                dst[i.y] = tb;
            }
        }
    }
    STAMP(2);
    grid_barrier(bar, 0, red);
    STAMP(3);

    // Phase 2: the attention, (query head, share of the keys) a block; each share's unnormalised
    // sums, maximum and exponentials' sum into `part` (as the split `decode_attention_at`).
    int s = (int)min(slot + 1u, (uint32_t)cap);
    int chunk = (s + splits - 1) / splits;
    for (int item = blockIdx.x; item < nh * splits; item += gridDim.x) {
        int head = item / splits, z = item % splits;
        int kvh = head / (nh / nkv);
        int lo = min(z * chunk, s), n = min(lo + chunk, s) - lo;
        StridedRows<T> keys{k_cache + ((size_t)kvh * cap + lo) * d, d};
        StridedRows<T> values{v_cache + ((size_t)kvh * cap + lo) * d, d};
        attend_rows<T>(q_buf + (size_t)head * d, keys, values, nullptr, part + (size_t)item * (d + 2), n, d, scale);
        __syncthreads();
    }
    if (gw < H) row_start(reinterpret_cast<const uint4*>(w_o + (size_t)gw * attn_width), attn_width / V, lane, pa);
    STAMP(4);
    grid_barrier(bar, 1, red);
    STAMP(5);

    // Phase 3: the shares combined (as `attention_combine`, each block the whole row for
    // itself: every share copied into shared memory at once, then added up there), then o_proj,
    // a warp a row.
    float* shares = smem;  // [nh, splits, d + 2]
    int share_floats = nh * splits * (d + 2);
    {
        // Every load issued before any is stored: one round trip to L2, not one a chunk.
        constexpr int L = 8;
        const float4* src = reinterpret_cast<const float4*>(part);
        int n4 = share_floats / 4;
        for (int base = tid; base < n4; base += L * blockDim.x) {
            float4 v[L];
#pragma unroll
            for (int u = 0; u < L; u++) {
                int i = base + u * blockDim.x;
                if (i < n4) v[u] = __ldcg(src + i);
            }
#pragma unroll
            for (int u = 0; u < L; u++) {
                int i = base + u * blockDim.x;
                if (i < n4) reinterpret_cast<float4*>(shares)[i] = v[u];
            }
        }
    }
    for (int i = share_floats / 4 * 4 + tid; i < share_floats; i += blockDim.x) shares[i] = __ldcg(part + i);
    __syncthreads();
    // A thread a head: each share's weight expf(m_i - m) in place of its maximum (0 for an empty
    // share, which `attention_combine` leaves out) and the weighted sum of the exponentials' sums
    // in place of the first share's, in `attention_combine`'s order.
    for (int head = tid; head < nh; head += blockDim.x) {
        float* rp = shares + (size_t)head * splits * (d + 2);
        float m = -INFINITY;
        for (int i = 0; i < splits; i++) m = fmaxf(m, rp[i * (d + 2) + d]);
        float l = 0.f;
        for (int i = 0; i < splits; i++) {
            float mi = rp[i * (d + 2) + d];
            float e = mi != -INFINITY ? expf(mi - m) : 0.f;
            if (mi != -INFINITY) l += e * rp[i * (d + 2) + d + 1];
            rp[i * (d + 2) + d] = e;
        }
        rp[d + 1] = l;
    }
    __syncthreads();
    T* attn = reinterpret_cast<T*>(smem + ((share_floats + 3) & ~3));  // [nh d]
    const uint4* attn4 = reinterpret_cast<const uint4*>(attn);
    for (int idx = tid; idx < attn_width; idx += blockDim.x) {
        const float* rp = shares + (size_t)(idx / d) * splits * (d + 2);
        int c = idx % d;
        float acc = 0.f;
        for (int i = 0; i < splits; i++) {
            float e = rp[i * (d + 2) + d];
            if (e != 0.f) acc += e * rp[i * (d + 2) + c];
        }
        attn[idx] = from_f<T>(acc / rp[d + 1]);
    }
    __syncthreads();
    STAMP(6);
    for (int j = gw; j < H; j += total_warps) {
        const uint4* wr = reinterpret_cast<const uint4*>(w_o + (size_t)j * attn_width);
        float a = row_dot<T>(wr, attn4, attn_width / V, lane, pa);
        if (j + total_warps < H)
            row_start(reinterpret_cast<const uint4*>(w_o + (size_t)(j + total_warps) * attn_width), attn_width / V,
                      lane, pa);
        a = warp_sum(a);
        if (lane == 0) o_buf[j] = from_f<T>(a + (b_o ? to_f(b_o[j]) : 0.f));
    }
    if (gw < inter) {
        row_start(reinterpret_cast<const uint4*>(w_gu + (size_t)gw * H), H / V, lane, pa);
        row_start(reinterpret_cast<const uint4*>(w_gu + ((size_t)inter + gw) * H), H / V, lane, pb);
    }
    STAMP(7);
    grid_barrier(bar, 2, red);
    STAMP(8);

    // Phase 4: the second residual add and RMSNorm (block 0 writes the sum out), then gate/up
    // with SwiGLU (as `gemv_swiglu`), a warp a pair of rows.
    ss = 0.f;
    for (int i = tid; i < H; i += blockDim.x) {
        T sum = from_f<T>(to_f(res[i]) + to_f(__ldcg(o_buf + i)));
        res[i] = sum;
        float f = to_f(sum);
        ss += f * f;
    }
    inv = rsqrtf(block_sum(ss, scratch) / H + eps2);
    for (int i = tid; i < H; i += blockDim.x) {
        xs[i] = from_f<T>(to_f(res[i]) * inv * to_f(mlp_norm[i]));
        if (blockIdx.x == 0) out[i] = res[i];
    }
    __syncthreads();
    for (int j = gw; j < inter; j += total_warps) {
        const uint4* wg = reinterpret_cast<const uint4*>(w_gu + (size_t)j * H);
        const uint4* wu = reinterpret_cast<const uint4*>(w_gu + ((size_t)inter + j) * H);
        float2 acc = row_dot2<T>(wg, wu, xs4, H / V, lane, pa, pb);
        if (j + total_warps < inter) {
            row_start(reinterpret_cast<const uint4*>(w_gu + (size_t)(j + total_warps) * H), H / V, lane, pa);
            row_start(reinterpret_cast<const uint4*>(w_gu + ((size_t)inter + j + total_warps) * H), H / V, lane, pb);
        }
        float ag = warp_sum(acc.x), au = warp_sum(acc.y);
        if (lane == 0) {
            float g = to_f(from_f<T>(ag + (b_gu ? to_f(b_gu[j]) : 0.f)));
            float u = to_f(from_f<T>(au + (b_gu ? to_f(b_gu[inter + j]) : 0.f)));
            float sg = to_f(from_f<T>(g / (1.f + expf(-g))));
            act[j] = from_f<T>(sg * u);
        }
    }
    STAMP(9);
    if (gw < H) row_start(reinterpret_cast<const uint4*>(w_down + (size_t)gw * inter), inter / V, lane, pa);
    STAMP(10);
    grid_barrier(bar, 3, red);
    STAMP(11);

    // Phase 5: down, a warp a row, into the second half of `out`.
    pdl_trigger();
    uint4* stage = reinterpret_cast<uint4*>(smem);
    for (int i = tid; i < inter / V; i += blockDim.x) stage[i] = load_shared_l2(act + (size_t)i * V);
    __syncthreads();
    for (int j = gw; j < H; j += total_warps) {
        const uint4* wr = reinterpret_cast<const uint4*>(w_down + (size_t)j * inter);
        float a = row_dot<T>(wr, xs4, inter / V, lane, pa);
        if (j + total_warps < H)
            row_start(reinterpret_cast<const uint4*>(w_down + (size_t)(j + total_warps) * inter), inter / V, lane, pa);
        a = warp_sum(a);
        if (lane == 0) out[H + j] = from_f<T>(a + (b_down ? to_f(b_down[j]) : 0.f));
    }
    STAMP(12);
}

#define LAYER_OPS(T, SUFFIX)                                                                                  \
    extern "C" __global__ void __launch_bounds__(LAYER_THREADS, 1) lmgen_decode_layer_##SUFFIX(              \
        const T* x, const T* pending, const T* attn_norm, const T* mlp_norm, float eps1, float eps2,          \
        const T* w_qkv, const T* b_qkv, const T* cos, const T* sin, const T* w_o, const T* b_o,               \
        const T* w_gu, const T* b_gu, const T* w_down, const T* b_down, T* k_cache, T* v_cache,               \
        const uint32_t* slots, T* out, T* q_buf, float* part, T* o_buf, T* act, unsigned int* bar, int H,    \
        int nh, int nkv, int d, int r, int inter, int cap, int splits, int stage_bytes, float scale,          \
        int red, long long* trace) {                                                                                   \
        decode_layer<T>(x, pending, attn_norm, mlp_norm, eps1, eps2, w_qkv, b_qkv, cos, sin, w_o, b_o, w_gu, \
                        b_gu, w_down, b_down, k_cache, v_cache, slots, out, q_buf, part, o_buf, act, bar, H, \
                        nh, nkv, d, r, inter, cap, splits, stage_bytes, scale, red != 0, trace);                               \
    }

LAYER_OPS(float, f32)
LAYER_OPS(__nv_bfloat16, bf16)
LAYER_OPS(__half, f16)
