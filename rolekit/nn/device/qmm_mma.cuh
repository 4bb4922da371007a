// Tensor-core helpers of `nn.qmm`: bf16 pairs and one m16n8k16 product (sm_80 and later).

__device__ inline uint32_t pack_bf16x2(float lo, float hi) {
  // lo in the low half: the element of the lower k index
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ inline void mma_bf16_m16n8k16(
    float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  // d [16 x 8] += a [16 x 16] (row) * b [16 x 8] (col), fp32 accumulators, in place
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
