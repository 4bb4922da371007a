
template <int B, int H, int HD, int DD, int NS, int NT>
__device__ inline void block_attention(const float* q, const float* kv, float* xs, int s, float scale) {
  // Every block computes the whole attention output [B, DD] into its own shared memory (the
  // out_proj's input), so no grid barrier separates the two: one warp per (row, head) at a time,
  // q over the keys of steps 0..s of the layer's cache [B, NS, 2, DD] (keys first).
  constexpr int NW = NT / 32;
  constexpr int PL = HD / 32;
  const int lane = threadIdx.x & 31;
  __syncthreads();  // xs is free
  for (int u = threadIdx.x >> 5; u < B * H; u += NW) {
    const int b = u / H, hh = u % H;
    float qv[PL];
#pragma unroll
    for (int p = 0; p < PL; ++p) qv[p] = __ldcg(q + b * DD + hh * HD + p * 32 + lane);
    float sc[NS];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      sc[j] = -INFINITY;
      if (j <= s) {
        const float* kp = kv + (size_t)(b * NS + j) * 2 * DD + hh * HD;
        float d = 0.f;
#pragma unroll
        for (int p = 0; p < PL; ++p) d = fmaf(qv[p], __ldcg(kp + p * 32 + lane), d);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        sc[j] = d * scale;
        m = fmaxf(m, sc[j]);
      }
    }
    float l = 0.f;
    float o[PL];
#pragma unroll
    for (int p = 0; p < PL; ++p) o[p] = 0.f;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      if (j <= s) {
        const float e = expf(sc[j] - m);
        const float* vp = kv + ((size_t)(b * NS + j) * 2 + 1) * DD + hh * HD;
        l += e;
#pragma unroll
        for (int p = 0; p < PL; ++p) o[p] = fmaf(e, __ldcg(vp + p * 32 + lane), o[p]);
      }
    }
#pragma unroll
    for (int p = 0; p < PL; ++p) xs[b * DD + hh * HD + p * 32 + lane] = o[p] / l;
  }
  __syncthreads();
}

__device__ inline unsigned int order_key(float f) {
  const unsigned int u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline float order_value(unsigned int u) {
  return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

template <int V, int NT>
__device__ inline float kth_largest(const float* sv, unsigned int k, unsigned int* hist, unsigned int* info) {
  // radix select over the order-preserving bit patterns, 8 bits a pass, from the top
  unsigned int prefix = 0u, mask = 0u;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += NT) hist[i] = 0u;
    __syncthreads();
    for (int i = threadIdx.x; i < V; i += NT) {
      const unsigned int u = order_key(sv[i]);
      if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      unsigned int c[8];
      unsigned int sum = 0u;
#pragma unroll
      for (int j = 0; j < 8; ++j) { c[j] = hist[255 - 8 * lane - j]; sum += c[j]; }
      unsigned int incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned int n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
      }
      const unsigned int excl = incl - sum;
      if (excl < k && k <= incl) {
        unsigned int run = excl;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (run + c[j] >= k) { info[0] = 255u - 8u * lane - j; info[1] = k - run; break; }
          run += c[j];
        }
      }
    }
    __syncthreads();
    prefix |= info[0] << shift;
    mask |= 255u << shift;
    k = info[1];
    __syncthreads();
  }
  return order_value(prefix);
}

template <int NT>
__device__ inline int block_argmax(float v, int i, float* rv, int* ri) {
  // the largest v, lowest i on ties, over the block
  constexpr int NW = NT / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, i, o);
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
  }
  if (lane == 0) { rv[warp] = v; ri[warp] = i; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < NW; ++w) {
      if (rv[w] > v || (rv[w] == v && ri[w] < i)) { v = rv[w]; i = ri[w]; }
    }
    ri[0] = i;
  }
  __syncthreads();
  const int best = ri[0];
  __syncthreads();
  return best;
}
