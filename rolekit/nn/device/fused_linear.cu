// Kernel body of `nn.fused`: y [B, N] = epilogue(rows of w against prologue(x [B, K])), one warp per
// output row. Template constants T (activation dtype), B, N (per half when GATE), K, BITS (0: dense,
// 4, 8), GS (group size), GATE; `nn.fused._source` writes EPS and NT first, and the variant as
// macros (a kernel body is not a template: a branch naming an input the variant lacks would not
// compile even under `if constexpr`): FUSED_NORM 0 / 1 (RMSNorm, input g) / 2 (LayerNorm, inputs
// g and beta), FUSED_QUANT (inputs scales, biases), then the epilogue in order: FUSED_GELU (exact
// GELU), FUSED_SCALE (input ls, a layer scale), FUSED_RESIDUAL (input r).
  constexpr int NW = NT / 32;
  extern __shared__ float xs[];  // [B, K] input rows as fp32 (normalized when NORM)
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int i = threadIdx.x; i < B * K; i += NT) xs[i] = static_cast<float>(x[i]);
  __syncthreads();
#if FUSED_NORM == 1
  block_rms_norm<B, K, NT>(xs, g, EPS);
#elif FUSED_NORM == 2
  block_layer_norm<B, K, NT>(xs, g, beta, EPS);
#endif
  const int row = blockIdx.x * NW + warp;
  if (row >= N) return;
  float acc[B];
  float acc2[B];
#pragma unroll
  for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
#if FUSED_QUANT
  {
    constexpr int KW = K * BITS / 32;
    constexpr int NG = K / GS;
    const size_t r1 = (size_t)row;
    const size_t r2 = (size_t)((GATE ? N : 0) + row);
    dot_quant<K, B, GATE, BITS, GS>(w + r1 * KW, w + r2 * KW, scales + r1 * NG, biases + r1 * NG,
                                    scales + r2 * NG, biases + r2 * NG, xs, lane, acc, acc2);
  }
#else
  dot_dense<K, B, GATE>(w + (size_t)row * K, w + (size_t)((GATE ? N : 0) + row) * K, xs, lane, acc, acc2);
#endif
  warp_sum<B, GATE>(acc, acc2);
  if (lane == 0) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      float v = acc[b];
      if constexpr (GATE) v = v / (1.f + expf(-v)) * acc2[b];
#if FUSED_GELU
      v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
#endif
#if FUSED_SCALE
      v *= static_cast<float>(ls[row]);
#endif
#if FUSED_RESIDUAL
      v += static_cast<float>(r[(size_t)b * N + row]);
#endif
      y[(size_t)b * N + row] = static_cast<T>(v);
    }
  }
