
// A stage input in shared memory may be stored SWIZZLED: within each aligned block of 32 floats,
// float4 j of block n sits at float4 j ^ (n & 7). A warp lane that reads the 32 consecutive values
// of its 16-byte weight chunk then reads its 8 float4s without bank conflicts (8 consecutive lanes
// hit 8 different bank quads). Sums over a whole aligned block do not depend on the order.
__device__ inline int swz4(int i) { return i ^ ((i >> 3) & 7); }     // float4 index
__device__ inline int swz(int e) { return e ^ (((e >> 5) & 7) << 2); } // float index

template <int B, int K, int NT, bool SWZ = false, typename G>
__device__ inline void block_rms_norm(float* xs, const G* g, float eps) {  // SWZ: xs swizzled (swz)
  // xs [B, K] fp32 in shared memory, normalized in place (the caller synchronized after staging)
  constexpr int NW = NT / 32;
  __shared__ float part[B][NW];
  __shared__ float inv[B];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int b = 0; b < B; ++b) {
    float s = 0.f;
    for (int k = threadIdx.x; k < K; k += NT) s = fmaf(xs[b * K + k], xs[b * K + k], s);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) part[b][warp] = s;
  }
  __syncthreads();
  if (threadIdx.x < B) {
    float s = 0.f;
    for (int i = 0; i < NW; ++i) s += part[threadIdx.x][i];
    inv[threadIdx.x] = rsqrtf(s / static_cast<float>(K) + eps);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < B * K; i += NT) xs[i] *= inv[i / K] * static_cast<float>(g[(SWZ ? swz(i) : i) % K]);
  __syncthreads();
}

template <int B, int K, int NT, typename G, typename E>
__device__ inline void block_layer_norm(float* xs, const G* g, const E* beta, float eps) {
  // LayerNorm of xs [B, K] in place: (x - mean) / sqrt(var + eps) * g + beta (biased variance)
  constexpr int NW = NT / 32;
  __shared__ float part[2][B][NW];
  __shared__ float stat[2][B];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      float s = 0.f;
      for (int k = threadIdx.x; k < K; k += NT) {
        const float d = pass == 0 ? xs[b * K + k] : xs[b * K + k] - stat[0][b];
        s = pass == 0 ? s + d : fmaf(d, d, s);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) part[pass][b][warp] = s;
    }
    __syncthreads();
    if (threadIdx.x < B) {
      float s = 0.f;
      for (int i = 0; i < NW; ++i) s += part[pass][threadIdx.x][i];
      stat[pass][threadIdx.x] = pass == 0 ? s / static_cast<float>(K) : rsqrtf(s / static_cast<float>(K) + eps);
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < B * K; i += NT) {
    const int b = i / K, k = i % K;
    xs[i] = (xs[i] - stat[0][b]) * stat[1][b] * static_cast<float>(g[k]) + static_cast<float>(beta[k]);
  }
  __syncthreads();
}

template <int K, int B, bool GATE, typename W>
__device__ inline void dot_dense(
    const W* wr, const W* wr2, const float* xs, int lane, float (&acc)[B], float (&acc2)[B]) {
  // 8 weights (one 16-byte load for 16-bit types) per chunk, U chunks in flight per lane
  constexpr int CH = K / 8;
  constexpr int U = 4;
  for (int c0 = 0; c0 < CH; c0 += 32 * U) {
    float wv[U][8];
    float wv2[U][8];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * 32 + lane;
      if (c < CH) {
        load8s(wr + c * 8, wv[u]);
        if constexpr (GATE) load8s(wr2 + c * 8, wv2[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * 32 + lane;
      if (c < CH) {
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const float4* xr = reinterpret_cast<const float4*>(xs + b * K + c * 8);
          const float4 xa = xr[0], xb = xr[1];
          const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            acc[b] = fmaf(wv[u][t], xv[t], acc[b]);
            if constexpr (GATE) acc2[b] = fmaf(wv2[u][t], xv[t], acc2[b]);
          }
        }
      }
    }
  }
}

template <int BITS>
__device__ inline void quant_values(uint32_t w, float (&v)[32 / BITS]) {
  // v[e] = the e-th BITS-bit field q of w (little end first) as an exact float, without int-to-float
  // conversions (16 per clock and SM on Hopper, against 128 FFMA). A field at bit offset p < 16 of
  // a 16-bit half, under the exponent of 2^(23 - p) (biased 150 - p), is the float
  // 2^(23 - p) * (1 + q * 2^p / 2^23) = 2^(23 - p) + q, and subtracting 2^(23 - p) leaves q (exact:
  // q < 2^BITS <= 2^(23 - p)). The half is OR'ed once with EXPS, the union of those exponent fields
  // (bits 23-30; 150, 146, 142, 138 for q4, 150, 142 for q8), and one AND per value keeps the
  // field and its exponent: one LOP3 and one FADD per value, both with an immediate, plus two
  // instructions per word (w | EXPS, and (w >> 16) | EXPS as one LEA.HI on sm_90).
  constexpr int PER_HALF = 16 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  constexpr uint32_t EXPS = 0x4F000000u;  // biased exponent 158 = 0b10011110
  const uint32_t half[2] = {w | EXPS, (w >> 16) | EXPS};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < PER_HALF; ++j) {
      const uint32_t e = (150u - BITS * j) << 23;  // 2^(23 - p), p = BITS * j
      v[h * PER_HALF + j] = __uint_as_float(half[h] & (e | (MASK << (BITS * j)))) - __uint_as_float(e);
    }
  }
}

// WORDS_IN_FLIGHT: the words a lane loads before it multiplies any
template <int K, int B, bool GATE, int BITS, int GS, typename S, int WORDS_IN_FLIGHT = 8>
__device__ inline void dot_quant(
    const uint32_t* wr, const uint32_t* wr2, const S* s1, const S* b1, const S* s2, const S* b2,
    const float* xs, int lane, float (&acc)[B], float (&acc2)[B]) {
  // MLX affine layout: row of K * BITS / 32 words, scales/biases [K / GS] per row, w = s * q + b.
  // One 32-bit word (8 q4 or 4 q8 values) per lane and load: consecutive lanes read consecutive
  // words (coalesced) and consecutive activations (float4 reads of shared memory, 2-way at most).
  // The values q are built once per word by `quant_values` (mantissa bits, no int-to-float
  // conversion), then each row b takes s * sum(q x) + b * sum(x) over the word: one FFMA per value
  // and a pairwise input sum (PER_WORD - 1 FADD).
  constexpr int PER_WORD = 32 / BITS;
  constexpr int KW = K / PER_WORD;
  constexpr bool FULL = KW % (32 * WORDS_IN_FLIGHT) == 0;  // no partial chunk: no bounds test
  for (int c0 = 0; c0 < KW; c0 += 32 * WORDS_IN_FLIGHT) {
    uint32_t q[WORDS_IN_FLIGHT];
    uint32_t q2[WORDS_IN_FLIGHT];
#pragma unroll
    for (int u = 0; u < WORDS_IN_FLIGHT; ++u) {
      const int c = c0 + u * 32 + lane;
      if (FULL || c < KW) {
        q[u] = __ldcs(wr + c);  // streamed: read once a frame, first out of L2
        if constexpr (GATE) q2[u] = __ldcs(wr2 + c);
      }
    }
#pragma unroll
    for (int u = 0; u < WORDS_IN_FLIGHT; ++u) {
      const int c = c0 + u * 32 + lane;
      if (FULL || c < KW) {
        const int gi = (c * PER_WORD) / GS;
        const float sc = static_cast<float>(__ldcs(s1 + gi));
        const float bi = static_cast<float>(__ldcs(b1 + gi));
        float sc2 = 0.f, bi2 = 0.f;
        float qv[PER_WORD];
        float qv2[PER_WORD];
        quant_values<BITS>(q[u], qv);
        if constexpr (GATE) {
          sc2 = static_cast<float>(__ldcs(s2 + gi));
          bi2 = static_cast<float>(__ldcs(b2 + gi));
          quant_values<BITS>(q2[u], qv2);
        }
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const float4* xr = reinterpret_cast<const float4*>(xs + b * K + c * PER_WORD);
          float xv[PER_WORD];
#pragma unroll
          for (int j = 0; j < PER_WORD / 4; ++j) {
            const float4 f = xr[j];
            xv[4 * j] = f.x; xv[4 * j + 1] = f.y; xv[4 * j + 2] = f.z; xv[4 * j + 3] = f.w;
          }
          float qx = qv[0] * xv[0];
          float qx2 = 0.f;
          if constexpr (GATE) qx2 = qv2[0] * xv[0];
#pragma unroll
          for (int e = 1; e < PER_WORD; ++e) {
            qx = fmaf(qv[e], xv[e], qx);
            if constexpr (GATE) qx2 = fmaf(qv2[e], xv[e], qx2);
          }
          float xsum = (xv[0] + xv[1]) + (xv[2] + xv[3]);
          if constexpr (PER_WORD == 8) xsum += (xv[4] + xv[5]) + (xv[6] + xv[7]);
          acc[b] = fmaf(sc, qx, fmaf(bi, xsum, acc[b]));
          if constexpr (GATE) acc2[b] = fmaf(sc2, qx2, fmaf(bi2, xsum, acc2[b]));
        }
      }
    }
  }
}

template <int B, bool GATE>
__device__ inline void warp_sum(float (&acc)[B], float (&acc2)[B]) {
#pragma unroll
  for (int b = 0; b < B; ++b) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
      if constexpr (GATE) acc2[b] += __shfl_xor_sync(0xffffffffu, acc2[b], o);
    }
  }
}
