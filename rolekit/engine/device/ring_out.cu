// Kernel body of `engine.ring_cuda.ring_out`: the commit side of a step on the token ring, one thread
// a (row b, stream s). Ring cache / provided [B, NS, CT] (after `ring_in`), cols [CB, PACKED, CT]
// as there, text [B] the sampled text, audio [B, NA] the depformer's codes. As `engine.ring.commit`
// then `output`: `provided` loses the `prev` column; at `now` the stream keeps its target where
// provided, else takes the sample (text, audio, and the target itself past NA); out [B, NO] reads
// streams < NO at `out`. Template constants B, CB, CT, NS, PACKED, NA, NO.
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * NS) return;
  const int b = i / NS, s = i - (i / NS) * NS;
  const bool* col = cols + (size_t)(CB == 1 ? 0 : b) * PACKED * CT;
  const bool* prev = col + (size_t)(2 * NS + s) * CT;
  const bool* now = col + (size_t)(3 * NS + s) * CT;
  const bool* at_out = col + (size_t)(4 * NS + (s < NO ? s : 0)) * CT;
  const size_t row = ((size_t)b * NS + s) * CT;
  int target = 0;
  bool given = false;
  for (int c = 0; c < CT; ++c) {
    if (now[c]) {
      target += cache[row + c];
      given = given || (provided[row + c] && !prev[c]);
    }
  }
  const int sampled = s == 0 ? text[b] : (s <= NA ? audio[b * NA + (s - 1)] : target);
  const int next = given ? target : sampled;
  int read = 0;
  for (int c = 0; c < CT; ++c) {
    const int v = now[c] ? next : cache[row + c];
    cache_out[row + c] = v;
    provided_out[row + c] = provided[row + c] && !prev[c];
    if (at_out[c]) read += v;
  }
  if (s < NO) out[b * NO + s] = read;
