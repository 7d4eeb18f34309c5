// Helpers shared by lmgen's CUDA kernels (`fused.cu`, `flash.cu`): conversions to and from f32,
// warp reductions, and the key/value row accessors of a cache buffer and of the paged store.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }

// Programmatic dependent launch (sm_90 and later; src/cuda/launch.rs): a kernel launched as a
// dependent may start while the kernel before it runs. `pdl_wait` waits until that kernel has
// finished and its writes are visible: a dependent kernel calls it before it reads or writes any
// buffer another kernel uses (it may load weights before). `pdl_trigger` lets the next dependent
// kernel start. Both do nothing below sm_90 or in a kernel launched the ordinary way.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// Key or value rows of one head at a fixed element stride (a cache buffer's view).
template <typename T>
struct StridedRows {
    const T* base;
    long long stride;
    __device__ const T* operator()(int j) const { return base + j * stride; }
};

// Key or value rows of one head at the slots of a paged store `[nkv, slot_count, d]`.
template <typename T>
struct SlotRows {
    const T* base;  // the head's first slot
    const uint32_t* slots;
    int d;
    __device__ const T* operator()(int j) const { return base + (size_t)slots[j] * d; }
};
