
  constexpr int EPC = 128 / BITS;          // values per 16-byte chunk of packed weight
  constexpr int PER_WORD = 32 / BITS;
  constexpr int CH = K / EPC;              // chunks per weight row
  constexpr int ITERS = (CH + 31) / 32;    // chunks per lane
  constexpr unsigned MASK = (1u << BITS) - 1u;
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;  // whole warps only: blockDim is a multiple of 32
  const uint4* wr = reinterpret_cast<const uint4*>(w) + (size_t)row * CH;
  const T* sr = scales + (size_t)row * (K / GS);
  const T* br = biases + (size_t)row * (K / GS);
  uint4 q[ITERS];
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = it * 32 + lane;
    if (c < CH) q[it] = wr[c];
  }
  float acc[B];
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = 0.f;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = it * 32 + lane;
    if (c < CH) {
      const int g = (c * EPC) / GS;
      const float sc = static_cast<float>(sr[g]);
      const float bb = static_cast<float>(br[g]);
      const unsigned wd[4] = {q[it].x, q[it].y, q[it].z, q[it].w};
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const T* xr = x + (size_t)b * K + (size_t)c * EPC;
        float qx = 0.f, xs = 0.f;
#pragma unroll
        for (int j = 0; j < EPC / 8; ++j) {
          float xv[8];
          load8(xr + 8 * j, xv);
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            const int e = 8 * j + t;
            const unsigned v = (wd[e / PER_WORD] >> ((e % PER_WORD) * BITS)) & MASK;
            qx = fmaf(static_cast<float>(v), xv[t], qx);
            xs += xv[t];
          }
        }
        acc[b] = fmaf(sc, qx, fmaf(bb, xs, acc[b]));
      }
    }
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
    float v = acc[b];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) y[(size_t)b * N + row] = static_cast<T>(v);
  }
