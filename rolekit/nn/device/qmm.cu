// Kernel body of `nn.qmm`: part[blockIdx.y] [MT * 16, N] = x [M, K] (bf16) times the affine q4 rows
// w [N, K / 8] (uint32; value j of a row in word j / 8, lowest bits first; scales and biases
// [N, K / GS]) over the k range blockIdx.y * KS .. + KS, on tensor cores (mma m16n8k16, fp32 sums).
// Template constants T (bf16), M, MT = ceil(M / 16), N (a multiple of 128), K, GS (32, 64, 128),
// KS (a multiple of 128 dividing K). Blocks of 4 warps take 128 output columns, a warp 4 tiles of 8.
//
// The k order inside a 128-wide chunk is permuted, the same way for both operands (a dot product
// does not depend on it): lane (g, t) = (lane / 4, lane % 4) holds the 32 consecutive k values
// kb .. kb + 31, kb = chunk + 32 t, of its weight row (one 16-byte load) and of its two activation
// rows g and g + 8 (four 16-byte loads each); in product s (0..7) of the chunk, fragment slots
// 2t, 2t + 1 take k = kb + 4s + 0, 1 and slots 2t + 8, 2t + 9 take kb + 4s + 2, 3.
  constexpr int NTW = 4;
  constexpr int CHUNKS = KS / 128;
  constexpr int WORDS = K / 8;
  constexpr int GROUPS = K / GS;
  static_assert(KS % 128 == 0 && K % KS == 0 && N % 128 == 0 && GS % 32 == 0, "shapes");
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * 128 + warp * 32;
  const int k0 = blockIdx.y * KS;
  float acc[MT][NTW][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][j][e] = 0.f;
  // the chunk's weights, scales and biases of the lane (loaded one chunk ahead)
  uint4 wq[NTW];
  float sc[NTW];
  float bi[NTW];
  auto load = [&](int c, uint4 (&q)[NTW], float (&s)[NTW], float (&b)[NTW]) {
    const int kb = k0 + c * 128 + 32 * t;
#pragma unroll
    for (int j = 0; j < NTW; ++j) {
      const size_t row = (size_t)(n0 + 8 * j + g);
      q[j] = __ldcs(reinterpret_cast<const uint4*>(w + row * WORDS + kb / 8));
      s[j] = static_cast<float>(scales[row * GROUPS + kb / GS]);
      b[j] = static_cast<float>(biases[row * GROUPS + kb / GS]);
    }
  };
  load(0, wq, sc, bi);
  for (int c = 0; c < CHUNKS; ++c) {
    const int kb = k0 + c * 128 + 32 * t;
    uint4 wn[NTW];
    float sn[NTW];
    float bn[NTW];
    if (c + 1 < CHUNKS) load(c + 1, wn, sn, bn);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t xa[2][16];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = mt * 16 + g + 8 * h;
        const uint4* xp = reinterpret_cast<const uint4*>(x + (size_t)(r < M ? r : 0) * K + kb);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint4 v = r < M ? __ldg(xp + i) : make_uint4(0u, 0u, 0u, 0u);
          xa[h][4 * i] = v.x;
          xa[h][4 * i + 1] = v.y;
          xa[h][4 * i + 2] = v.z;
          xa[h][4 * i + 3] = v.w;
        }
      }
#pragma unroll
      for (int s = 0; s < 8; ++s) {
#pragma unroll
        for (int j = 0; j < NTW; ++j) {
          const uint32_t q = s < 2 ? wq[j].x : s < 4 ? wq[j].y : s < 6 ? wq[j].z : wq[j].w;
          const uint32_t word = q >> (16 * (s & 1));
          const float f0 = fmaf(static_cast<float>(word & 15u), sc[j], bi[j]);
          const float f1 = fmaf(static_cast<float>((word >> 4) & 15u), sc[j], bi[j]);
          const float f2 = fmaf(static_cast<float>((word >> 8) & 15u), sc[j], bi[j]);
          const float f3 = fmaf(static_cast<float>((word >> 12) & 15u), sc[j], bi[j]);
          mma_bf16_m16n8k16(
              acc[mt][j], xa[0][2 * s], xa[1][2 * s], xa[0][2 * s + 1], xa[1][2 * s + 1],
              pack_bf16x2(f0, f1), pack_bf16x2(f2, f3));
        }
      }
    }
    if (c + 1 < CHUNKS) {
#pragma unroll
      for (int j = 0; j < NTW; ++j) {
        wq[j] = wn[j];
        sc[j] = sn[j];
        bi[j] = bn[j];
      }
    }
  }
  float* out = part + (size_t)blockIdx.y * (MT * 16) * N;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < NTW; ++j) {
      const int col = n0 + 8 * j + 2 * t;
      const int r = mt * 16 + g;
      *reinterpret_cast<float2*>(out + (size_t)r * N + col) = make_float2(acc[mt][j][0], acc[mt][j][1]);
      *reinterpret_cast<float2*>(out + (size_t)(r + 8) * N + col) = make_float2(acc[mt][j][2], acc[mt][j][3]);
    }
  }
