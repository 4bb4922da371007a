
// 8 activations or weights of a 16-byte chunk (32 bytes for float) as floats: `load8`, and `load8s`
// for weights, a streaming load (ld.global.cs: evict first from L1 and L2), so that a frame's single
// pass over gigabytes of weights does not push the kernels' code, activations and caches out of L2
__device__ inline void widen8(const uint4& v, const __nv_bfloat16*, float* o) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    o[2 * i] = f.x;
    o[2 * i + 1] = f.y;
  }
}
__device__ inline void widen8(const uint4& v, const __half*, float* o) {
  const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    o[2 * i] = f.x;
    o[2 * i + 1] = f.y;
  }
}
__device__ inline void widen8(const float4& a, const float4& b, float* o) {
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
  o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}
template <typename T>
__device__ inline void load8(const T* p, float* o) {
  widen8(*reinterpret_cast<const uint4*>(p), p, o);
}
__device__ inline void load8(const float* p, float* o) {
  widen8(reinterpret_cast<const float4*>(p)[0], reinterpret_cast<const float4*>(p)[1], o);
}
template <typename T>
__device__ inline void load8s(const T* p, float* o) {
  widen8(__ldcs(reinterpret_cast<const uint4*>(p)), p, o);
}
__device__ inline void load8s(const float* p, float* o) {
  widen8(__ldcs(reinterpret_cast<const float4*>(p)), __ldcs(reinterpret_cast<const float4*>(p) + 1), o);
}
