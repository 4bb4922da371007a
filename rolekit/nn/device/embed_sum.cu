// Kernel body of `nn.embed_cuda`: out [B, TT, D] = the sum over streams, in ORDER, of one lookup
// each (tokens [B, S, TT]; token -1 a zero vector, other negatives clamped to 0), each addition
// rounded to T as MLX's element-wise add. One thread a (row, time, 8 values). Template constants T,
// B, TT; `nn.embed_cuda._source` writes S, D, ORDER [S] and `tables` [S] (the t<s> inputs) first.
  constexpr int D8 = D / 8;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * TT * D8) return;
  const int c = i % D8, bt = i / D8, b = bt / TT, t = bt % TT;
  float acc[8], e[8];
#pragma unroll
  for (int n = 0; n < S; ++n) {
    const int s = ORDER[n];
    const int tok = tokens[(b * S + s) * TT + t];
    if (tok == -1) {
      for (int j = 0; j < 8; ++j) e[j] = 0.f;
    } else {
      load8(tables[s] + (size_t)(tok > 0 ? tok : 0) * D + c * 8, e);
    }
    if (n == 0) {
      for (int j = 0; j < 8; ++j) acc[j] = e[j];
    } else {
      for (int j = 0; j < 8; ++j) acc[j] = static_cast<float>(static_cast<T>(acc[j] + e[j]));
    }
  }
  T* o = out + (size_t)bt * D + c * 8;
  for (int j = 0; j < 8; ++j) o[j] = static_cast<T>(acc[j]);
