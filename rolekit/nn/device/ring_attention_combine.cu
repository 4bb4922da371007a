
  const float NEG = __int_as_float(static_cast<int>(0xff800000u));  // -infinity
  const int bh = blockIdx.x;
  const int t = threadIdx.x;
  const float* mr = pm + (size_t)bh * NSPLIT;
  const float* lr = pl + (size_t)bh * NSPLIT;
  const float* orow = po + (size_t)bh * NSPLIT * HD + t;
  float mm = NEG;
  for (int s = 0; s < NSPLIT; ++s) mm = fmaxf(mm, mr[s]);
  float den = 0.f, num = 0.f;
  if (mm != NEG) {
    for (int s = 0; s < NSPLIT; ++s) {
      const float ms = mr[s];
      if (ms != NEG) {
        const float c = exp2f(ms - mm);
        den = fmaf(c, lr[s], den);
        num = fmaf(c, orow[(size_t)s * HD], num);
      }
    }
  }
  out[(size_t)bh * HD + t] = static_cast<T>(den > 0.f ? num / den : 0.f);
