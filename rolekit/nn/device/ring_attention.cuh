// One-position attention over a ring KV cache (`nn.ring_attention`'s contract): the slot rule,
// online-softmax states in the log2 domain (scores pre-scaled by log2 e, so exp is exp2f), and the
// temporal kernel's attention stages (split-K over the attended slots, then every block combines
// the splits).

template <int C, int CTX>
__device__ inline bool ring_slot_visible(int j, int p, int st) {
  // slot j of a ring of C slots after position p was written into slot p % C, for a row whose
  // first position is st (its left padding): the newest position the slot holds, held =
  // p - ((p - j + C) % C), is visible when held >= st and p - held < CTX; a row still in its
  // padding (p < st) sees only the slot just written
  if (p < st) return j == p % C;
  const int held = p - ((p - j + C) % C);
  return held >= st && p - held < CTX;
}

__device__ inline void merge_softmax(float& m, float& l, float (&o)[8], float m2, float l2, const float (&o2)[8]) {
  // two online-softmax states (log2 domain) into one; a state that saw nothing has m = -inf
  const float M = fmaxf(m, m2);
  if (M == -INFINITY) return;
  const float a = exp2f(m - M), c = exp2f(m2 - M);
  l = l * a + l2 * c;
#pragma unroll
  for (int t = 0; t < 8; ++t) o[t] = o[t] * a + o2[t] * c;
  m = M;
}

template <int LPS>
__device__ inline void merge_slot_groups(float& m, float& l, float (&o)[8]) {
  // the states of a warp's 32 / LPS lane groups (a group of LPS lanes reads one slot, 8 dims a
  // lane) into one, in every lane: lanes with the same dims merge through shuffles
#pragma unroll
  for (int off = LPS; off < 32; off <<= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const float l2 = __shfl_xor_sync(0xffffffffu, l, off);
    float o2[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) o2[t] = __shfl_xor_sync(0xffffffffu, o[t], off);
    merge_softmax(m, l, o, m2, l2, o2);
  }
}

template <int NW, int HD, int LPS, int NT>
__device__ inline void merge_block_warps(
    float m, float l, const float (&o)[8], float* rm, float* rl, float* ro, float* po, float* pm, float* pl,
    float* probe) {
  // the block's warps' softmax states (each already merged over its slot groups, so lanes with
  // grp == 0 hold dims sub * 8 .. sub * 8 + 7) into one partial state: po [HD], *pm, *pl.
  // rm, rl [NW] and ro [NW * HD]: shared scratch. Every thread of the block must call it.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int grp = lane / LPS, sub = lane % LPS;
  if (grp == 0) {
#pragma unroll
    for (int t = 0; t < 8; ++t) ro[warp * HD + sub * 8 + t] = o[t];
    if (sub == 0) { rm[warp] = m; rl[warp] = l; }
  }
  __syncthreads();
  if (probe) stamp(probe, 4);
  for (int dd = threadIdx.x; dd < HD; dd += NT) {
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; ++w) M = fmaxf(M, rm[w]);
    float L = 0.f, O = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      if (rm[w] == -INFINITY) continue;
      const float c = exp2f(rm[w] - M);
      L = fmaf(c, rl[w], L);
      O = fmaf(c, ro[w * HD + dd], O);
    }
    po[dd] = O;
    if (dd == 0) { *pm = M; *pl = L; }
  }
}

template <typename T, int B, int D, int H, int HD, int C, int CTX, int LEN, int NSPLIT, int CHUNK, int NT, int U>
__device__ inline void ring_attention_stage(
    const float* QKV, const T* kc, const T* vc, T* nkv, float* PM, float* PL, float* PO, int p,
    const int* start, const float* rope, float qscale, float* qs, float* kn, float* vn, float* rm,
    float* rl, float* ro, float* probe) {
  // items (row, head, split) over the blocks; a slot is read by LPS lanes, 8 values each
  constexpr int NW = NT / 32;
  constexpr int LPS = HD / 8;
  constexpr int SPW = 32 / LPS;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int grp = lane / LPS, sub = lane % LPS;
  const int cur = p % C;
  for (int item = blockIdx.x; item < B * H * NSPLIT; item += gridDim.x) {
    const int bh = item / NSPLIT, split = item % NSPLIT;
    const int b = bh / H, h = bh % H;
    const int st = start[b];
    __syncthreads();  // qs / kn / vn / reductions free
    if (probe && item == blockIdx.x) stamp(probe, 0);
    for (int i = threadIdx.x; i < HD / 2; i += NT) {
      const float cs = rope[(b * (HD / 2) + i) * 2], sn = rope[(b * (HD / 2) + i) * 2 + 1];
      const float* src = QKV + (size_t)b * 3 * D + h * HD + 2 * i;
      const float q0 = __ldcg(src), q1 = __ldcg(src + 1);
      const float k0 = __ldcg(src + D), k1 = __ldcg(src + D + 1);
      qs[2 * i] = (q0 * cs - q1 * sn) * qscale;
      qs[2 * i + 1] = (q0 * sn + q1 * cs) * qscale;
      const T ka = static_cast<T>(k0 * cs - k1 * sn), kb = static_cast<T>(k0 * sn + k1 * cs);
      const T va = static_cast<T>(__ldcg(src + 2 * D)), vb = static_cast<T>(__ldcg(src + 2 * D + 1));
      kn[2 * i] = static_cast<float>(ka);
      kn[2 * i + 1] = static_cast<float>(kb);
      vn[2 * i] = static_cast<float>(va);
      vn[2 * i + 1] = static_cast<float>(vb);
      if (split == 0) {
        T* kout = nkv + (size_t)b * D + h * HD + 2 * i;  // keys [B, D], values B * D further
        kout[0] = ka;
        kout[1] = kb;
        kout[B * D] = va;
        kout[B * D + 1] = vb;
        // and into the rings, in place: slot cur is never read from them in this step
        const size_t at = ((size_t)bh * C + cur) * HD + 2 * i;
        const_cast<T*>(kc)[at] = ka;
        const_cast<T*>(kc)[at + 1] = kb;
        const_cast<T*>(vc)[at] = va;
        const_cast<T*>(vc)[at + 1] = vb;
      }
    }
    if (probe && item == blockIdx.x) stamp(probe, 1);
    __syncthreads();
    if (probe && item == blockIdx.x) stamp(probe, 2);
    float qv[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) qv[t] = qs[sub * 8 + t];
    float m = -INFINITY, l = 0.f, o[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) o[t] = 0.f;
    const T* kb = kc + (size_t)bh * C * HD + sub * 8;
    const T* vb = vc + (size_t)bh * C * HD + sub * 8;
    const int j0 = split * CHUNK;
    const int j1 = min(LEN, j0 + CHUNK);
    for (int jb = j0 + warp * SPW; jb < j1; jb += NW * SPW * U) {
      float kv[U][8], vv[U][8];
      bool ok[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = jb + u * NW * SPW + grp;
        ok[u] = j < j1 && ring_slot_visible<C, CTX>(j, p, st);
        if (ok[u] && j != cur) {
          load8s(kb + (size_t)j * HD, kv[u]);  // streamed, as the weights: read once a frame
          load8s(vb + (size_t)j * HD, vv[u]);
        } else {
#pragma unroll
          for (int t = 0; t < 8; ++t) { kv[u][t] = kn[sub * 8 + t]; vv[u][t] = vn[sub * 8 + t]; }
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float s = 0.f;
#pragma unroll
        for (int t = 0; t < 8; ++t) s = fmaf(qv[t], kv[u][t], s);
#pragma unroll
        for (int off = LPS / 2; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (ok[u]) {
          const float M = fmaxf(m, s);
          const float a = exp2f(m - M), e = exp2f(s - M);
          l = l * a + e;
#pragma unroll
          for (int t = 0; t < 8; ++t) o[t] = fmaf(e, vv[u][t], o[t] * a);
          m = M;
        }
      }
    }
    if (probe && item == blockIdx.x) stamp(probe, 3);
    // the warp's slot groups, then the block's warps
    merge_slot_groups<LPS>(m, l, o);
    merge_block_warps<NW, HD, LPS, NT>(m, l, o, rm, rl, ro, PO + (size_t)item * HD, PM + item, PL + item, probe && item == blockIdx.x ? probe : nullptr);
    if (probe && item == blockIdx.x) stamp(probe, 5);
  }
}

template <int B, int D, int H, int HD, int NSPLIT, int NT, bool SWZ>
__device__ inline void ring_combine_stage(const float* PM, const float* PL, const float* PO, float* xs, float* cw) {
  // every block: the attention output [B, D] from the splits' partial states, into shared memory;
  // cw [B * H * NSPLIT] (shared) first takes each split's weight 2^(m_s - M) / L
  __syncthreads();
  for (int i = threadIdx.x; i < B * H; i += NT) {
    float m[NSPLIT], l[NSPLIT];
    float M = -INFINITY;
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) {
      m[s] = __ldcg(PM + i * NSPLIT + s);
      l[s] = __ldcg(PL + i * NSPLIT + s);
    }
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) M = fmaxf(M, m[s]);
    float L = 0.f;
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) L += m[s] == -INFINITY ? 0.f : exp2f(m[s] - M) * l[s];
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) cw[i * NSPLIT + s] = m[s] == -INFINITY ? 0.f : exp2f(m[s] - M) / L;
  }
  __syncthreads();
  constexpr int N4 = B * D / 4;
  constexpr int UB = 4;
  const float4* po = reinterpret_cast<const float4*>(PO);
  float4* x4 = reinterpret_cast<float4*>(xs);
  for (int i0 = threadIdx.x; i0 < N4; i0 += NT * UB) {
    float4 acc[UB];
#pragma unroll
    for (int u = 0; u < UB; ++u) acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int s = 0; s < NSPLIT; ++s) {
#pragma unroll
      for (int u = 0; u < UB; ++u) {
        const int i = i0 + u * NT;  // float4 index: row b, dims c .. c + 3 of head c / HD
        if (i < N4) {
          const int bh = (i * 4) / HD;  // = b * H + h (rows of D = H * HD)
          const float w = cw[bh * NSPLIT + s];
          const float4 v = __ldcg(po + ((size_t)(bh * NSPLIT + s) * HD + (i * 4) % HD) / 4);
          acc[u].x = fmaf(w, v.x, acc[u].x);
          acc[u].y = fmaf(w, v.y, acc[u].y);
          acc[u].z = fmaf(w, v.z, acc[u].z);
          acc[u].w = fmaf(w, v.w, acc[u].w);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      if (i0 + u * NT < N4) x4[SWZ ? swz4(i0 + u * NT) : i0 + u * NT] = acc[u];
    }
  }
  __syncthreads();
}
