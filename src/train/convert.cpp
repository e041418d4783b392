// `linformer convert`: the rules of docs/convert.md. convert_config builds and checks the target
// configuration; convert_weights fills the target arena parameter by parameter: Linformer's E/F
// (and conv kernels) through one canonical form, per layer and head, E_h and F_h; the position table
// and AFT's position biases by rows; everything else copied when its name and shape match.
#include "train/convert.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "linformer/attention.h"
#include "linformer/checkpoint.h"
#include "linformer/error.h"
#include "linformer/memory.h"
#include "linformer/model.h"
#include "linformer/trainer.h"

namespace lf {
namespace {

bool is_exact_kind(const std::string& kind) { return kind == "full" || kind == "flash"; }

const LayerAttention& layer_attention(const ModelConfig& c, int64_t i) {
  return c.attention.size() == 1 ? c.attention[0] : c.attention[size_t(i)];
}

json resolved_options(const ModelConfig& c, int64_t i) { return validate_attention(c.attention_spec(i)); }

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The layer index of "layers.{i}.…", or -1 for a model-level name.
int64_t layer_of(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return -1;
  return std::stoll(name.substr(7, name.find('.', 7) - 7));
}

// The overlapping leading block of two row-major tensors of the same rank: dst[i…] = src[i…] for
// every index below both shapes. The rest of dst is left as it is.
void copy_leading_block(const float* src, const std::vector<int64_t>& ss, float* dst, const std::vector<int64_t>& ds) {
  const size_t r = ss.size();
  if (r == 0) return;
  std::vector<int64_t> lim(r), sstride(r, 1), dstride(r, 1), idx(r, 0);
  for (size_t a = 0; a < r; ++a) lim[a] = std::min(ss[a], ds[a]);
  for (size_t a = r - 1; a > 0; --a) sstride[a - 1] = sstride[a] * ss[a], dstride[a - 1] = dstride[a] * ds[a];
  if (std::any_of(lim.begin(), lim.end(), [](int64_t v) { return v == 0; })) return;
  while (true) {  // over every index of the block but the last axis, which is one contiguous copy
    int64_t so = 0, dof = 0;
    for (size_t a = 0; a + 1 < r; ++a) so += idx[a] * sstride[a], dof += idx[a] * dstride[a];
    std::copy_n(src + so, lim[r - 1], dst + dof);
    size_t a = r - 1;
    while (a > 0) {
      --a;
      if (++idx[a] < lim[a]) break;
      idx[a] = 0;
      if (a == 0) return;
    }
    if (r == 1) return;
  }
}

// Rows [0, min) of a (rows, width) table kept; rows the target adds (t ≥ old) copy row t mod old
// ("tile") or keep their fresh initialisation ("init"). Returns the note.
std::string resize_rows(const float* src, int64_t old_rows, float* dst, int64_t new_rows, int64_t width,
                        const std::string& extend) {
  std::copy_n(src, std::min(old_rows, new_rows) * width, dst);
  if (new_rows <= old_rows) return str_cat("rows 0-", new_rows - 1, " of ", old_rows, " kept (exact)");
  if (extend == "tile")
    for (int64_t t = old_rows; t < new_rows; ++t) std::copy_n(src + (t % old_rows) * width, width, dst + t * width);
  return str_cat("rows 0-", old_rows - 1, " kept, rows ", old_rows, "-", new_rows - 1,
                 extend == "tile" ? " tiled (row t = old row t mod " + std::to_string(old_rows) + ")" : " freshly initialised");
}

// --- Linformer's E and F ---------------------------------------------------------------------------

// A linformer layer's projection geometry, from its resolved options.
struct ProjGeom {
  std::string projection, sharing;
  int64_t k = 0, L = 0, heads = 0;
  bool dense() const { return projection == "learned" || projection == "fixed"; }
  int64_t size() const { return dense() ? k * L : L / k; }  // one head's E: k × L, or a conv kernel of L/k
  // Parameter names: [0] E (or E = F), [1] F; "" where absent.
  std::pair<std::string, std::string> names(const std::string& prefix) const {
    if (projection == "mean") return {"", ""};
    const std::string sfx = dense() ? "" : "_kernel";
    if (sharing == "layerwise") return {"shared_proj" + sfx, ""};
    if (sharing == "kv") return {prefix + "proj_k" + sfx, ""};
    return {prefix + "proj_k" + sfx, prefix + "proj_v" + sfx};
  }
};

ProjGeom proj_geom(const ModelConfig& c, int64_t layer) {
  const json o = resolved_options(c, layer);
  return ProjGeom{o.at("projection").get<std::string>(), o.at("sharing").get<std::string>(), o.at("k").get<int64_t>(),
                  c.max_len, c.n_heads};
}

// E_h and F_h of every head of a source layer (pointers into the arena; F_h = E_h under kv and
// layerwise sharing). Empty for exact attention and mean pooling.
struct HeadProjections {
  std::vector<const float*> E, F;
};

HeadProjections source_projections(const ParamArena<float>& a, const ProjGeom& g, const std::string& prefix,
                                   std::set<std::string>& consumed) {
  HeadProjections hp;
  const auto [ne, nf] = g.names(prefix);
  if (ne.empty()) return hp;
  const float* e = a.value(a.find(ne));
  const float* f = nf.empty() ? e : a.value(a.find(nf));
  consumed.insert(ne);
  if (!nf.empty()) consumed.insert(nf);
  const int64_t per_head = g.sharing == "none" ? g.size() : 0;
  for (int64_t h = 0; h < g.heads; ++h) {
    hp.E.push_back(e + h * per_head);
    hp.F.push_back(f + h * per_head);
  }
  return hp;
}

// One target E or F (one head's slice, or the shared matrix) and the source matrices it comes from.
struct ProjGroup {
  std::string name;  // the target parameter, for the report
  float* dst = nullptr;
  std::vector<const float*> sources;  // all of source geometry `from`; empty: no source (exact attention)
  ProjGeom from;
};

// Mean pooling over k windows of L positions, window j = [⌊jL/k⌋, ⌊(j+1)L/k⌋): k × L, the identity at k = L.
void pooling_matrix(float* dst, int64_t k, int64_t L) {
  std::fill_n(dst, k * L, 0.f);
  for (int64_t j = 0; j < k; ++j) {
    const int64_t a = j * L / k, b = (j + 1) * L / k;
    for (int64_t t = a; t < b; ++t) dst[j * L + t] = 1.f / float(b - a);
  }
}

// k × L rows merged into k2 < k: row j = mean of rows [⌊jk/k2⌋, ⌊(j+1)k/k2⌋), adjacent compressed
// slots merged. Mean pooling over k windows becomes mean pooling over k2 windows when k2 divides k
// (the identity at k = L becomes mean pooling).
std::vector<float> merge_rows(const std::vector<float>& m, int64_t k, int64_t L, int64_t k2) {
  std::vector<float> out(size_t(k2 * L));
  for (int64_t j = 0; j < k2; ++j) {
    const int64_t a = j * k / k2, b = (j + 1) * k / k2;
    for (int64_t c = 0; c < L; ++c) {
      double s = 0;
      for (int64_t r = a; r < b; ++r) s += m[size_t(r * L + c)];
      out[size_t(j * L + c)] = float(s / double(b - a));
    }
  }
  return out;
}

// A conv kernel of w taps resampled to w' taps as a step function over [0, 1): new tap t' = w·∫ of
// the old kernel over [t'/w', (t'+1)/w'). Keeps the kernel's sum, and maps w-tap mean pooling to
// w'-tap mean pooling; the identity when w' = w.
void resample_kernel(const float* src, int64_t w, float* dst, int64_t w2) {
  for (int64_t t2 = 0; t2 < w2; ++t2) {
    double s = 0;
    const double lo = double(t2) / double(w2), hi = double(t2 + 1) / double(w2);
    for (int64_t t = 0; t < w; ++t) {
      const double ov = std::min(hi, double(t + 1) / double(w)) - std::max(lo, double(t) / double(w));
      if (ov > 0) s += double(src[t]) * double(w) * ov;
    }
    dst[t2] = float(s);
  }
}

// Fills one target projection from its group by the rules of docs/convert.md and returns the note
// ("" for a bit-exact copy).
std::string fill_projection(const ProjGroup& grp, const ProjGeom& to, const ConvertOptions& opt) {
  const int64_t n_to = to.size();
  if (grp.sources.empty()) {  // exact attention → linformer: E/F are new
    if (to.projection == "fixed" || opt.init_projection == "init") return "new: the kind's own initialisation";
    if (to.dense()) {
      pooling_matrix(grp.dst, to.k, to.L);
      return to.k == to.L ? "new: the identity (k = max_len: exactly the exact attention)"
                          : str_cat("new: mean pooling over ", to.k, " windows of max_len ", to.L);
    }
    std::fill_n(grp.dst, n_to, 1.f / float(n_to));
    return str_cat("new: a mean-pooling kernel of ", n_to, " taps");
  }
  const ProjGeom& from = grp.from;
  const int64_t n_from = from.size();
  const float* first = grp.sources[0];
  bool same = true;
  for (const float* s : grp.sources) same = same && std::memcmp(s, first, sizeof(float) * size_t(n_from)) == 0;
  std::string how;
  std::vector<float> m(first, first + n_from);
  if (!same) {
    if (to.projection == "fixed") return "redrawn (an average of random projections is not one)";
    for (int64_t i = 0; i < n_from; ++i) {
      double s = 0;
      for (const float* src : grp.sources) s += src[i];
      m[size_t(i)] = float(s / double(grp.sources.size()));
    }
    how = str_cat("mean of ", grp.sources.size(), " source matrices (not exact)");
  }
  auto join = [&](const std::string& more) { return how.empty() ? more : more.empty() ? how : how + ", " + more; };
  if (!to.dense()) {  // conv kernels
    const int64_t w = n_from, w2 = n_to;
    if (w == w2) {
      std::copy_n(m.data(), w, grp.dst);
      return join("");
    }
    resample_kernel(m.data(), w, grp.dst, w2);
    return join(str_cat("kernel resampled from ", w, " to ", w2, " taps (not exact)"));
  }
  if (to.projection == "fixed" && to.k != from.k) return "redrawn for the new k";
  std::string more;
  int64_t kr = from.k;  // rows of m
  if (to.k < from.k) {
    m = merge_rows(m, from.k, from.L, to.k);
    kr = to.k;
    more = str_cat("k ", from.k, " → ", to.k, ": row j = mean of old rows [⌊j·", from.k, "/", to.k, "⌋, ⌊(j+1)·", from.k,
                   "/", to.k, "⌋) (not exact)");
  }
  if (to.k > from.k) more = str_cat("rows ", from.k, "-", to.k - 1, " new (the kind's initialisation; not exact)");
  copy_leading_block(m.data(), {kr, from.L}, grp.dst, {to.k, to.L});
  const bool tile = to.projection == "learned" && opt.extend == "tile";
  if (to.L > from.L) {
    for (int64_t r = 0; tile && r < kr; ++r)
      for (int64_t c = from.L; c < to.L; ++c) grp.dst[r * to.L + c] = m[size_t(r * from.L + c % from.L)];
    more += str_cat(more.empty() ? "" : ", ", "columns ", from.L, "-", to.L - 1,
                    tile ? " tiled (column t = old column t mod " + std::to_string(from.L) + ")"
                         : to.projection == "fixed" ? " freshly drawn" : " freshly initialised");
  } else if (to.L < from.L) {
    more += str_cat(more.empty() ? "" : ", ", "columns 0-", to.L - 1, " of ", from.L, " kept");
  }
  return join(more);
}

}  // namespace

void ConvertOptions::validate() const {
  LF_REQUIRE(max_len >= 0, "`max_len` must be positive, got ", max_len);
  LF_REQUIRE(k >= 0, "`k` must be positive, got ", k);
  LF_REQUIRE(sharing.empty() || sharing == "none" || sharing == "headwise" || sharing == "kv" || sharing == "layerwise",
             "`sharing` must be one of none | headwise | kv | layerwise, got '", sharing, "'");
  LF_REQUIRE(extend == "tile" || extend == "init", "`extend` must be tile or init, got '", extend, "'");
  LF_REQUIRE(init_projection == "pool" || init_projection == "init", "`init_projection` must be pool or init, got '",
             init_projection, "'");
  LF_REQUIRE(attention_options.is_object(), "`attention_options` must be a JSON object, got ", attention_options.dump());
}

ModelConfig convert_config(const ModelConfig& source, const ConvertOptions& o) {
  o.validate();
  source.validate();
  ModelConfig dst = source;
  if (o.max_len > 0) dst.max_len = o.max_len;
  dst.attention.assign(size_t(source.n_layers), LayerAttention{});
  std::vector<json> from(size_t(source.n_layers));
  for (int64_t i = 0; i < source.n_layers; ++i) {
    const LayerAttention& a = layer_attention(source, i);
    const std::string kind = o.attention.empty() ? a.kind : o.attention;
    AttentionRegistry::instance().get(kind);  // an unknown kind: lf::InvalidArgument listing the known ones
    from[size_t(i)] = resolved_options(source, i);
    json opts;
    if (kind == a.kind) {
      opts = from[size_t(i)];  // resolved: a default that follows max_len (Linformer's k) stays as it was
    } else {
      LF_REQUIRE(is_exact_kind(a.kind) && (is_exact_kind(kind) || kind == "linformer"), "cannot convert layer ", i,
                 " from '", a.kind, "' to '", kind,
                 "': only exact attention (full, flash) changes kind, into full, flash or linformer (docs/convert.md)");
      opts = {{"qkv_bias", from[size_t(i)].at("qkv_bias")}};
    }
    for (const auto& [key, v] : o.attention_options.items()) opts[key] = v;
    if (o.k > 0 || !o.sharing.empty()) {
      LF_REQUIRE(kind == "linformer", "`k` and `sharing` apply to linformer layers, but layer ", i, " is '", kind,
                 "' (add `attention` linformer to convert it)");
      if (o.k > 0) opts["k"] = o.k;
      if (!o.sharing.empty()) opts["sharing"] = o.sharing;
    }
    dst.attention[size_t(i)] = LayerAttention{kind, opts};
  }
  dst.validate();  // k > max_len, mean/conv windows, a causal LM over linformer, unknown options
  for (int64_t i = 0; i < source.n_layers; ++i) {
    const std::string& kf = layer_attention(source, i).kind;
    const std::string& kt = dst.attention[size_t(i)].kind;
    const json& f = from[size_t(i)];
    const json t = resolved_options(dst, i);
    auto refuse_change = [&](const char* key, const char* why) {
      LF_REQUIRE(f.at(key) == t.at(key), "cannot change option '", key, "' of layer ", i, " (", kf, ") from ",
                 f.at(key).dump(), " to ", t.at(key).dump(), ": ", why);
    };
    if (kf == "linformer" && kt == "linformer") {
      refuse_change("projection", "E/F of one projection kind do not map onto another");
      refuse_change("one_kv_head", "the K/V maps change shape");
      refuse_change("share_kv_linear", "the K/V maps change");
      if (t.at("projection") == "fixed") refuse_change("delta", "F = e^{-delta} R is fixed, not trained");
    }
    if (is_exact_kind(kf) && kt == "linformer")
      LF_REQUIRE(!t.at("one_kv_head").get<bool>() && !t.at("share_kv_linear").get<bool>(), "cannot convert layer ", i,
                 " (", kf, ") to linformer with one_kv_head or share_kv_linear: its K and V maps have no counterpart");
    if (f.contains("qkv_bias") && t.contains("qkv_bias"))
      LF_REQUIRE(!f.at("qkv_bias").get<bool>() || t.at("qkv_bias").get<bool>(), "cannot drop the Q/K/V biases of layer ",
                 i, " (qkv_bias true → false): the outputs would change");
  }
  return dst;
}

ConvertReport convert_weights(const ModelConfig& sc, const ParamArena<float>& src, const ModelConfig& tc,
                              ParamArena<float>& dst, const ConvertOptions& opt) {
  LF_REQUIRE(src.allocated() && dst.allocated(), "convert_weights needs allocated arenas");
  std::vector<bool> done(size_t(dst.count()), false);
  std::set<std::string> consumed;                  // source projections read by the groups
  std::map<std::string, std::set<std::string>> notes;  // target name → what happened to it
  auto mark = [&](const std::string& name) {
    const int id = dst.find(name);
    if (id >= 0) done[size_t(id)] = true;
  };

  // 1. Linformer's E/F, group by group; a layerwise target collects every layer's matrices first.
  std::vector<ProjGroup> groups;
  ProjGroup shared;
  ProjGeom shared_geom;
  std::vector<ProjGroup> shared_parts;  // per source layer (its geometry may differ)
  for (int64_t i = 0; i < tc.n_layers; ++i) {
    if (tc.attention[size_t(i)].kind != "linformer") continue;
    const std::string prefix = str_cat("layers.", i, ".attn.");
    const ProjGeom to = proj_geom(tc, i);
    const auto [te, tf] = to.names(prefix);
    if (te.empty()) continue;  // mean pooling: nothing stored
    HeadProjections hp;
    ProjGeom from;
    if (layer_attention(sc, i).kind == "linformer") {
      from = proj_geom(sc, i);
      hp = source_projections(src, from, prefix, consumed);
    }
    float* e = dst.value(dst.find(te));
    float* f = tf.empty() ? nullptr : dst.value(dst.find(tf));
    mark(te);
    mark(tf);
    auto add = [&](const std::string& name, float* d, std::vector<const float*> s) {
      groups.push_back(ProjGroup{name, d, std::move(s), from});
    };
    std::vector<const float*> all = hp.E;
    all.insert(all.end(), hp.F.begin(), hp.F.end());
    if (to.sharing == "none") {
      for (int64_t h = 0; h < to.heads; ++h) {
        add(te, e + h * to.size(), hp.E.empty() ? std::vector<const float*>{} : std::vector<const float*>{hp.E[size_t(h)]});
        add(tf, f + h * to.size(), hp.F.empty() ? std::vector<const float*>{} : std::vector<const float*>{hp.F[size_t(h)]});
      }
    } else if (to.sharing == "headwise") {
      add(te, e, hp.E);
      add(tf, f, hp.F);
    } else if (to.sharing == "kv") {
      add(te, e, all);
    } else {  // layerwise: one tensor for all layers
      shared.name = te;
      shared.dst = e;
      shared_geom = to;
      shared_parts.push_back(ProjGroup{te, e, all, from});
    }
  }
  for (const ProjGroup& g : groups) {
    const std::string note = fill_projection(g, proj_geom(tc, layer_of(g.name) < 0 ? 0 : layer_of(g.name)), opt);
    if (!note.empty()) notes[g.name].insert(note);
  }
  if (shared.dst) {
    // Every source layer must bring matrices of one geometry to be averaged together (a mix of exact
    // and linformer source layers, or of different k, is refused: there is no common average).
    std::vector<const float*> all;
    bool any_empty = false;
    for (const ProjGroup& p : shared_parts) {
      LF_REQUIRE(p.sources.empty() || shared_parts[0].sources.empty() ||
                     (p.from.k == shared_parts[0].from.k && p.from.projection == shared_parts[0].from.projection),
                 "cannot make one layerwise projection from layers with different k or projections");
      any_empty = any_empty || p.sources.empty();
      all.insert(all.end(), p.sources.begin(), p.sources.end());
    }
    LF_REQUIRE(!any_empty || all.empty(), "cannot make one layerwise projection from a mix of exact-attention and "
               "linformer layers: convert them in two steps");
    // Dedupe: a layerwise source hands the same matrix in from every layer and head.
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    shared.sources = all;
    shared.from = shared_parts[0].from;
    const std::string note = fill_projection(shared, shared_geom, opt);
    if (!note.empty()) notes[shared.name].insert(note);
  }

  // 2. Everything else, by name.
  for (int id = 0; id < dst.count(); ++id) {
    if (done[size_t(id)]) continue;
    const ParamInfo& p = dst.info(id);
    const int sid = src.find(p.name);
    float* out = dst.value(id);
    if (sid < 0) {
      const bool qkv_bias = ends_with(p.name, ".to_q.bias") || ends_with(p.name, ".to_k.bias") || ends_with(p.name, ".to_v.bias");
      LF_REQUIRE(qkv_bias, "the converted model's parameter '", p.name, "' has no counterpart in the checkpoint");
      std::fill_n(out, p.numel, 0.f);  // a bias the source did not have: zero is the same function
      notes[p.name].insert("new, zero (the source had no Q/K/V bias: exact)");
      continue;
    }
    const ParamInfo& s = src.info(sid);
    const float* in = src.value(sid);
    if (s.shape == p.shape) {
      std::copy_n(in, p.numel, out);
      continue;
    }
    if (p.name == "embeddings.position.weight") {  // resized only where the model has a learned table
      notes[p.name].insert(resize_rows(in, s.shape[0], out, p.shape[0], p.shape[1], opt.extend));
      continue;
    }
    const int64_t layer = layer_of(p.name);
    const std::string kind = layer >= 0 ? tc.attention[size_t(layer)].kind : std::string();
    const bool aft_bias = (kind == "aft_full" || kind == "aft_local") && p.name.find(".pos_bias.") != std::string::npos;
    if (aft_bias && tc.max_len < sc.max_len) {  // the top-left n × n block serves a sequence of n: exact
      copy_leading_block(in, s.shape, out, p.shape);
      notes[p.name].insert(str_cat("leading ", shape_str(p.shape), " block of ", shape_str(s.shape), " kept (exact)"));
      continue;
    }
    throw InvalidArgument(str_cat(
        "cannot resize parameter '", p.name, "' from ", shape_str(s.shape), " to ", shape_str(p.shape),
        kind.empty() ? "" : str_cat(" (attention kind '", kind, "')"), ": ",
        aft_bias ? "an AFT position bias can be truncated, not extended (no rule for positions it never saw)"
                 : "no rule for it (docs/convert.md lists what each kind can change)"));
  }
  for (const ParamInfo& s : src.params())
    LF_REQUIRE(dst.find(s.name) >= 0 || consumed.count(s.name), "parameter '", s.name,
               "' of the checkpoint has no place in the converted model");

  ConvertReport rep;
  for (const auto& [name, set] : notes) {
    std::string line = name + ": ";
    bool first = true;
    for (const std::string& n : set) line += (first ? "" : "; ") + n, first = false;
    rep.notes.push_back(line);
  }
  return rep;
}

ConvertResult convert_checkpoint(const std::string& source, const std::string& out_run, const ConvertOptions& o,
                                 const json& overrides, const RuntimeOptions& runtime) {
  namespace fs = std::filesystem;
  const RuntimeScope scope(runtime);
  o.validate();
  LF_REQUIRE(!out_run.empty(), "no output run directory: give `run_dir` DIR");
  LF_REQUIRE(overrides.is_object(), "training option overrides must be a JSON object");
  ConvertResult r;
  std::string dir = source;
  if (!fs::exists(fs::path(source) / "config.json") && fs::is_directory(source)) {
    const std::string latest = latest_checkpoint(source);
    if (!latest.empty()) dir = latest;
  }
  const LoadedCheckpoint ck = load_checkpoint(dir);  // lf::IoError: missing, not a checkpoint, bad config.json
  r.source_dir = ck.dir;
  r.config = convert_config(ck.config, o);
  LF_REQUIRE(latest_checkpoint(out_run).empty(), "`run_dir` '", out_run,
             "' already holds a training run: choose a new directory for the converted model");

  // The training options of the converted run.
  const TrainOptions base = TrainOptions::from_json(ck.trainer_state.value("options", json::object()));
  json merged = base.to_json();
  for (const auto& [key, v] : overrides.items()) merged[key] = v;
  merged["run_dir"] = out_run;
  if (!overrides.contains("seq_len"))
    merged["seq_len"] = o.max_len > 0 ? r.config.max_len : std::min(base.seq_len, r.config.max_len);
  TrainOptions topt = TrainOptions::from_json(merged);
  if (!overrides.contains("steps")) topt.steps = std::max<int64_t>(1, topt.warmup_steps);
  topt.validate();
  LF_REQUIRE(topt.seq_len <= r.config.max_len, "`seq_len` ", topt.seq_len, " exceeds the converted model's max_len ",
             r.config.max_len);
  r.train_options = topt.to_json();

  {  // Both models, the source file read whole, the target's zero moments: refused before allocating.
    const double ps = 4 * parameter_count(ck.config), pt = 4 * parameter_count(r.config);
    MemoryEstimate need;
    need.parameters = ps + pt;
    need.optimizer = 2 * pt;
    need.buffers = ps;
    require_memory(need, runtime, "convert", "convert on a machine with more memory");
  }
  ParamArena<float> sa, ta;
  Model<float> sm(ck.config, sa);
  sa.allocate(/*with_grads=*/false);
  load_checkpoint_weights(ck.dir, sa, nullptr);
  Model<float> tm(r.config, ta);
  ta.allocate(/*with_grads=*/false);
  ta.initialize(topt.seed);
  r.report = convert_weights(ck.config, sa, r.config, ta, o);

  // A fresh optimizer: zero moments at step 0 are exactly AdamW's state before its first step.
  const OptimizerMoments zero{std::vector<float>(size_t(ta.numel()), 0.f), std::vector<float>(size_t(ta.numel()), 0.f)};
  const json state = {{"step", 0},
                      {"options", r.train_options},
                      {"elapsed_s", 0.0},
                      {"tokens_seen", 0},
                      {"converted_from", {{"checkpoint", ck.dir}, {"step", ck.trainer_state.value("step", json(nullptr))},
                                          {"notes", r.report.notes}}}};
  r.checkpoint = save_step_checkpoint(out_run, 0, r.config, ta, &zero, state);
  return r;
}

}  // namespace lf
