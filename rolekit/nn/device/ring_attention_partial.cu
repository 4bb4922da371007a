
  constexpr int LPS = HD / 8;          // lanes per slot, 8 values each
  constexpr int SPW = 32 / LPS;        // slots a warp reads per pass
  constexpr int SW = CHUNK / NW;       // slots per warp
  constexpr int PASSES = SW / SPW;
  static_assert(HD % 64 == 0 && HD <= 256, "head dim");
  static_assert(SW % (SPW * U) == 0, "chunk");
  const float NEG = __int_as_float(static_cast<int>(0xff800000u));  // -infinity
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int grp = lane / LPS;          // slot within a pass
  const int sub = lane % LPS;          // dims sub * 8 .. sub * 8 + 7
  const int bh = blockIdx.x / NSPLIT;  // b * NH + h
  const int split = blockIdx.x % NSPLIT;
  const int b = bh / NH;
  const int p = pos[0];
  const int st = start[b];
  float qv[8];
  load8(q + (size_t)bh * HD + sub * 8, qv);
#pragma unroll
  for (int t = 0; t < 8; ++t) qv[t] *= QSCALE;
  const size_t base = (size_t)bh * CAP * HD + (size_t)(sub * 8);
  float m = NEG, l = 0.f;
  float acc[8];
#pragma unroll
  for (int t = 0; t < 8; ++t) acc[t] = 0.f;
  const int j0 = split * CHUNK + warp * SW + grp;
  for (int ps = 0; ps < PASSES; ps += U) {
    float kv[U][8];
    float vv[U][8];
    bool vis[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = j0 + (ps + u) * SPW;
      vis[u] = j < LEN && ring_slot_visible<CAP, CTX>(j, p, st);
      if (vis[u]) {
        load8(kb + base + (size_t)j * HD, kv[u]);
        load8(vb + base + (size_t)j * HD, vv[u]);
      }
    }
    float sc[U];
    float mnew = m;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float d = 0.f;
      if (vis[u]) {
#pragma unroll
        for (int t = 0; t < 8; ++t) d = fmaf(qv[t], kv[u][t], d);
      }
#pragma unroll
      for (int o = LPS / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      sc[u] = vis[u] ? d : NEG;
      mnew = fmaxf(mnew, sc[u]);
    }
    if (mnew != NEG) {  // the same in all lanes of a group
      const float corr = exp2f(m - mnew);  // 0 while m is -inf
      l *= corr;
#pragma unroll
      for (int t = 0; t < 8; ++t) acc[t] *= corr;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (vis[u]) {
          const float e = exp2f(sc[u] - mnew);
          l += e;
#pragma unroll
          for (int t = 0; t < 8; ++t) acc[t] = fmaf(e, vv[u][t], acc[t]);
        }
      }
      m = mnew;
    }
  }
  merge_slot_groups<LPS>(m, l, acc);  // the lane groups of a warp (lanes with the same `sub`)
  __shared__ float sm_m[NW];
  __shared__ float sm_l[NW];
  __shared__ float sm_a[NW * HD];
  const size_t part = (size_t)bh * NSPLIT + split;
  merge_block_warps<NW, HD, LPS, NW * 32>(m, l, acc, sm_m, sm_l, sm_a, po + part * HD, pm + part, pl + part, nullptr);
