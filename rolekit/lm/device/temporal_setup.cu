// The temporal kernel's set-up (`lm.temporal_source` writes the constants, SUMS and the rings'
// pointers `ring_keys` / `ring_values` [L] before it, the layer loop after it): shared memory, the
// scratch's layout after the barrier's CONTROL words, the step's position and rows' padding read
// once, the residual stream X from x, `stage_qkv_input` and the products' epilogues.
  extern __shared__ float xs[];  // this block's stage input [B, max(D, F)] fp32 (swizzled when SLOTS > 0)
  float* sums = xs + B * (D > F ? D : F);  // SLOTS > 0: [B, K / LANE_VALUES] chunk sums of the stage input
  uint32_t* ring = reinterpret_cast<uint32_t*>(sums + SUMS);  // SLOTS > 0: [NW, SLOTS, slot] weight rings
  (void)sums; (void)ring; (void)WORDS_IN_FLIGHT;
  __shared__ float qs[HD], kn[HD], vn[HD];
  __shared__ float rm[NW], rl[NW];
  __shared__ float ro[NW * HD];
  __shared__ float cw[B * H * NSPLIT];
  __shared__ const T* kp[L];
  __shared__ const T* vp[L];
  __shared__ int meta[1 + B];  // pos, start[B]: read once (a [1] array of MLX's CUDA backend lives
                               // in host memory, read over the bus)
  if (threadIdx.x <= B) meta[threadIdx.x] = threadIdx.x == 0 ? pos[0] : start[threadIdx.x - 1];
  if (threadIdx.x == 0) {
    for (int i = 0; i < L; ++i) { kp[i] = ring_keys[i]; vp[i] = ring_values[i]; }
  }
  unsigned int* bar = reinterpret_cast<unsigned int*>(ws);
  unsigned long long epoch = grid_start(bar);
  float* X = ws + CONTROL;         // [B, D] residual stream
  float* QKV = X + B * D;          // [B, 3D]
  float* G = QKV + B * 3 * D;      // [B, F] gated hidden
  float* PM = G + B * F;           // [B * H * NSPLIT] partial maxima (log2 domain)
  float* PL = PM + B * H * NSPLIT; // partial sums
  float* PO = PL + B * H * NSPLIT; // [B * H * NSPLIT, HD] partial outputs
  float* TM = PO + B * H * NSPLIT * HD;  // stage stamps
  __syncthreads();
  const int p = meta[0];
  stamp(TM, 0);
  for (int i = blockIdx.x * NT + threadIdx.x; i < B * D; i += gridDim.x * NT) X[i] = static_cast<float>(x[i]);
  auto stage_qkv_input = [&](int l) {
    // S1's input: rms1(X) of layer l; layer 0 reads x directly (X is being written)
    if (l == 0) {
      __syncthreads();
      for (int i = threadIdx.x; i < B * D; i += NT) xs[SWZ ? swz(i) : i] = static_cast<float>(x[i]);
      __syncthreads();
      block_rms_norm<B, D, NT, SWZ>(xs, n1, EPS);
    } else {
      stage<D, B, NT, true, SWZ>(xs, X, n1 + (size_t)l * D, EPS);
    }
    if constexpr (SLOTS > 0) chunk_sums<B, D, NT, LANE_VALUES>(xs, sums);
  };
  // the products' epilogues: value v of output row `row` for batch row b
  auto store_qkv = [&](int b, int row, float v) { QKV[b * 3 * D + row] = v; };
  auto add_to_x = [&](int b, int row, float v) { X[b * D + row] = __ldcg(X + b * D + row) + v; };
  auto store_gated = [&](int b, int row, float v) { G[b * F + row] = v; };
