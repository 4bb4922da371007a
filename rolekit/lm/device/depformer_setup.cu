// The depformer kernel's set-up (`lm.depformer_source` writes the constants before it, the step
// loop after it): shared memory, the scratch's layout after the barrier's CONTROL words, the rows'
// text tokens and sampling settings read once.
  extern __shared__ float xs[];  // this block's stage input [B, KMAX] fp32
  __shared__ float sv[CARD];
  __shared__ unsigned int hist[256];
  __shared__ unsigned int info[2];
  __shared__ float rv[NT / 32];
  __shared__ int ri[NT / 32];
  __shared__ int cur[B];
  __shared__ float temp_s[B];  // per-row sampling settings, read once: a [1] array of MLX's CUDA
  __shared__ int topk_s[B];    // backend lives in host memory the GPU reads over the bus
  unsigned int* bar = reinterpret_cast<unsigned int*>(ws);
  unsigned long long epoch = grid_start(bar);
  float* X = ws + CONTROL;   // [B, DD] residual stream
  float* Q = X + B * DD;     // [B, DD]
  float* A = Q + B * DD;     // [B, DD] attention output
  float* G = A + B * DD;     // [B, F] gated hidden
  float* LG = G + B * F;     // [B, NS, CARD] logits
  float* KV = LG + B * NS * CARD;  // [L, B, NS, 2, DD] step caches
  if (threadIdx.x < B) {
    cur[threadIdx.x] = text[threadIdx.x];
    temp_s[threadIdx.x] = temp[threadIdx.x];
    topk_s[threadIdx.x] = topk[threadIdx.x];
  }
  __syncthreads();
