#include "ops/attention_decode.h"

#include <cmath>

#include "cpu/attention_decode.h"
#include "ops/dispatch.h"

namespace lf::ops {

template <class T>
void attention_decode(In<T> q, In<T> k, In<T> v, int64_t heads, double scale, Out<T> o, int64_t chunks) {
  constexpr const char* op = "attention_decode";
  LF_REQUIRE(q.rank() == 3 && q.contiguous(), op, ": `q` ", q.shape_string(), " must be contiguous (B, n, h·d_h)");
  DecodeShape s;
  s.B = q.size(0);
  s.n = q.size(1);
  s.h = heads;
  LF_REQUIRE(heads > 0 && q.size(2) % heads == 0 && q.size(2) > 0, op, ": ", heads,
             " heads must divide q's positive width ", q.size(2));
  s.d_h = q.size(2) / heads;
  LF_REQUIRE(s.B > 0 && s.n > 0, op, ": needs at least one sequence and one query, got `q` ", q.shape_string());
  require_shape(op, "o", o, {s.B, s.n, q.size(2)});
  LF_REQUIRE(k.rank() == 3 && k.size(0) == s.B && k.size(2) > 0 && k.size(2) % s.d_h == 0 &&
                 heads % (k.size(2) / s.d_h) == 0,
             op, ": `k` ", k.shape_string(), " must be (", s.B, ", rows, hk·", s.d_h, ") with hk dividing the ", heads,
             " heads");
  s.hk = k.size(2) / s.d_h;
  s.rows = k.size(1);
  LF_REQUIRE(v.rank() == 3 && v.size(0) == s.B && v.size(1) == s.rows && v.size(2) == k.size(2) &&
                 v.stride(0) == k.stride(0),
             op, ": `v` ", v.shape_string(), " must have k's shape ", k.shape_string(), " and sequence stride");
  for (const auto* kv : {&k, &v})
    LF_REQUIRE(kv->stride(2) == 1 && kv->stride(1) == kv->size(2) && kv->stride(0) >= s.rows * kv->size(2), op,
               ": the keys and values must be contiguous rows within each sequence");
  LF_REQUIRE(s.rows >= s.n, op, ": ", s.rows, " cached rows must hold the ", s.n, " new queries' own keys");
  LF_REQUIRE(std::isfinite(scale), op, ": the scale must be finite, got ", scale);
  LF_REQUIRE(chunks >= 0, op, ": the chunk count must be >= 0 (0: automatic), got ", chunks);
  s.kv_stride = k.stride(0);
  s.scale = scale;
  s.chunks = chunks;
  LF_DISPATCH(op, device_of(op, q, k, v, o), return lf::attention_decode<T>(s, q.data(), k.data(), v.data(), o.data()));
}

#define LF_INSTANTIATE(T) \
  template void attention_decode<T>(In<T>, In<T>, In<T>, int64_t, double, Out<T>, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops
