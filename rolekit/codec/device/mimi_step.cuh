__device__ inline float warp_sum1(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int MT, int RSMAX, bool COLS, bool STORE, typename XF, typename WF, typename OF>
__device__ inline void mm_staged(int M, int R, int N, XF xf, WF wf, OF of, float* xs) {
  // out[m, n] (+)= sum_r x(m, r) w(r, n). Block tasks = (MT rows, an r-slice, a group of columns):
  // the block first stages x of its rows and slice into shared memory (the reader's carry /
  // window / ELU / GELU / LayerNorm applied once per element), then its warps take the columns:
  // COLS (w [R, N]): a warp = 32 columns (a lane each) x a part of the slice, float4 reads of x;
  // rows (w [N, R]): a warp = one column, lanes over the slice, warp sum. STORE: one writer per
  // output (no slices). Splits and groups give the grid about two block tasks a block.
  constexpr int NT = 256, NW = NT / 32;
  constexpr int RSP = RSMAX + 4;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nb = gridDim.x;
  const int mt = (M + MT - 1) / MT;
  int splits = (R + RSMAX - 1) / RSMAX;
  if (!STORE) {
    int want = (2 * nb + mt - 1) / mt;
    const int cap = R / 64 > 1 ? R / 64 : 1;
    if (want > cap) want = cap;
    if (want > splits) splits = want;
  }
  const int units = COLS ? (N + 31) / 32 : N;
  int groups = (nb + mt * splits - 1) / (mt * splits);
  if (groups > units) groups = units;
  if (groups < 1) groups = 1;
  const int total = mt * splits * groups;
  for (int bt = blockIdx.x; bt < total; bt += nb) {
    const int g = bt % groups;
    const int rest = bt / groups;
    const int sp = rest % splits;
    const int m0 = (rest / splits) * MT;
    const int r0 = (int)((long long)R * sp / splits);
    const int r1 = (int)((long long)R * (sp + 1) / splits);
    const int rs = r1 - r0;
    const int rs4 = (rs + 3) & ~3;
    const int u0 = (int)((long long)units * g / groups), u1 = (int)((long long)units * (g + 1) / groups);
    __syncthreads();
    for (int e = threadIdx.x; e < MT * rs4; e += NT) {
      const int i = e / rs4, rr = e - i * rs4;
      xs[i * RSP + rr] = (m0 + i < M && rr < rs) ? xf(m0 + i, r0 + rr) : 0.f;
    }
    __syncthreads();
    if constexpr (COLS) {
      const int tiles = u1 - u0;
      int parts = STORE ? 1 : NW / (tiles > 0 ? tiles : 1);
      if (parts < 1) parts = 1;
      for (int wt = warp; wt < tiles * parts; wt += NW) {
        const int n = (u0 + wt % tiles) * 32 + lane;
        const int part = wt / tiles;
        const int q0 = ((rs4 / 4) * part / parts) * 4, q1 = ((rs4 / 4) * (part + 1) / parts) * 4;
        const int nn = n < N ? n : N - 1;
        float acc[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = 0.f;
#pragma unroll 4
        for (int q = q0; q < q1; q += 4) {
          float w[4];
#pragma unroll
          for (int u = 0; u < 4; ++u) w[u] = q + u < rs ? wf(r0 + q + u, nn) : 0.f;
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            const float4 xv = *reinterpret_cast<const float4*>(xs + i * RSP + q);
            acc[i] = fmaf(xv.x, w[0], fmaf(xv.y, w[1], fmaf(xv.z, w[2], fmaf(xv.w, w[3], acc[i]))));
          }
        }
        if (n < N) {
#pragma unroll
          for (int i = 0; i < MT; ++i)
            if (m0 + i < M) of(m0 + i, n, acc[i], sp + part);
        }
      }
    } else {
      constexpr int CN = 4;  // columns a warp computes together (their loads in flight at once)
      for (int n0 = u0 + warp * CN; n0 < u1; n0 += NW * CN) {
        float acc[CN][MT];
#pragma unroll
        for (int c = 0; c < CN; ++c)
#pragma unroll
          for (int i = 0; i < MT; ++i) acc[c][i] = 0.f;
#pragma unroll 2
        for (int q = lane; q < rs; q += 32) {
          float w[CN];
#pragma unroll
          for (int c = 0; c < CN; ++c) w[c] = n0 + c < u1 ? wf(r0 + q, n0 + c) : 0.f;
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            const float xv = xs[i * RSP + q];
#pragma unroll
            for (int c = 0; c < CN; ++c) acc[c][i] = fmaf(xv, w[c], acc[c][i]);
          }
        }
#pragma unroll
        for (int c = 0; c < CN; ++c)
#pragma unroll
          for (int i = 0; i < MT; ++i) acc[c][i] = warp_sum1(acc[c][i]);
        if (lane == 0) {
#pragma unroll
          for (int c = 0; c < CN; ++c)
#pragma unroll
            for (int i = 0; i < MT; ++i)
              if (m0 + i < M && n0 + c < u1) of(m0 + i, n0 + c, acc[c][i], sp);
        }
      }
    }
  }
}

template <int B, int H, int T, int NC, int HD, int NT>
__device__ inline void shift_caches(const float* kin, const float* vin, float* kout, float* vout) {
  // the slots that stay, moved T places toward the front (every block, float4 copies)
  constexpr int KEEP4 = (NC - T) * HD / 4;
  const float4* ki = reinterpret_cast<const float4*>(kin);
  const float4* vi = reinterpret_cast<const float4*>(vin);
  float4* ko = reinterpret_cast<float4*>(kout);
  float4* vo = reinterpret_cast<float4*>(vout);
  for (int i = blockIdx.x * NT + threadIdx.x; i < B * H * KEEP4; i += gridDim.x * NT) {
    const int bh = i / KEEP4, e = i - bh * KEEP4;
    const size_t src = (size_t)bh * (NC * HD / 4) + T * HD / 4 + e;
    const size_t dst = (size_t)bh * (NC * HD / 4) + e;
    const float4 kv = ki[src], vv = vi[src];
    ko[dst] = kv;
    vo[dst] = vv;
  }
}

template <int B, int T, int H, int HD, int NC, int NT>
__device__ inline void window_attention_stage(const float* qkv, const float* kin, const float* vin, float* kout,
                                              float* vout, float* dst, int offset, float lfreq, float scale) {
  // Mimi's streaming attention: T new positions over a window of NC cached slots (fp32), the
  // caches shifted, not a ring. One block per (batch row, head): RoPE on the new q, k (written to the new cache's last T
  // slots; `shift_caches` moved the others in the stage before); query t sees slots
  // lo .. NC - T + t (lo skips slots of negative positions). Old slot j is kin's slot j + T.
  // Warps take keys in turn, lanes the head dims; partial outputs meet in shared memory.
  constexpr int D = H * HD;
  constexpr int NW = NT / 32;
  constexpr int PL = (HD + 31) / 32;  // dims a lane (lane + 32 p < HD)
  __shared__ __align__(16) float qs[T][HD];
  __shared__ __align__(16) float ks[T][HD];
  __shared__ float vs[T][HD];
  __shared__ float sc[T][NC];
  __shared__ float part[NW][T][HD];
  __shared__ float wmax[NW][T], wsum[NW][T];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int lo = NC - offset - T > 0 ? NC - offset - T : 0;
  for (int task = blockIdx.x; task < B * H; task += gridDim.x) {
    const int b = task / H, h = task % H;
    __syncthreads();
    for (int i = threadIdx.x; i < T * (HD / 2); i += NT) {
      const int t = i / (HD / 2), pr = i % (HD / 2);
      const float* row = qkv + ((size_t)b * T + t) * 3 * D + h * HD + 2 * pr;
      const float freq = expf(static_cast<float>(pr) * lfreq);
      const float ang = static_cast<float>(offset + t) * freq;
      const float c = cosf(ang), s = sinf(ang);
      const float qr = __ldcg(row), qi = __ldcg(row + 1);
      const float kr = __ldcg(row + D), ki = __ldcg(row + D + 1);
      const float v0 = __ldcg(row + 2 * D), v1 = __ldcg(row + 2 * D + 1);
      qs[t][2 * pr] = qr * c - qi * s;
      qs[t][2 * pr + 1] = qr * s + qi * c;
      ks[t][2 * pr] = kr * c - ki * s;
      ks[t][2 * pr + 1] = kr * s + ki * c;
      vs[t][2 * pr] = v0;
      vs[t][2 * pr + 1] = v1;
    }
    __syncthreads();
    const size_t base = ((size_t)b * H + h) * NC * HD;
    for (int i = threadIdx.x; i < T * HD; i += NT) {
      const int t = i / HD, d = i % HD;
      kout[base + (size_t)(NC - T + t) * HD + d] = ks[t][d];
      vout[base + (size_t)(NC - T + t) * HD + d] = vs[t][d];
    }
    // scores: warp w takes keys lo + 32 w .. (a lane each: the key row's loads all in flight)
    float m[T];
#pragma unroll
    for (int t = 0; t < T; ++t) m[t] = -INFINITY;
    for (int j0 = lo + warp * 32; j0 <= NC - 1; j0 += NW * 32) {
      const int j = j0 + lane;
      const bool valid = j <= NC - 1;
      const float* kr = !valid ? &ks[0][0] : (j < NC - T ? kin + base + (size_t)(j + T) * HD : &ks[j - (NC - T)][0]);
      float a[T];
#pragma unroll
      for (int t = 0; t < T; ++t) a[t] = 0.f;
      if constexpr (HD % 4 == 0) {
#pragma unroll
        for (int d = 0; d < HD; d += 4) {
          const float4 kv = *reinterpret_cast<const float4*>(kr + d);
#pragma unroll
          for (int t = 0; t < T; ++t)
            a[t] = fmaf(qs[t][d], kv.x, fmaf(qs[t][d + 1], kv.y, fmaf(qs[t][d + 2], kv.z, fmaf(qs[t][d + 3], kv.w, a[t]))));
        }
      } else {
#pragma unroll
        for (int d = 0; d < HD; ++d) {
          const float kv = kr[d];
#pragma unroll
          for (int t = 0; t < T; ++t) a[t] = fmaf(qs[t][d], kv, a[t]);
        }
      }
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const float sv = valid && j <= NC - T + t ? a[t] * scale : -INFINITY;
        if (valid) sc[t][j] = sv;
        m[t] = fmaxf(m[t], sv);
      }
    }
#pragma unroll
    for (int t = 0; t < T; ++t)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) m[t] = fmaxf(m[t], __shfl_xor_sync(0xffffffffu, m[t], o));
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < T; ++t) wmax[warp][t] = m[t];
    }
    __syncthreads();
    // softmax numerators and this warp's share of the output
    float o[T][PL];
    float l[T];
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float mm = -INFINITY;
      for (int w = 0; w < NW; ++w) mm = fmaxf(mm, wmax[w][t]);
      m[t] = mm;
      l[t] = 0.f;
#pragma unroll
      for (int p = 0; p < PL; ++p) o[t][p] = 0.f;
    }
    for (int j0 = lo + warp * 32; j0 <= NC - 1; j0 += NW * 32) {
      for (int jj = 0; jj < 32; jj += 8) {
        float vv[8][PL];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int j = j0 + jj + u;
#pragma unroll
          for (int p = 0; p < PL; ++p) {
            const int d = lane + 32 * p < HD ? lane + 32 * p : HD - 1;
            vv[u][p] = j > NC - 1 || lane + 32 * p >= HD ? 0.f : (j < NC - T ? vin[base + (size_t)(j + T) * HD + d] : vs[j - (NC - T)][d]);
          }
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int j = j0 + jj + u;
          if (j > NC - 1) break;
#pragma unroll
          for (int t = 0; t < T; ++t) {
            const float e = j <= NC - T + t ? expf(sc[t][j] - m[t]) : 0.f;
            l[t] += e;
#pragma unroll
            for (int p = 0; p < PL; ++p) o[t][p] = fmaf(e, vv[u][p], o[t][p]);
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < T; ++t) {
#pragma unroll
      for (int p = 0; p < PL; ++p)
        if (lane + 32 * p < HD) part[warp][t][lane + 32 * p] = o[t][p];
      if (lane == 0) wsum[warp][t] = l[t];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < T * HD; i += NT) {
      const int t = i / HD, d = i % HD;
      float acc = 0.f, sum = 0.f;
      for (int w = 0; w < NW; ++w) {
        acc += part[w][t][d];
        sum += wsum[w][t];
      }
      dst[((size_t)b * T + t) * D + h * HD + d] = acc / sum;
    }
  }
}

template <int C, int NT>
__device__ inline void ln_stats(const float* src, int rows_alloc, int to, int nrows, float eps, float* lnm, float* lnr) {
  // LayerNorm statistics (mean, 1 / sqrt(biased var + eps)) of nrows rows of C values, four
  // rows at a time, every thread of the block on every row (loads in flight together, two passes)
  constexpr int PER = (C + NT - 1) / NT;
  constexpr int NW = NT / 32;
  __shared__ float red[2][4][NW];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int i0 = 0; i0 < nrows; i0 += 4) {
    float v[4][PER];
    float mean[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int i = i0 + k;
      const int b = i / to, t = i - b * to;
      const float* xr = src + ((size_t)b * rows_alloc + t) * C;
      float sum = 0.f;
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const int c = threadIdx.x + e * NT;
        v[k][e] = (i < nrows && c < C) ? __ldcg(xr + c) : 0.f;
        sum += v[k][e];
      }
      sum = warp_sum1(sum);
      if (lane == 0) red[0][k][warp] = sum;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float sum = 0.f;
      for (int w = 0; w < NW; ++w) sum += red[0][k][w];
      mean[k] = sum / static_cast<float>(C);
      float q = 0.f;
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const float d = threadIdx.x + e * NT < C ? v[k][e] - mean[k] : 0.f;
        q = fmaf(d, d, q);
      }
      q = warp_sum1(q);
      if (lane == 0) red[1][k][warp] = q;
    }
    __syncthreads();
    if (threadIdx.x < 4 && i0 + threadIdx.x < nrows) {
      float q = 0.f;
      for (int w = 0; w < NW; ++w) q += red[1][threadIdx.x][w];
      const int k = threadIdx.x;  // (mean[] is in registers: select, do not index)
      lnm[i0 + k] = k == 0 ? mean[0] : k == 1 ? mean[1] : k == 2 ? mean[2] : mean[3];
      lnr[i0 + threadIdx.x] = rsqrtf(q / static_cast<float>(C) + eps);
    }
    __syncthreads();
  }
}
