// Kernel body of `engine.ring_cuda.ring_in`: the input side of a step on the token ring, one thread
// a (row b, stream s). Ring cache [B, NS, CT] int32 and provided [B, NS, CT] bool; cols [CB, PACKED,
// CT] bool the call's one-hot columns (`engine.ring.pack`: write, init, prev, now, out; CB = B, or 1
// for all rows); user [B, NU] int32 the user's codes (streams USER0..). As `engine.ring`: provide
// (the user's code at `write`, the initial token at `init`, both marked provided), then read the
// model's input at `prev` and the target and its provided flag at `now` (a column: the sum of the
// masked values). Template constants B, CB, CT, NS, PACKED, USER0, NU, DQ.
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * NS) return;
  const int b = i / NS, s = i - (i / NS) * NS;
  const bool* col = cols + (size_t)(CB == 1 ? 0 : b) * PACKED * CT;
  const bool* write = col + (size_t)s * CT;
  const bool* init = col + (size_t)(NS + s) * CT;
  const bool* prev = col + (size_t)(2 * NS + s) * CT;
  const bool* now = col + (size_t)(3 * NS + s) * CT;
  const int tok = s >= USER0 ? user[b * NU + (s - USER0)] : 0;
  const size_t row = ((size_t)b * NS + s) * CT;
  int input = 0, target = 0;
  bool given = false;
  for (int c = 0; c < CT; ++c) {
    int v = cache[row + c];
    bool p = provided[row + c];
    if (write[c]) v = tok;
    if (init[c]) v = initial[s];
    p = p || write[c] || init[c];
    cache_out[row + c] = v;
    provided_out[row + c] = p;
    if (prev[c]) input += v;
    if (now[c]) {
      target += v;
      given = given || p;
    }
  }
  tokens[i] = input;
  if (s == 0) {
    text_target[b] = target;
    text_given[b] = given;
  } else if (s <= DQ) {
    dep_given[b * DQ + (s - 1)] = given ? target : -1;
  }
