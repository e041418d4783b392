#include "ops/sequence.h"

#include "cpu/conv1d.h"
#include "cpu/cross_entropy.h"
#include "cpu/embedding.h"
#include "cpu/sequence_pool.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// x (B, n, d) and w (d, K) of a depthwise convolution.
template <class X, class W>
void require_conv(const char* op, const X& x, const W& w) {
  require_contiguous(op, "x", x);
  require_contiguous(op, "w", w);
  // w: (d, K), or PyTorch's depthwise Conv1d weight (d, 1, K).
  LF_REQUIRE(x.rank() == 3 && w.size(0) == x.size(2) && w.numel() == w.size(0) * w.size(-1), op, ": x ",
             x.shape_string(), " (B, n, d) and w ", w.shape_string(), " (d, K) or (d, 1, K)");
}

// logits (N, V) and targets (N).
template <class L, class I>
void require_logits(const char* op, const L& logits, const I& targets) {
  require_contiguous(op, "logits", logits);
  require_contiguous(op, "targets", targets);
  LF_REQUIRE(targets.numel() == logits.rows(), op, ": ", targets.numel(), " targets for ", logits.rows(), " rows");
}

}  // namespace

template <class T>
void embedding_forward(TensorView<const int32_t> ids, In<T> table, TensorView<T> out, bool accumulate) {
  const char* op = "embedding_forward";
  require_contiguous(op, "ids", ids);
  require_contiguous(op, "out", out);
  LF_REQUIRE(table.rank() == 2 && table.contiguous() && out.cols() == table.size(1) && out.rows() == ids.numel(), op,
             ": ids ", ids.shape_string(), ", table ", table.shape_string(), ", out ", out.shape_string());
  LF_DISPATCH(op, device_of(op, ids, table, out),
              return lf::embedding_forward<T>(ids.data(), table.data(), out.data(), ids.numel(), table.size(0),
                                              table.size(1), accumulate));
}

template <class T>
void embedding_backward(TensorView<const int32_t> ids, In<T> dout, TensorView<T> dtable) {
  const char* op = "embedding_backward";
  require_contiguous(op, "ids", ids);
  require_contiguous(op, "dout", dout);
  LF_REQUIRE(dtable.rank() == 2 && dtable.contiguous() && dout.cols() == dtable.size(1) && dout.rows() == ids.numel(),
             op, ": ids ", ids.shape_string(), ", dout ", dout.shape_string(), ", dtable ", dtable.shape_string());
  LF_DISPATCH(op, device_of(op, ids, dout, dtable),
              return lf::embedding_backward<T>(ids.data(), dout.data(), dtable.data(), ids.numel(), dtable.size(0),
                                               dtable.size(1)));
}

template <class T>
void sinusoidal_positions_add(TensorView<T> out, int64_t offset) {
  const char* op = "sinusoidal_positions_add";
  require_contiguous(op, "out", out);
  LF_REQUIRE(out.rank() == 3, op, ": out must be (B, n, d), not ", out.shape_string());
  LF_DISPATCH(op, out.device(), return lf::sinusoidal_positions_add<T>(out.data(), out.size(0), out.size(1), out.size(2), offset));
}

template <class T>
void depthwise_conv1d_forward(In<T> x, In<T> w, In<T> bias, TensorView<T> y, bool causal) {
  const char* op = "depthwise_conv1d_forward";
  require_conv(op, x, w);
  require_same_matrix(op, x, y);
  require_contiguous(op, "y", y);
  require_vector_or_empty(op, "bias", bias, w.size(0));
  LF_DISPATCH(op, device_of(op, x, w, bias, y),
              return lf::depthwise_conv1d_forward<T>(x.data(), w.data(), bias.data(), y.data(), x.size(0), x.size(1),
                                                     x.size(2), w.size(-1), causal));
}

template <class T>
void depthwise_conv1d_backward(In<T> x, In<T> w, In<T> dy, TensorView<T> dx, Out<T> dw, Out<T> dbias, bool causal) {
  const char* op = "depthwise_conv1d_backward";
  require_conv(op, x, w);
  require_same_matrix(op, x, dy);
  require_same_matrix(op, x, dx);
  require_contiguous(op, "dy", dy);
  require_contiguous(op, "dx", dx);
  require_vector_or_empty(op, "dw", dw, w.numel());
  require_vector_or_empty(op, "dbias", dbias, w.size(0));
  LF_DISPATCH(op, device_of(op, x, w, dy, dx, dw, dbias),
              return lf::depthwise_conv1d_backward<T>(x.data(), w.data(), dy.data(), dx.data(), dw.data(), dbias.data(),
                                                      x.size(0), x.size(1), x.size(2), w.size(-1), causal));
}

// h (B, n, d) and pooled (B, d) (or their gradients), both contiguous, and the optional padding (B·n).
template <class H, class P>
void require_pooling(const char* op, const H& h, const P& pooled, TensorView<const uint8_t> padding) {
  require_contiguous(op, "(B, n, d)", h);
  require_contiguous(op, "(B, d)", pooled);
  LF_REQUIRE(h.rank() == 3 && pooled.rank() == 2 && pooled.size(0) == h.size(0) && pooled.size(1) == h.size(2), op,
             ": shapes ", h.shape_string(), " (B, n, d) and ", pooled.shape_string(), " (B, d)");
  require_vector_or_empty(op, "padding", padding, h.size(0) * h.size(1));
}

template <class T>
void sequence_pool_forward(In<T> h, TensorView<const uint8_t> padding, SequencePooling pooling, TensorView<T> pooled) {
  const char* op = "sequence_pool_forward";
  require_pooling(op, h, pooled, padding);
  LF_DISPATCH(op, device_of(op, h, padding, pooled),
              return lf::sequence_pool_forward<T>(h.data(), padding.data(), h.size(0), h.size(1), h.size(2),
                                                  pooling == SequencePooling::kFirst, pooled.data()));
}

template <class T>
void sequence_pool_backward(In<T> dpooled, TensorView<const uint8_t> padding, SequencePooling pooling,
                            TensorView<T> dh) {
  const char* op = "sequence_pool_backward";
  require_pooling(op, dh, dpooled, padding);
  LF_DISPATCH(op, device_of(op, dpooled, padding, dh),
              return lf::sequence_pool_backward<T>(dpooled.data(), padding.data(), dh.size(0), dh.size(1), dh.size(2),
                                                   pooling == SequencePooling::kFirst, dh.data()));
}

template <class T>
CrossEntropyResult cross_entropy_forward(In<T> logits, TensorView<const int32_t> targets, int32_t ignore_index) {
  const char* op = "cross_entropy_forward";
  require_logits(op, logits, targets);
  LF_DISPATCH(op, device_of(op, logits, targets),
              return lf::cross_entropy_forward<T>(logits.data(), targets.data(), logits.rows(), logits.cols(),
                                                  ignore_index));
}

template <class T>
void cross_entropy_backward(In<T> logits, TensorView<const int32_t> targets, TensorView<T> dlogits, double grad,
                            int32_t ignore_index) {
  const char* op = "cross_entropy_backward";
  require_logits(op, logits, targets);
  require_same_matrix(op, logits, dlogits);
  require_contiguous(op, "dlogits", dlogits);
  LF_DISPATCH(op, device_of(op, logits, targets, dlogits),
              return lf::cross_entropy_backward<T>(logits.data(), targets.data(), dlogits.data(), logits.rows(),
                                                   logits.cols(), grad, ignore_index));
}

#define LF_INSTANTIATE(T)                                                                                     \
  template void embedding_forward<T>(TensorView<const int32_t>, In<T>, TensorView<T>, bool);                  \
  template void embedding_backward<T>(TensorView<const int32_t>, In<T>, TensorView<T>);                       \
  template void sinusoidal_positions_add<T>(TensorView<T>, int64_t);                                                   \
  template void depthwise_conv1d_forward<T>(In<T>, In<T>, In<T>, TensorView<T>, bool);                        \
  template void depthwise_conv1d_backward<T>(In<T>, In<T>, In<T>, TensorView<T>, Out<T>, Out<T>, bool);       \
  template void sequence_pool_forward<T>(In<T>, TensorView<const uint8_t>, SequencePooling, TensorView<T>);   \
  template void sequence_pool_backward<T>(In<T>, TensorView<const uint8_t>, SequencePooling, TensorView<T>);  \
  template CrossEntropyResult cross_entropy_forward<T>(In<T>, TensorView<const int32_t>, int32_t);            \
  template void cross_entropy_backward<T>(In<T>, TensorView<const int32_t>, TensorView<T>, double, int32_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops
