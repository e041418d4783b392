// The argument conventions of the ops (src/ops/*.h). Inputs are views of const elements declared
// through In<T>, which takes part in no template deduction: T comes from an op's output view, and a
// view of mutable elements converts to an input as T* does to const T*. An optional operand (a bias,
// a gradient to skip) is an empty view, `{}`; an op whose outputs may all be empty (linear_backward)
// takes T explicitly: `ops::linear_backward<T>(...)`.
#pragma once
#include <type_traits>

#include "linformer/tensor.h"

namespace lf::ops {

template <class T>
using In = std::type_identity_t<TensorView<const T>>;
template <class T>
using Out = std::type_identity_t<TensorView<T>>;

}  // namespace lf::ops
