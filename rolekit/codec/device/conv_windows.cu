
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  constexpr int L = P + TN;
  constexpr size_t NCOLS = (size_t)B * TO * K * C;
  constexpr size_t NCARRY = (size_t)B * P * C;
  size_t b, pos, c;
  if (i < NCOLS) {
    c = i % C;
    const size_t j = (i / C) % K;
    const size_t t = (i / ((size_t)C * K)) % TO;
    b = i / ((size_t)C * K * TO);
    pos = t * S + j * DIL;
  } else if (i < NCOLS + NCARRY) {
    const size_t r = i - NCOLS;
    c = r % C;
    b = r / ((size_t)C * P);
    pos = L - P + (r / C) % P;
  } else {
    return;
  }
  float v;
  if (pos < P) {
    v = static_cast<float>(prev[(b * P + pos) * C + c]);
  } else {
    v = static_cast<float>(x[(b * TN + pos - P) * C + c]);
    if constexpr (ELU) v = v > 0.f ? v : expm1f(v);
  }
  if (i < NCOLS) cols[i] = static_cast<T>(v);
  else carry[i - NCOLS] = static_cast<T>(v);
