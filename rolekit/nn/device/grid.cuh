// The grid barrier of a persistent kernel (one block per SM, all resident). `bar` points at its
// words: [0, 1] a 64-bit arrival count, [2] the timeout flag. Each block adds 1 to the count per
// barrier and the count never goes back, so at a launch's start it is a multiple of gridDim.x: 0
// in a zeroed scratch, or where the last launch of the same grid size left it in a counter kept
// across launches (no zeroing launch). `epoch`, per block, starts at `grid_start(bar)`; barrier k
// of the launch is passed when the count reaches start + k * gridDim.x. A waiter that sees no
// progress for ~2 s sets the flag and, like every later barrier, stops waiting: the results are
// then void (the host reads the flag).
__device__ inline unsigned long long grid_start(const unsigned int* bar) {
  // the count before this launch's first barrier (a block reads it before it arrives there, and
  // no block passes that barrier before all have arrived)
  const unsigned long long c = *reinterpret_cast<const volatile unsigned long long*>(bar);
  return c - c % gridDim.x;
}

__device__ inline void grid_sync(unsigned int* bar, unsigned long long& epoch) {
  __syncthreads();
  epoch += gridDim.x;
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(reinterpret_cast<unsigned long long*>(bar), 1ull);
    const volatile unsigned long long* count = reinterpret_cast<volatile unsigned long long*>(bar);
    const volatile unsigned int* flag = bar + 2;
    if (*flag == 0u) {
      const long long t0 = clock64();
      while (*count < epoch) {
        if (clock64() - t0 > 4000000000LL) { atomicExch(bar + 2, 1u); break; }
      }
    }
    __threadfence();
  }
  __syncthreads();
}

__device__ inline void stamp(float* times, int i) {
  // block 0 writes the global timer (ns) as time i of `times` (uint32 pairs, low word first)
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    times[2 * i] = __uint_as_float(static_cast<unsigned int>(t & 0xffffffffull));
    times[2 * i + 1] = __uint_as_float(static_cast<unsigned int>(t >> 32));
  }
}

template <int K, int B, int NT, bool NORM, bool SWZ = false, typename G>
__device__ inline void stage(float* xs, const float* src, const G* g, float eps) {
  // this block's copy of the stage input [B, K] (written by other blocks: read through L2), 16
  // bytes a load and up to 8 loads in flight per thread (one at a time would wait an L2 latency
  // per load)
  static_assert((B * K) % 4 == 0, "float4 staging");
  constexpr int N4 = B * K / 4;
  constexpr int PER = (N4 + NT - 1) / NT;
  constexpr int UB = PER < 8 ? PER : 8;
  const float4* s4 = reinterpret_cast<const float4*>(src);
  float4* x4 = reinterpret_cast<float4*>(xs);
  __syncthreads();
  for (int i0 = threadIdx.x; i0 < N4; i0 += NT * UB) {
    float4 v[UB];
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      if (i0 + u * NT < N4) v[u] = __ldcg(s4 + i0 + u * NT);
    }
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      if (i0 + u * NT < N4) x4[SWZ ? swz4(i0 + u * NT) : i0 + u * NT] = v[u];
    }
  }
  __syncthreads();
  if constexpr (NORM) block_rms_norm<B, K, NT, SWZ>(xs, g, eps);
}

template <int B, bool GATE, bool PAIRS = false, typename E>
__device__ inline void finish_row(float (&acc)[B], float (&acc2)[B], int lane, int row, E epi, int half = 0) {
  // sum the warp's partial products; lane 0 hands each value to `epi`: GATE, silu(acc) * acc2 for
  // `row`; PAIRS, acc for `row` and acc2 for `row + half`; else acc for `row`
  warp_sum<B, GATE || PAIRS>(acc, acc2);
  if (lane == 0) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      float v = acc[b];
      if constexpr (GATE) v = v / (1.f + expf(-v)) * acc2[b];
      epi(b, row, v);
      if constexpr (PAIRS) epi(b, row + half, acc2[b]);
    }
  }
}

__device__ inline uint64_t evict_first_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}
__device__ inline void cp_async16(void* dst, const void* src, uint64_t pol) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "l"(pol) : "memory");
}
__device__ inline void cp_async4(void* dst, const void* src) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
}
__device__ inline void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ inline void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

template <int BITS, int GS, typename S>
struct Unit {
  // a warp's unit of the pipeline: 512 bytes of one packed row (16 per lane), then the scales and
  // the biases of the groups they hold (each padded to 16 bytes)
  static constexpr int LANE_VALUES = 128 / BITS;         // values of a lane's 16 bytes
  static constexpr int GROUPS = 32 * LANE_VALUES / GS;
  static constexpr int SB = GROUPS * (int)sizeof(S);     // bytes of the unit's scales
  static constexpr int SW = SB / 4;                      // as 4-byte copies
  static constexpr int SPAD = (SB + 15) / 16 * 4;        // words
  static constexpr int SLOT_WORDS = 128 + 2 * SPAD;      // words of a pipeline slot
};

template <int B, int K, int NT, int LANE_VALUES>
__device__ inline void chunk_sums(const float* xs, float* sums) {
  // sums [B, K / LANE_VALUES]: each lane chunk's input sum (the bias term), from a swizzled
  // stage input
  const float4* x4 = reinterpret_cast<const float4*>(xs);
  for (int i = threadIdx.x; i < B * K / LANE_VALUES; i += NT) {
    const int f0 = i * (LANE_VALUES / 4);
    const int m = (f0 >> 3) & 7;
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < LANE_VALUES / 4; ++j) {
      const float4 v = x4[(f0 + j) ^ m];
      s += (v.x + v.y) + (v.z + v.w);
    }
    sums[i] = s;
  }
  __syncthreads();
}

template <int K, int B, int BITS, int GS, typename S>
__device__ inline void unit_dot(const uint32_t* slot, int c, int lane, const float* xs, const float* sums, float (&r)[B]) {
  // lane's 16 bytes (chunk c of the row) against each row b of the swizzled input:
  // r[b] = s * sum(q x) + bias * sum(x)
  using U = Unit<BITS, GS, S>;
  constexpr int LANE_VALUES = U::LANE_VALUES;
  constexpr int PW = 32 / BITS;
  const uint4 q = reinterpret_cast<const uint4*>(slot)[lane];
  const int g = (lane * LANE_VALUES) / GS;
  const float s = static_cast<float>(reinterpret_cast<const S*>(slot + 128)[g]);
  const float bb = static_cast<float>(reinterpret_cast<const S*>(slot + 128 + U::SPAD)[g]);
  float qv[4][PW];
  quant_values<BITS>(q.x, qv[0]);
  quant_values<BITS>(q.y, qv[1]);
  quant_values<BITS>(q.z, qv[2]);
  quant_values<BITS>(q.w, qv[3]);
  const float4* x4 = reinterpret_cast<const float4*>(xs);
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int f0 = (b * K + c * LANE_VALUES) / 4;
    const int m = (f0 >> 3) & 7;
    float d0 = 0.f, d1 = 0.f;
#pragma unroll
    for (int j = 0; j < LANE_VALUES / 4; ++j) {
      const float4 xv = x4[(f0 + j) ^ m];
      const int e = 4 * j;
      d0 = fmaf(qv[e / PW][e % PW], xv.x, d0);
      d1 = fmaf(qv[(e + 1) / PW][(e + 1) % PW], xv.y, d1);
      d0 = fmaf(qv[(e + 2) / PW][(e + 2) % PW], xv.z, d0);
      d1 = fmaf(qv[(e + 3) / PW][(e + 3) % PW], xv.w, d1);
    }
    r[b] = fmaf(s, d0 + d1, bb * sums[(b * K) / LANE_VALUES + c]);
  }
}

template <int N, int K, int B, bool GATE, int NT, int BITS, int GS, int SLOTS, typename S, typename E>
__device__ inline void rows_async(
    const uint32_t* w, const S* sc, const S* bi, size_t row0, const float* xs, const float* sums,
    uint32_t* ring, E epi) {
  // rows_quant with the weights streamed through a per-warp ring of SLOTS slots in shared memory
  // (cp.async): SLOTS units of 512 bytes in flight per warp at all times, across row boundaries,
  // without holding them in registers. Each lane reads back its own 16 bytes (32 q4 values of one
  // group), the input from a swizzled stage (`stage<..., SWZ>`) and the chunk sums (`chunk_sums`).
  // GATE: output row r takes row r (u) then row N + r (w) of the family, silu(u) * w.
  using U = Unit<BITS, GS, S>;
  constexpr int NW = NT / 32;
  constexpr int KW = K * BITS / 32;
  constexpr int CH = KW / 4;
  constexpr int UPR = (CH + 31) / 32;
  constexpr int UPO = GATE ? 2 * UPR : UPR;
  constexpr int NGB = (K / GS) * (int)sizeof(S);
  constexpr bool FULL = CH % 32 == 0;
  static_assert(KW % 4 == 0 && NGB % 4 == 0 && (32 * U::LANE_VALUES) % GS == 0, "rows_async layout");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gw = blockIdx.x * NW + warp;
  const int gn = gridDim.x * NW;
  const int total = gw < N ? ((N - 1 - gw) / gn + 1) * UPO : 0;
  uint32_t* wring = ring + warp * SLOTS * U::SLOT_WORDS;
  const uint64_t pol = evict_first_policy();
  int irow = gw, ik = 0;  // the next unit to copy: output row, unit of it
  auto issue = [&](int i) {
    if (i < total) {
      const bool part = GATE && ik >= UPR;
      const int u = part ? ik - UPR : ik;
      const size_t r = row0 + (part ? (size_t)N : (size_t)0) + irow;
      uint32_t* dst = wring + (i % SLOTS) * U::SLOT_WORDS;
      const int c = u * 32 + lane;
      if (FULL || c < CH) cp_async16(dst + 4 * lane, w + r * KW + 4 * c, pol);
      for (int t = lane; t < 2 * U::SW; t += 32) {
        const bool isb = t >= U::SW;
        const int tt = isb ? t - U::SW : t;
        const int byte = u * U::SB + 4 * tt;
        if (byte < NGB)
          cp_async4(dst + 128 + (isb ? U::SPAD : 0) + tt,
                    reinterpret_cast<const char*>(isb ? bi : sc) + r * NGB + byte);
      }
      if (++ik == UPO) { ik = 0; irow += gn; }
    }
    cp_commit();
  };
#pragma unroll
  for (int i = 0; i < SLOTS; ++i) issue(i);
  float acc[B], acc2[B];
#pragma unroll
  for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
  int crow = gw, ck = 0;  // the unit being summed
  for (int i = 0; i < total; ++i) {
    cp_wait<SLOTS - 1>();
    __syncwarp();
    const bool part = GATE && ck >= UPR;
    const int c = (part ? ck - UPR : ck) * 32 + lane;
    if (FULL || c < CH) {
      float r[B];
      unit_dot<K, B, BITS, GS, S>(wring + (i % SLOTS) * U::SLOT_WORDS, c, lane, xs, sums, r);
      if (part) {
#pragma unroll
        for (int b = 0; b < B; ++b) acc2[b] += r[b];
      } else {
#pragma unroll
        for (int b = 0; b < B; ++b) acc[b] += r[b];
      }
    }
    __syncwarp();
    issue(i + SLOTS);
    if (++ck == UPO) {
      finish_row<B, GATE>(acc, acc2, lane, crow, epi);
#pragma unroll
      for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
      ck = 0;
      crow += gn;
    }
  }
  cp_wait<0>();
}

// One warp per output row of a weight family's rows row0 .. (an epilogue functor `epi(b, row, v)`
// per value): GATE, row (u) and row N + row (w) give silu(u) * w; PAIRS (not gated), a warp takes
// rows row and row + N / 2 at a time: twice the bytes in flight per warp.
template <int N, int K, int B, bool GATE, int NT, bool PAIRS = false, typename W, typename E>
__device__ inline void rows_dense(const W* w, size_t row0, const float* xs, E epi) {
  static_assert(!PAIRS || (!GATE && N % 2 == 0), "pairs: not gated, N even");
  constexpr int NW = NT / 32;
  constexpr int TASKS = PAIRS ? N / 2 : N;               // rows a warp starts from
  constexpr int SECOND = PAIRS ? N / 2 : (GATE ? N : 0);  // the second row read, after the first
  const int lane = threadIdx.x & 31;
  for (int row = blockIdx.x * NW + (threadIdx.x >> 5); row < TASKS; row += gridDim.x * NW) {
    float acc[B], acc2[B];
#pragma unroll
    for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
    dot_dense<K, B, GATE || PAIRS>(w + (row0 + row) * K, w + (row0 + SECOND + row) * K, xs, lane, acc, acc2);
    finish_row<B, GATE, PAIRS>(acc, acc2, lane, row, epi, TASKS);
  }
}

template <int N, int K, int B, bool GATE, int NT, int BITS, int GS, int WORDS_IN_FLIGHT, bool PAIRS = false,
          typename S, typename E>
__device__ inline void rows_quant(
    const uint32_t* w, const S* sc, const S* bi, size_t row0, const float* xs, E epi) {
  // rows_dense's contract for MLX's affine q4 / q8 rows (`dot_quant`: WORDS_IN_FLIGHT words in
  // flight per lane)
  static_assert(!PAIRS || (!GATE && N % 2 == 0), "pairs: not gated, N even");
  constexpr int NW = NT / 32;
  constexpr int KW = K * BITS / 32;
  constexpr int NG = K / GS;
  constexpr int TASKS = PAIRS ? N / 2 : N;
  constexpr int SECOND = PAIRS ? N / 2 : (GATE ? N : 0);
  const int lane = threadIdx.x & 31;
  for (int row = blockIdx.x * NW + (threadIdx.x >> 5); row < TASKS; row += gridDim.x * NW) {
    float acc[B], acc2[B];
#pragma unroll
    for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
    const size_t r1 = row0 + row, r2 = row0 + SECOND + row;
    dot_quant<K, B, GATE || PAIRS, BITS, GS, S, WORDS_IN_FLIGHT>(w + r1 * KW, w + r2 * KW, sc + r1 * NG,
                                                                 bi + r1 * NG, sc + r2 * NG, bi + r2 * NG, xs,
                                                                 lane, acc, acc2);
    finish_row<B, GATE, PAIRS>(acc, acc2, lane, row, epi, TASKS);
  }
}

template <int NT>
__device__ inline void prefetch_l2(const void* base, size_t first, size_t bytes) {
  // ask L2 for bytes [first, first + bytes) of base, 128-byte lines spread over the grid's threads
  const char* p = static_cast<const char*>(base) + first;
  const size_t stride = (size_t)gridDim.x * NT * 128;
  for (size_t off = ((size_t)blockIdx.x * NT + threadIdx.x) * 128; off < bytes; off += stride)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
}

