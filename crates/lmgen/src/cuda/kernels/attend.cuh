// One query over a head's cached keys and values in one block (`attend_rows`): the decode
// attention kernels of `fused.cu` and the layer kernel of `decode_layer.cu` run it.
#pragma once
#include "common.cuh"

// V elements at `p` as floats: one 16-byte load where V elements are 16 bytes and `p` is
// aligned to them, else one load each.
template <typename T, int V> __device__ __forceinline__ void load_elems(const T* p, float* f) {
    if (V * sizeof(T) == 16 && (reinterpret_cast<uintptr_t>(p) & 15) == 0) {
        uint4 v = *reinterpret_cast<const uint4*>(p);
        const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
        for (int i = 0; i < V; i++) f[i] = to_f(e[i]);
    } else {
#pragma unroll
        for (int i = 0; i < V; i++) f[i] = to_f(p[i]);
    }
}

// One query `qp` [d] over `s` keys and values (rows `keys(j)`, `values(j)`, each [d], d a
// multiple of V): `softmax(q k^T * scale) v` into `op` [d], scores and softmax in f32.
// One block: each thread takes whole keys (its row's chunks of V elements loaded four at a
// time), so a block has blockDim keys' loads in flight; then groups of d / V threads take the
// values, one chunk of a row each, every group its own keys, their partial sums added at the
// end. V is 16 bytes of elements where d is a multiple of it (`attend`), else 1.
// With `part` (f32 [d + 2]) instead of `op`: the unnormalised sums, the scores' maximum and the
// exponentials' sum (a split of the keys, combined by `attention_combine`); s may be 0 there.
// Dynamic shared memory: d + s + groups * d floats (the query, the scores, the partial sums).
template <typename T, int V, typename Rows>
__device__ void attend_rows_v(const T* qp, Rows keys, Rows values, T* op, float* part, int s, int d,
                              float scale) {
    extern __shared__ float smem[];
    __shared__ float scratch[32];
    int chunks = d / V;
    int groups = max(1, (int)blockDim.x / chunks);
    float* qs = smem;             // [d]
    float* scores = smem + d;     // [s]
    float* partial = scores + s;  // [groups, d]
    for (int i = threadIdx.x; i < d; i += blockDim.x) qs[i] = to_f(qp[i]);
    __syncthreads();
    for (int j = threadIdx.x; j < s; j += blockDim.x) {
        const T* kr = keys(j);
        float acc = 0.f;
        int c = 0;
        if (V * sizeof(T) == 16 && (reinterpret_cast<uintptr_t>(kr) & 15) == 0) {
            // 16-byte chunks of the row KC at a time, all issued before any is used (a d = 128
            // row of 2-byte elements in one round trip to memory); the same sums in the same order.
            constexpr int KC = 16;
            const uint4* kr4 = reinterpret_cast<const uint4*>(kr);
            for (; c + KC <= chunks; c += KC) {
                uint4 kv[KC];
#pragma unroll
                for (int u = 0; u < KC; u++) kv[u] = kr4[c + u];
#pragma unroll
                for (int u = 0; u < KC; u++) {
                    const T* ke = reinterpret_cast<const T*>(&kv[u]);
#pragma unroll
                    for (int i = 0; i < V; i++) acc = fmaf(qs[(c + u) * V + i], to_f(ke[i]), acc);
                }
            }
            if (c < chunks) {
                uint4 kv[KC];
#pragma unroll
                for (int u = 0; u < KC; u++) {
                    if (c + u < chunks) kv[u] = kr4[c + u];
                }
#pragma unroll
                for (int u = 0; u < KC; u++) {
                    if (c + u < chunks) {
                        const T* ke = reinterpret_cast<const T*>(&kv[u]);
#pragma unroll
                        for (int i = 0; i < V; i++) acc = fmaf(qs[(c + u) * V + i], to_f(ke[i]), acc);
                    }
                }
                c = chunks;
            }
        }
        for (; c + 4 <= chunks; c += 4) {
            float kf[4][V];
#pragma unroll
            for (int u = 0; u < 4; u++) load_elems<T, V>(kr + (c + u) * V, kf[u]);
#pragma unroll
            for (int u = 0; u < 4; u++) {
#pragma unroll
                for (int i = 0; i < V; i++) acc = fmaf(qs[(c + u) * V + i], kf[u][i], acc);
            }
        }
        for (; c < chunks; c++) {
            float kf[V];
            load_elems<T, V>(kr + c * V, kf);
#pragma unroll
            for (int i = 0; i < V; i++) acc = fmaf(qs[c * V + i], kf[i], acc);
        }
        scores[j] = acc * scale;
    }
    __syncthreads();
    float m = -INFINITY;
    for (int j = threadIdx.x; j < s; j += blockDim.x) m = fmaxf(m, scores[j]);
    m = block_max(m, scratch);
    float l = 0.f;
    for (int j = threadIdx.x; j < s; j += blockDim.x) {
        float e = expf(scores[j] - m);
        scores[j] = e;
        l += e;
    }
    l = block_sum(l, scratch); // its __syncthreads also publishes the exponentials
    __syncthreads();
    int g = threadIdx.x / chunks, c = threadIdx.x % chunks;
    if (g < groups) {
        float acc[V];
#pragma unroll
        for (int i = 0; i < V; i++) acc[i] = 0.f;
#pragma unroll 8
        for (int j = g; j < s; j += groups) {
            float p = scores[j];
            float vf[V];
            load_elems<T, V>(values(j) + c * V, vf);
#pragma unroll
            for (int i = 0; i < V; i++) acc[i] = fmaf(p, vf[i], acc[i]);
        }
#pragma unroll
        for (int i = 0; i < V; i++) partial[g * d + c * V + i] = acc[i];
    }
    __syncthreads();
    // Groups past the s-th took no key: their partial sums are zero, left out.
    int used = min(groups, s);
    for (int cc = threadIdx.x; cc < d; cc += blockDim.x) {
        float acc = 0.f;
        for (int gg = 0; gg < used; gg++) acc += partial[gg * d + cc];
        if (part) {
            part[cc] = acc;
        } else {
            op[cc] = from_f<T>(acc / l);
        }
    }
    if (part && threadIdx.x == 0) {
        part[d] = m;
        part[d + 1] = l;
    }
}

// `attend_rows_v` with 16-byte chunks where the head size allows (the host sizes the shared
// memory the same way: `decode_attention::shared_bytes`).
template <typename T, typename Rows>
__device__ void attend_rows(const T* qp, Rows keys, Rows values, T* op, float* part, int s, int d, float scale) {
    constexpr int V = 16 / sizeof(T);
    if (d % V == 0) {
        attend_rows_v<T, V>(qp, keys, values, op, part, s, d, scale);
    } else {
        attend_rows_v<T, 1>(qp, keys, values, op, part, s, d, scale);
    }
}
