// linformer._core: the C++ engine's public API for Python (docs/python.md). Each part binds itself
// (python/src/<part>.cpp); python/linformer/__init__.py re-exports them with the pure-Python parts.
#include "bindings.h"

NB_MODULE(_core, m) {
  m.doc() = "The linformer C++ engine (models, inference, training) for Python; import it as `linformer`.";
  lf::py::bind_errors(m);
  lf::py::bind_model(m);
  lf::py::bind_trainer(m);
}
