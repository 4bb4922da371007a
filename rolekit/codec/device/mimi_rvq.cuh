// The split RVQ search over the grid. A search stage scans codebooks: each block takes a share of
// a table's entries for every row (`rvq_scan`) and leaves its best (distance, code) per kind and
// row in `candidates` [2 kinds, B, 2] at its block index (`rvq_block_best`); after the barrier
// every block picks the grid's best (`rvq_pick`). Kind 0: the first quantizer's table, kind 1: the
// rest's; distance = |e|^2 - 2 <v, e>; ties go to the lower code (`better`).

__device__ inline bool better(float d, int c, float bd, int bc) {
  // distance d of code c beats (bd, bc): smaller, or equal with the lower code
  return d < bd || (d == bd && c < bc);
}

template <int B, int QD, int NT>
__device__ inline void rvq_start(const float* first, const float* rest, float* first_v, float* rest_v) {
  // the rows' vectors [B, QD] for the first quantizer and for the rest, into shared memory
  for (int i = threadIdx.x; i < B * QD; i += NT) {
    first_v[i] = __ldcg(first + i);
    rest_v[i] = __ldcg(rest + i);
  }
  __syncthreads();
}

template <int B, int NW>
__device__ inline void rvq_pick(const float* candidates, int kind, int* chosen, int* codes, int k, int slot) {
  // the grid's best code per row of `kind` from every block's candidates, into chosen [B]
  // (shared) and, by block 0, codes[b * k + slot]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int b = warp; b < B; b += NW) {
    float bd = INFINITY;
    int bc = 0x7fffffff;
    for (int g = lane; g < (int)gridDim.x; g += 32) {
      const float* e = candidates + (((size_t)g * 2 + kind) * B + b) * 2;
      const float dd = __ldcg(e);
      const int cc = __float_as_int(__ldcg(e + 1));
      if (better(dd, cc, bd, bc)) { bd = dd; bc = cc; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float od = __shfl_xor_sync(0xffffffffu, bd, o);
      const int oc = __shfl_xor_sync(0xffffffffu, bc, o);
      if (better(od, oc, bd, bc)) { bd = od; bc = oc; }
    }
    if (lane == 0) {
      chosen[b] = bc;
      if (blockIdx.x == 0) codes[b * k + slot] = bc;
    }
  }
  __syncthreads();
}

template <int B, int QD, int NT>
__device__ inline void rvq_subtract(float* v, const float* table, const int* chosen) {
  // v [B, QD] -= the chosen entries of table [bins, QD]: the next quantizer's residual
  for (int i = threadIdx.x; i < B * QD; i += NT) {
    const int b = i / QD, d = i - b * QD;
    v[i] -= table[(size_t)chosen[b] * QD + d];
  }
  __syncthreads();
}

template <int B, int NW>
__device__ inline void rvq_clear(float* best_d, int* best_c) {
  // each warp's best so far [NW, 2, B]: none
  for (int i = threadIdx.x; i < NW * 2 * B; i += NW * 32) {
    best_d[i] = INFINITY;
    best_c[i] = 0x7fffffff;
  }
  __syncthreads();
}

template <int B, int QD, int BINS, int NW>
__device__ inline void rvq_scan(const float* v, const float* table, const float* norms, int kind, float* best_d,
                                int* best_c) {
  // this block's share of table [BINS, QD] (squared norms `norms`) against v [B, QD]: a warp per
  // (row, entry), each warp's best in best_d / best_c [NW, 2, B]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int task = blockIdx.x * NW + warp; task < B * BINS; task += gridDim.x * NW) {
    const int b = task / BINS, c = task - b * BINS;
    const float* e = table + (size_t)c * QD;
    float acc = 0.f;
    for (int d = lane; d < QD; d += 32) acc = fmaf(v[b * QD + d], e[d], acc);
    const float dist = norms[c] - 2.f * warp_sum1(acc);
    const int at = (warp * 2 + kind) * B + b;
    if (lane == 0 && better(dist, c, best_d[at], best_c[at])) {
      best_d[at] = dist;
      best_c[at] = c;
    }
  }
}

template <int B, int NW>
__device__ inline void rvq_block_best(const float* best_d, const int* best_c, float* candidates) {
  // the block's best per (kind, row) over its warps, into candidates at this block's index
  __syncthreads();
  if (threadIdx.x < 2 * B) {
    const int kind = threadIdx.x / B, b = threadIdx.x % B;
    float bd = INFINITY;
    int bc = 0x7fffffff;
    for (int w = 0; w < NW; ++w) {
      const int at = (w * 2 + kind) * B + b;
      if (better(best_d[at], best_c[at], bd, bc)) { bd = best_d[at]; bc = best_c[at]; }
    }
    float* e = candidates + (((size_t)blockIdx.x * 2 + kind) * B + b) * 2;
    e[0] = bd;
    e[1] = __int_as_float(bc);
  }
}
