// Attention over many queries without materialising the scores (a prompt, a packed step's
// prompt chunks): flash-style, each block takes 64 queries of one head and walks the keys 64 at a
// time with an online softmax (running maximum and sum per query, the output rescaled as the
// maximum grows). Compiled to PTX by crates/lmgen/build.rs beside `fused.cu`.
//
// Masking is causal over positions: the query at position `p` sees key `j` when `j <= p` and,
// with a sliding window `w > 0`, `p - j < w` (transformers' `sliding_window_overlay`). Scores are
// `q k^T * scale`, then `tanh(x / cap) * cap` with a softcap `cap > 0`; a head's sink logit
// joins the softmax as one more column that adds to no value (gpt-oss). Keys of tiles no query of
// the block sees are never read.
//
// f16 and bf16 multiply on tensor cores (wmma 16x16x16, f32 accumulators): the probabilities are
// rounded to the dtype for the product with the values, as flash-attention does, and the sums
// and the softmax stay in f32. f32 runs the same tiles with f32 FMAs (the golden checks run in f32).
#include <mma.h>

#include <type_traits>

#include "common.cuh"

namespace flash {

constexpr int BM = 64;        // queries per block: 4 warps of 16
constexpr int BN = 64;        // keys per step
constexpr int THREADS = 128;

// Row padding of the shared tiles, in elements: halves keep wmma's 16-byte row multiples and
// 32-byte aligned fragments; f32 rows one float longer so that a warp reading a column of keys
// hits 32 different banks.
template <typename T> struct Pad { static constexpr int kv = 8, f = 4; };
template <> struct Pad<float> { static constexpr int kv = 1, f = 1; };

// One block's shared memory (`flash_attention.rs` sizes it the same way), in this order:
// O: BM x (d + f) f32 | S: BM x (BN + f) f32 | maximum, sum, spare: 4 x BM f32 |
// Q: BM x (d + kv) T | keys or values: BN x (d + kv) T | P: BM x (BN + kv) T.

// Rows `j0 .. j0 + count` of `rows` into `dst` [count, ld]; rows at `limit` or past it as zeros
// (their probabilities are 0, and 0 times a stale NaN would not be).
template <typename T, typename Rows>
__device__ __forceinline__ void load_rows(T* dst, int ld, Rows rows, int j0, int count, int limit, int d) {
    constexpr int V = 16 / sizeof(T);
    if (d % V == 0) {
        int chunks = d / V;
        for (int e = threadIdx.x; e < count * chunks; e += THREADS) {
            int r = e / chunks, c = (e % chunks) * V;
            T* dp = dst + (size_t)r * ld + c;
            int j = j0 + r;
            if (j < limit) {
                const T* sp = rows(j) + c;
                if ((reinterpret_cast<uintptr_t>(sp) & 15) == 0 && (reinterpret_cast<uintptr_t>(dp) & 15) == 0) {
                    *reinterpret_cast<uint4*>(dp) = *reinterpret_cast<const uint4*>(sp);
                } else {
#pragma unroll
                    for (int i = 0; i < V; i++) dp[i] = sp[i];
                }
            } else {
#pragma unroll
                for (int i = 0; i < V; i++) dp[i] = from_f<T>(0.f);
            }
        }
    } else {
        for (int e = threadIdx.x; e < count * d; e += THREADS) {
            int r = e / d, c = e % d;
            int j = j0 + r;
            dst[(size_t)r * ld + c] = j < limit ? rows(j)[c] : from_f<T>(0.f);
        }
    }
}

// S [16 rows of this warp, BN] = Q [16, d] K^T, Q and K rows in shared memory.
template <typename T>
__device__ __forceinline__ void scores_tile(const T* Q, const T* K, float* S, int d, int ldk, int lds) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    for (int n = 0; n < BN; n += 16) {
        wmma::fill_fragment(acc, 0.f);
        for (int k = 0; k < d; k += 16) {
            wmma::load_matrix_sync(a, Q + k, ldk);
            wmma::load_matrix_sync(b, K + (size_t)n * ldk + k, ldk);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(S + n, acc, lds, wmma::mem_row_major);
    }
}
template <>
__device__ __forceinline__ void scores_tile<float>(const float* Q, const float* K, float* S, int d, int ldk, int lds) {
    int lane = threadIdx.x & 31;
    float acc[16][2];
#pragma unroll
    for (int r = 0; r < 16; r++) acc[r][0] = acc[r][1] = 0.f;
    for (int k = 0; k < d; k++) {
        float k0 = K[(size_t)lane * ldk + k], k1 = K[(size_t)(lane + 32) * ldk + k];
#pragma unroll
        for (int r = 0; r < 16; r++) {
            float qv = Q[(size_t)r * ldk + k];
            acc[r][0] = fmaf(qv, k0, acc[r][0]);
            acc[r][1] = fmaf(qv, k1, acc[r][1]);
        }
    }
#pragma unroll
    for (int r = 0; r < 16; r++) {
        S[(size_t)r * lds + lane] = acc[r][0];
        S[(size_t)r * lds + lane + 32] = acc[r][1];
    }
}

// O [16 rows of this warp, d] += P [16, BN] V [BN, d], O in shared memory (f32).
template <typename T>
__device__ __forceinline__ void values_tile(const T* P, const T* Vt, float* O, int d, int ldp, int ldv, int ldo) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    for (int n = 0; n < d; n += 16) {
        wmma::load_matrix_sync(acc, O + n, ldo, wmma::mem_row_major);
#pragma unroll
        for (int k = 0; k < BN; k += 16) {
            wmma::load_matrix_sync(a, P + k, ldp);
            wmma::load_matrix_sync(b, Vt + (size_t)k * ldv + n, ldv);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(O + n, acc, ldo, wmma::mem_row_major);
    }
}
template <>
__device__ __forceinline__ void values_tile<float>(const float* P, const float* Vt, float* O, int d, int ldp, int ldv,
                                                   int ldo) {
    int lane = threadIdx.x & 31;
    for (int c = lane; c < d; c += 32) {
        float acc[16];
#pragma unroll
        for (int r = 0; r < 16; r++) acc[r] = O[(size_t)r * ldo + c];
        for (int j = 0; j < BN; j++) {
            float v = Vt[(size_t)j * ldv + c];
#pragma unroll
            for (int r = 0; r < 16; r++) acc[r] = fmaf(P[(size_t)r * ldp + j], v, acc[r]);
        }
#pragma unroll
        for (int r = 0; r < 16; r++) O[(size_t)r * ldo + c] = acc[r];
    }
}

// The block's queries `q0 .. q0 + BM` of one head: `q` [rows, d] (this head's rows,
// contiguous), `out` this head's rows `ors` elements apart (d contiguous), query `i` at position
// `past + i`; `s` keys and values through `keys(j)`,
// `values(j)` (each [d], last dim contiguous). `sink` is the head's sink logit, -inf for none.
template <typename T, typename Rows>
__device__ void attend_tile(const T* q, Rows keys, Rows values, T* out, long long ors, int q0, int rows, int past,
                            int s, int d, int window, float scale, float softcap, float sink) {
    extern __shared__ __align__(128) unsigned char flash_smem[];
    constexpr int PK = Pad<T>::kv, PF = Pad<T>::f;
    const int ldq = d + PK, lds = BN + PF, ldp = BN + PK, ldo = d + PF;
    float* O = reinterpret_cast<float*>(flash_smem);  // [BM, ldo]
    float* S = O + (size_t)BM * ldo;                    // [BM, lds]
    float* M = S + (size_t)BM * lds;                    // [BM] running maximum
    float* L = M + BM;                                  // [BM] running sum
    T* Q = reinterpret_cast<T*>(M + 4 * BM);            // [BM, ldq]
    T* KV = Q + (size_t)BM * ldq;                       // [BN, ldq]: the keys, then the values
    T* P = KV + (size_t)BN * ldq;                       // [BM, ldp]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int last = min(rows, q0 + BM);  // one past the block's last query

    load_rows<T>(Q, ldq, StridedRows<T>{q, d}, q0, BM, last, d);
    for (int e = threadIdx.x; e < BM * ldo; e += THREADS) O[e] = 0.f;
    for (int r = threadIdx.x; r < BM; r += THREADS) {
        M[r] = sink;
        L[r] = sink == -INFINITY ? 0.f : 1.f;  // exp(sink - sink)
    }
    // The keys any of the block's queries sees.
    int hi = min(s, past + last);
    int lo = window > 0 ? max(0, past + q0 - window + 1) : 0;
    lo = lo / BN * BN;
    __syncthreads();

    const T* Qw = Q + (size_t)warp * 16 * ldq;
    float* Sw = S + (size_t)warp * 16 * lds;
    T* Pw = P + (size_t)warp * 16 * ldp;
    float* Ow = O + (size_t)warp * 16 * ldo;
    for (int n0 = lo; n0 < hi; n0 += BN) {
        load_rows<T>(KV, ldq, keys, n0, BN, s, d);
        __syncthreads();
        scores_tile<T>(Qw, KV, Sw, d, ldq, lds);
        __syncwarp();
        for (int r = 0; r < 16; r++) {
            int row = warp * 16 + r;
            int i = q0 + row, pos = past + i;
            float x[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int c = lane + 32 * h, j = n0 + c;
                float v = Sw[(size_t)r * lds + c] * scale;
                if (softcap > 0.f) v = tanhf(v / softcap) * softcap;
                bool seen = i < rows && j < s && j <= pos && (window <= 0 || pos - j < window);
                x[h] = seen ? v : -INFINITY;
            }
            float m_old = M[row];
            float m_new = fmaxf(m_old, warp_max(fmaxf(x[0], x[1])));
            float alpha = 1.f, p[2] = {0.f, 0.f};
            if (m_new != -INFINITY) {
                alpha = expf(m_old - m_new);
                p[0] = expf(x[0] - m_new);
                p[1] = expf(x[1] - m_new);
            }
            float sum = warp_sum(p[0] + p[1]);
            Pw[(size_t)r * ldp + lane] = from_f<T>(p[0]);
            Pw[(size_t)r * ldp + lane + 32] = from_f<T>(p[1]);
            for (int c = lane; c < d; c += 32) Ow[(size_t)r * ldo + c] *= alpha;
            if (lane == 0) {
                M[row] = m_new;
                L[row] = L[row] * alpha + sum;
            }
        }
        __syncthreads();  // every warp is done with the keys
        load_rows<T>(KV, ldq, values, n0, BN, s, d);
        __syncthreads();
        values_tile<T>(Pw, KV, Ow, d, ldp, ldq, ldo);
        __syncthreads();  // before the next keys overwrite the values
    }
    for (int e = threadIdx.x; e < (last - q0) * d; e += THREADS) {
        int r = e / d, c = e % d;
        out[(q0 + r) * ors + c] = from_f<T>(O[(size_t)r * ldo + c] / L[r]);
    }
}

}  // namespace flash

// The same attention for f16 and bf16 heads of 64, 96 or 128 (`flash_attention.rs`'s
// `uses_mma`), FlashAttention-2 style: each warp keeps its 16 queries, their scores, the
// probabilities and the output in registers through `mma.sync` m16n8k16 (f32 accumulators), with
// the running maximum and sum in the log2 domain; the shared memory holds only the block's
// queries, one tile of keys and one of values (rows padded by 16 bytes, so `ldmatrix`'s eight
// rows fall on distinct banks), filled by `cp.async`: the values of a tile load while its scores
// are computed, the next keys while the values are multiplied.
namespace flash2 {

constexpr int BM = flash::BM, BN = flash::BN, THREADS = flash::THREADS;
constexpr int PAD = 8;  // elements after each shared row

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
// Four 8x8 matrices of 16-bit elements, lane `8 i + r` giving row `r` of matrix `i`.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// c [16, 8] += a [16, 16] b [16, 8] (a row-major, b column-major fragments).
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                   uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 rounded to the dtype in one register, `lo` in the low half (the lower column).
template <typename T> __device__ __forceinline__ uint32_t pack(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack<__half>(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}

// Rows `j0 .. j0 + 64` of `rows` into `dst` [64, D + PAD] through `cp.async` (a row not 16-byte
// aligned by plain loads); rows at `limit` or past it as zeros (their probabilities are 0, and 0
// times a stale NaN would not be).
template <typename T, int D, typename Rows>
__device__ __forceinline__ void load_tile(T* dst, Rows rows, int j0, int limit) {
    constexpr int CHUNKS = D / 8, LD = D + PAD;
    for (int e = threadIdx.x; e < BN * CHUNKS; e += THREADS) {
        int r = e / CHUNKS, c = (e % CHUNKS) * 8;
        T* dp = dst + r * LD + c;
        int j = j0 + r;
        if (j < limit) {
            const T* sp = rows(j) + c;
            if ((reinterpret_cast<uintptr_t>(sp) & 15) == 0) {
                cp_async16(dp, sp);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) dp[i] = sp[i];
            }
        } else {
            *reinterpret_cast<uint4*>(dp) = make_uint4(0, 0, 0, 0);
        }
    }
}

// `flash::attend_tile` for heads of D: the same arguments, masking and sinks; shared memory
// 3 x 64 x (D + PAD) elements (queries, keys, values).
template <typename T, int D, typename Rows>
__device__ void attend(const T* q, Rows keys, Rows values, T* out, long long ors, int q0, int rows, int past, int s,
                       int window, float scale, float softcap, float sink) {
    extern __shared__ __align__(128) unsigned char flash_smem[];
    constexpr int LD = D + PAD;
    constexpr int KSTEPS = D / 16;  // of the scores' products, over the head
    constexpr int NT = BN / 8;      // score tiles of 8 keys
    constexpr int DT = D / 8;       // output tiles of 8 columns
    constexpr float LOG2E = 1.4426950408889634f;
    T* Qs = reinterpret_cast<T*>(flash_smem);  // [BM, LD]
    T* Ks = Qs + BM * LD;                       // [BN, LD]
    T* Vs = Ks + BN * LD;                       // [BN, LD]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // A fragment's rows: this thread holds rows g and g + 8 of its warp's 16, columns 2 c, 2 c + 1
    // of each 8-column tile. ldmatrix: lane 8 i + r addresses row r of matrix i.
    const int g = lane >> 2, c = lane & 3, mi = lane >> 3, mr = lane & 7;
    const int last = min(rows, q0 + BM);  // one past the block's last query
    int hi = min(s, past + last);
    int lo = window > 0 ? max(0, past + q0 - window + 1) : 0;
    lo = lo / BN * BN;

    load_tile<T, D>(Qs, StridedRows<T>{q, D}, q0, last);
    if (lo < hi) load_tile<T, D>(Ks, keys, lo, s);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[KSTEPS][4];
    {
        const T* base = Qs + (warp * 16 + mr + 8 * (mi & 1)) * LD + 8 * (mi >> 1);
#pragma unroll
        for (int k = 0; k < KSTEPS; k++) ldsm_x4(qf[k], base + 16 * k);
    }
    float o[DT][4];
#pragma unroll
    for (int t = 0; t < DT; t++) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
    // Running maximum (log2 domain) and this thread's part of the running sum, rows g and g + 8;
    // the sink's exp(0) counted once, by the quad's first thread.
    float m[2] = {sink * LOG2E, sink * LOG2E};
    float l[2];
    l[0] = l[1] = (sink != -INFINITY && c == 0) ? 1.f : 0.f;
    const int pos0 = past + q0 + warp * 16 + g;  // row g's position; row g + 8 is 8 later
    const int first = past + q0, final_pos = past + last - 1;

    for (int n0 = lo; n0 < hi; n0 += BN) {
        load_tile<T, D>(Vs, values, n0, s);
        cp_async_commit();
        cp_async_wait<1>();  // this tile's keys
        __syncthreads();
        float sc[NT][4];
#pragma unroll
        for (int t = 0; t < NT; t++) sc[t][0] = sc[t][1] = sc[t][2] = sc[t][3] = 0.f;
#pragma unroll
        for (int k = 0; k < KSTEPS; k++) {
#pragma unroll
            for (int t = 0; t < NT; t += 2) {
                uint32_t b[4];
                ldsm_x4(b, Ks + (t * 8 + mr + 8 * (mi >> 1)) * LD + 16 * k + 8 * (mi & 1));
                mma<T>(sc[t], qf[k], b[0], b[1]);
                mma<T>(sc[t + 1], qf[k], b[2], b[3]);
            }
        }
        // Tiles every query of the block sees whole skip the mask.
        bool whole = n0 + BN <= s && n0 + BN - 1 <= first && (window <= 0 || final_pos - n0 < window);
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int t = 0; t < NT; t++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = sc[t][e] * scale;
                if (softcap > 0.f) x = tanhf(x / softcap) * softcap;
                x *= LOG2E;
                if (!whole) {
                    int j = n0 + t * 8 + 2 * c + (e & 1), pos = pos0 + 8 * (e >> 1);
                    if (j >= s || j > pos || (window > 0 && pos - j >= window)) x = -INFINITY;
                }
                sc[t][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
        }
        float alpha[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
            alpha[h] = mx[h] == -INFINITY ? 1.f : exp2f(m[h] - mx[h]);
            m[h] = mx[h];
        }
        // The probabilities as the A fragments of the product with the values: score tiles
        // 2 k and 2 k + 1 are the 16 keys of step k.
        uint32_t pf[NT / 2][4];
        float rs[2] = {0.f, 0.f};
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float mh = m[e >> 1];
                p[e] = mh == -INFINITY ? 0.f : exp2f(sc[t][e] - mh);
                rs[e >> 1] += p[e];
            }
            pf[t / 2][(t & 1) * 2] = pack<T>(p[0], p[1]);
            pf[t / 2][(t & 1) * 2 + 1] = pack<T>(p[2], p[3]);
        }
#pragma unroll
        for (int h = 0; h < 2; h++) l[h] = l[h] * alpha[h] + rs[h];
#pragma unroll
        for (int t = 0; t < DT; t++) {
            o[t][0] *= alpha[0];
            o[t][1] *= alpha[0];
            o[t][2] *= alpha[1];
            o[t][3] *= alpha[1];
        }
        __syncthreads();  // every warp is done with the keys
        if (n0 + BN < hi) load_tile<T, D>(Ks, keys, n0 + BN, s);
        cp_async_commit();
        cp_async_wait<1>();  // this tile's values
        __syncthreads();
#pragma unroll
        for (int k = 0; k < NT / 2; k++) {
#pragma unroll
            for (int t = 0; t < DT; t += 2) {
                uint32_t b[4];
                ldsm_x4_trans(b, Vs + (16 * k + mr + 8 * (mi & 1)) * LD + t * 8 + 8 * (mi >> 1));
                mma<T>(o[t], pf[k], b[0], b[1]);
                mma<T>(o[t + 1], pf[k], b[2], b[3]);
            }
        }
        __syncthreads();  // before the next values overwrite these
    }
    cp_async_wait<0>();
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] += __shfl_xor_sync(0xffffffff, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffff, l[h], 2);
        l[h] = 1.f / l[h];
    }
    const int r0 = q0 + warp * 16 + g;
#pragma unroll
    for (int t = 0; t < DT; t++) {
        int col = t * 8 + 2 * c;
        if (r0 < last)
            *reinterpret_cast<uint32_t*>(out + r0 * ors + col) = pack<T>(o[t][0] * l[0], o[t][1] * l[0]);
        if (r0 + 8 < last)
            *reinterpret_cast<uint32_t*>(out + (r0 + 8) * ors + col) =
                pack<T>(o[t][2] * l[1], o[t][3] * l[1]);
    }
}

}  // namespace flash2

// One block's queries of one head, by the tensor-core body where `mma` is set (f16 and bf16
// heads of 64, 96, 128: `flash_attention.rs` sizes the shared memory for the body it picks),
// else `flash::attend_tile`.
template <typename T, typename Rows>
__device__ __forceinline__ void attend_any(const T* q, Rows keys, Rows values, T* out, long long ors, int q0, int rows, int past,
                                           int s, int d, int window, float scale, float softcap, float sink,
                                           int mma) {
    if constexpr (!std::is_same<T, float>::value) {
        if (mma) {
            switch (d) {
                case 64:
                    return flash2::attend<T, 64>(q, keys, values, out, ors, q0, rows, past, s, window, scale, softcap,
                                                 sink);
                case 96:
                    return flash2::attend<T, 96>(q, keys, values, out, ors, q0, rows, past, s, window, scale, softcap,
                                                 sink);
                case 128:
                    return flash2::attend<T, 128>(q, keys, values, out, ors, q0, rows, past, s, window, scale, softcap,
                                                  sink);
            }
        }
    }
    flash::attend_tile<T>(q, keys, values, out, ors, q0, rows, past, s, d, window, scale, softcap, sink);
}

// A dense batch's prompt: q [b, nh, t, d] with each head's rows contiguous and element strides
// (batch, head) given; k, v [b, nkv, s, d] with the last dim contiguous and element strides
// (batch, head, position) given, the query `i` at position `s - t + i`; out [b, t, nh, d] (the
// output projection's layout); sinks [nh] f32 or null. Grid (ceil(t / 64), nh, b).
template <typename T>
__device__ void flash_attention(const T* q, const T* k, const T* v, T* out, const float* sinks, int nh, int nkv,
                                int t, int s, int d, long long q_sb, long long q_sh, long long k_sb, long long k_sh,
                                long long k_ss, long long v_sb, long long v_sh, long long v_ss, int window,
                                float scale, float softcap, int mma) {
    int head = blockIdx.y, batch = blockIdx.z;
    int kvh = head / (nh / nkv);
    StridedRows<T> keys{k + batch * k_sb + kvh * k_sh, k_ss};
    StridedRows<T> values{v + batch * v_sb + kvh * v_sh, v_ss};
    float sink = sinks ? sinks[head] : -INFINITY;
    attend_any<T>(q + batch * q_sb + head * q_sh, keys, values, out + ((size_t)batch * t * nh + head) * d,
                  (long long)nh * d, blockIdx.x * flash::BM, t, s - t, s, d, window, scale, softcap, sink, mma);
}

// A packed step of the paged engine: `n` sequences, sequence `i`'s `news[i]` new tokens at
// positions `starts[i]..` of the step's `total`, attending over the store's slots
// `slots[offsets[i]..offsets[i + 1]]` (its cached tokens, then the new ones, written before).
// index: [starts (n) | news (n) | offsets (n + 1) | slots | work], `work` holding one
// (sequence, first query) pair per block; q [1, nh, total, d] contiguous; out [1, total, nh, d]
// (the output projection's layout); store_k, store_v [nkv, slot_count, d] contiguous. Grid
// (work items, nh).
template <typename T>
__device__ void paged_flash_attention(const T* q, const T* store_k, const T* store_v, T* out, const float* sinks,
                                      const uint32_t* index, int n, int work_at, int nh, int nkv, int total,
                                      int slot_count, int d, int window, float scale, float softcap, int mma) {
    int head = blockIdx.y;
    int kvh = head / (nh / nkv);
    const uint32_t* starts = index;
    const uint32_t* news = index + n;
    const uint32_t* offsets = index + 2 * n;
    const uint32_t* slots = index + 3 * n + 1;
    const uint32_t* item = index + work_at + 2 * (size_t)blockIdx.x;
    int i = (int)item[0], q0 = (int)item[1];
    uint32_t off = offsets[i];
    int s = (int)(offsets[i + 1] - off), rows = (int)news[i];
    size_t head_base = (size_t)kvh * slot_count * d;
    SlotRows<T> keys{store_k + head_base, slots + off, d};
    SlotRows<T> values{store_v + head_base, slots + off, d};
    float sink = sinks ? sinks[head] : -INFINITY;
    attend_any<T>(q + ((size_t)head * total + starts[i]) * d, keys, values, out + ((size_t)starts[i] * nh + head) * d,
                  (long long)nh * d, q0, rows, s - rows, s, d, window, scale, softcap, sink, mma);
}

// The new keys (or values) of every token of a packed step written into the store at its slot.
// src [1, nkv, total, d] contiguous; dst [nkv, slot_count, d]; token_slots [total].
template <typename T>
__device__ void paged_kv_write_tokens(const T* src, T* dst, const uint32_t* token_slots, int nkv, int total,
                                      int slot_count, int d) {
    size_t count = (size_t)nkv * total * d;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        size_t g = e / ((size_t)total * d), rem = e % ((size_t)total * d);
        size_t tok = rem / d, c = rem % d;
        uint32_t slot = token_slots[tok];
        if (slot >= (uint32_t)slot_count) continue;
        dst[(g * slot_count + slot) * d + c] = src[e];
    }
}

#define FLASH_OPS(T, SUFFIX)                                                                            \
    extern "C" __global__ void __launch_bounds__(flash::THREADS) lmgen_flash_attention_##SUFFIX(        \
        const T* q, const T* k, const T* v, T* out, const float* sinks, int nh, int nkv, int t, int s,  \
        int d, long long q_sb, long long q_sh, long long k_sb, long long k_sh, long long k_ss,          \
        long long v_sb, long long v_sh, long long v_ss, int window, float scale, float softcap,         \
        int mma) {                                                                                      \
        flash_attention<T>(q, k, v, out, sinks, nh, nkv, t, s, d, q_sb, q_sh, k_sb, k_sh, k_ss, v_sb,   \
                           v_sh, v_ss, window, scale, softcap, mma);                                    \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(flash::THREADS) lmgen_paged_flash_attention_##SUFFIX(  \
        const T* q, const T* store_k, const T* store_v, T* out, const float* sinks,                     \
        const uint32_t* index, int n, int work_at, int nh, int nkv, int total, int slot_count, int d,   \
        int window, float scale, float softcap, int mma) {                                              \
        paged_flash_attention<T>(q, store_k, store_v, out, sinks, index, n, work_at, nh, nkv, total,    \
                                 slot_count, d, window, scale, softcap, mma);                           \
    }                                                                                                   \
    extern "C" __global__ void lmgen_paged_kv_write_tokens_##SUFFIX(                                    \
        const T* src, T* dst, const uint32_t* token_slots, int nkv, int total, int slot_count, int d) { \
        paged_kv_write_tokens<T>(src, dst, token_slots, nkv, total, slot_count, d);                     \
    }

FLASH_OPS(float, f32)
FLASH_OPS(__nv_bfloat16, bf16)
FLASH_OPS(__half, f16)
