
    // sampling: every block draws every row's token (same logits and noise -> same token)
    for (int b = 0; b < B; ++b) {
      const float* lg = LG + ((size_t)b * NS + s) * CARD;
      const float t = temp_s[b];
      const bool hot = !GREEDY && t > 0.f;
      int kk = topk_s[b];
      if (kk <= 0 || kk > CARD) kk = CARD;
      for (int i = threadIdx.x; i < CARD; i += NT) {
        const float v = __ldcg(lg + i);
        sv[i] = hot ? v / t : v;
      }
      __syncthreads();
      float thr = -INFINITY;
      if (hot && kk < CARD) thr = kth_largest<CARD, NT>(sv, (unsigned int)kk, hist, info);
      float best = -INFINITY;
      int bi = 0x7fffffff;
      for (int i = threadIdx.x; i < CARD; i += NT) {
        float v = sv[i];
        if (hot) v = v >= thr ? v + noise[((size_t)b * NS + s) * CARD + i] : -INFINITY;
        if (v > best || (v == best && i < bi)) { best = v; bi = i; }
      }
      int drawn = block_argmax<NT>(best, bi, rv, ri);
      if (drawn >= CARD) drawn = 0;
      const int g = given[b * NS + s];
      if (threadIdx.x == 0) {
        cur[b] = g >= 0 ? g : drawn;
        if (blockIdx.x == 0) tokens[b * NS + s] = cur[b];
      }
      __syncthreads();
    }
