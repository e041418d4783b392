// `linformer spectrum`: the spectrum of a trained exact-attention model's context-mapping matrices
// (the Linformer paper's Fig. 1) and the error of rank-k and Linformer approximations against k, on
// held-out sequences of its data. The analysis is src/analysis/spectrum.h; this file picks the
// sequences, writes the CSVs and runs scripts/plot_spectrum.py for the PNGs when a python3 with
// matplotlib is found.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <span>

#include "analysis/spectrum.h"
#include "cli/common.h"
#include "linformer/corpus.h"
#include "linformer/memory.h"
#include "linformer/trainer.h"

#ifndef LINFORMER_SOURCE_DIR
#define LINFORMER_SOURCE_DIR "."
#endif

namespace lf::cli {
namespace {

struct SpectrumCommand {
  std::string checkpoint, out, data, split = "valid", k_list;
  int64_t sequences = 8, seq_len = 0, heatmap_k = 0, max_bytes = -1;
  double delta = 1.0;
  uint64_t seed = 1;
  bool no_plots = false;
};

// S windows of n bytes of the split, disjoint and spread evenly over it: window i of the W = size/n
// windows is floor(i·W/S), so the choice does not depend on anything but (size, n, S).
std::vector<std::vector<int32_t>> pick_sequences(std::span<const uint8_t> split, const std::string& split_label,
                                                 int64_t S, int64_t n) {
  const int64_t W = int64_t(split.size()) / n;
  LF_REQUIRE(S <= W, "the ", split_label, " split holds ", split.size(), " bytes, ", W, " windows of n = ", n,
             ", fewer than --sequences ", S, ": give fewer --sequences or a shorter --seq-len");
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) {
    const int64_t start = (i * W / S) * n;
    out[size_t(i)].assign(split.begin() + start, split.begin() + start + n);  // byte ids are the bytes
  }
  return out;
}


// Draws the PNGs with scripts/plot_spectrum.py when it can, and says on one line where they are or
// how to get them.
void draw_plots(const std::string& dir, bool skip) {
  const std::string script = LINFORMER_SOURCE_DIR "/scripts/plot_spectrum.py";
  const std::string how = str_cat("python3 ", shell_quote(script), " ", shell_quote(dir),
                                  " (needs matplotlib: e.g. the .venv-bench that scripts/bench_all.sh makes, or "
                                  "LINFORMER_PYTHON=/path/to/python)");
  if (skip) {
    std::printf("spectrum: plots not drawn (--no-plots); draw them with %s\n", how.c_str());
    return;
  }
  const std::string py = std::filesystem::exists(script) ? find_plot_python() : std::string();
  if (py.empty()) {
    std::printf("spectrum: no python3 with matplotlib found; draw the plots with %s\n", how.c_str());
    return;
  }
  std::fflush(stdout);
  const int rc = std::system((shell_quote(py) + " " + shell_quote(script) + " " + shell_quote(dir) + " >/dev/null").c_str());
  if (rc != 0)
    std::printf("spectrum: %s failed (status %d); the CSVs are complete\n", script.c_str(), rc);
  else
    std::printf("spectrum: plots in %s (cumulative.png, heatmap.png, errors.png)\n", dir.c_str());
}

int run_spectrum(const CLI::App& app, const SpectrumCommand& c) {
  auto given = [&](const char* flag) { return app.get_option(flag)->count() > 0; };
  LF_REQUIRE(c.sequences > 0, "--sequences must be positive, got ", c.sequences);
  LF_REQUIRE(!given("--seq-len") || c.seq_len > 0, "--seq-len must be positive, got ", c.seq_len);
  LF_REQUIRE(!given("--heatmap-k") || c.heatmap_k > 0, "--heatmap-k must be positive, got ", c.heatmap_k);
  LF_REQUIRE(!given("--max-bytes") || c.max_bytes >= 0, "--max-bytes must not be negative, got ", c.max_bytes);
  SpectrumOptions opt;
  opt.delta = c.delta;
  opt.seed = c.seed;
  if (given("--k-list")) opt.k_list = parse_list(c.k_list, "--k-list");
  validate_spectrum_options(opt, std::numeric_limits<int64_t>::max());  // δ and the order; k against n below

  LoadedModel m = open_model(c.checkpoint);
  require_exact_attention(m.config);
  TrainOptions topt = TrainOptions::from_json(m.trainer_state.value("options", json::object()));
  topt.data_path = checkpoint_data_path(topt.data_path, c.data);
  if (c.max_bytes >= 0) topt.max_bytes = c.max_bytes;
  LF_REQUIRE(c.seq_len <= m.config.max_len, "--seq-len ", c.seq_len, " exceeds the model's max_len ", m.config.max_len);
  const int64_t n = c.seq_len > 0 ? c.seq_len : std::min(topt.seq_len, m.config.max_len);
  if (opt.k_list.empty()) opt.k_list = default_k_list(n);
  validate_spectrum_options(opt, n);
  // The heatmap's k: given (one of the list), else the list's k nearest n/4 (the paper's 128 of 512).
  int64_t heat_k = c.heatmap_k;
  if (heat_k > 0) {
    LF_REQUIRE(std::find(opt.k_list.begin(), opt.k_list.end(), heat_k) != opt.k_list.end(), "--heatmap-k ", heat_k,
               " is not in the k list (", c.k_list.empty() ? "the default" : c.k_list, ")");
  } else {
    heat_k = opt.k_list.front();
    for (int64_t k : opt.k_list)
      if (std::llabs(4 * k - n) < std::llabs(4 * heat_k - n)) heat_k = k;
  }
  check_writable((std::filesystem::path(c.out) / "spectrum.json").string(), "--out");

  build_model(m, 1, n,
              data_file_bytes(topt.data_path, topt.max_bytes) +
                  spectrum_analysis_bytes(m.config, n, c.sequences, int64_t(opt.k_list.size())),
              "spectrum", "give fewer --sequences or a shorter --seq-len");
  const Corpus corpus = Corpus::load(topt.data_path, topt.max_bytes, {topt.valid_fraction, topt.test_fraction});
  const Split split = c.split == "test" ? Split::Test : Split::Valid;
  const auto sequences = pick_sequences(corpus.split(split), c.split, c.sequences, n);

  const SpectrumResult r = analyse_spectrum(*m.model, *m.arena, sequences, opt, runtime_options());
  json extra = {{"checkpoint", m.dir}, {"data", topt.data_path}, {"split", c.split}, {"heatmap_k", heat_k}};
  write_spectrum_files(r, c.out, extra);

  std::printf("spectrum of %s: %lld sequences of n = %lld from the %s split of %s; layers × heads: %lld × %lld\n",
              m.dir.c_str(), (long long)r.sequences, (long long)n, c.split.c_str(), topt.data_path.c_str(),
              (long long)r.n_layers, (long long)r.n_heads);
  const size_t j = size_t(std::find(r.k_list.begin(), r.k_list.end(), heat_k) - r.k_list.begin());
  const int64_t K = int64_t(r.k_list.size());
  for (int64_t l = 0; l < r.n_layers; ++l) {
    const size_t at = r.slot(l, 0, 0);
    const int64_t count = r.n_heads * r.sequences;
    const SampleStats cum = sample_stats(r.cumulative.data() + at * size_t(n) + size_t(heat_k - 1), count, n);
    const SampleStats rank = sample_stats(r.rank_k_error.data() + at * size_t(K) + j, count, K);
    const SampleStats lin = sample_stats(r.linformer_error.data() + at * size_t(K) + j, count, K);
    std::printf("layer %lld at k = %lld: cumulative singular value %.4f (min %.4f), best rank-k error %.4f, "
                "Linformer (fixed E, F, delta %g) error %.4f\n",
                (long long)l, (long long)heat_k, cum.mean, cum.min, rank.mean, r.delta, lin.mean);
  }
  std::printf("spectrum: CSVs in %s (cumulative.csv, heatmap.csv, errors.csv, errors_by_head.csv, spectrum.json)\n",
              c.out.c_str());
  draw_plots(c.out, c.no_plots);
  return 0;
}

}  // namespace

CLI::App* add_spectrum_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<SpectrumCommand>();
  CLI::App* sub = app.add_subcommand(
      "spectrum", "Singular values of an exact-attention model's attention matrices (paper Fig. 1) and the error of "
                  "rank-k and Linformer approximations, to CSV and PNG");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest); every "
                  "layer full or flash")->required();
  sub->add_option("--out", cmd->out, "output directory for the CSVs and PNGs")->required();
  sub->add_option("--sequences", cmd->sequences, "held-out sequences to analyse (default 8)");
  sub->add_option("--split", cmd->split, "valid | test (default valid)")->check(CLI::IsMember({"valid", "test"}));
  sub->add_option("--seq-len", cmd->seq_len, "n, tokens per sequence (default: training's, at most max_len)");
  sub->add_option("--k-list", cmd->k_list, "ranks / projected lengths k, comma-separated, increasing, each <= n "
                  "(default 1, 2, 4, ... below n, and n)");
  sub->add_option("--heatmap-k", cmd->heatmap_k, "the k of the layer x head heatmap, one of the list (default: the "
                  "one nearest n/4)");
  sub->add_option("--delta", cmd->delta, "delta of Linformer's fixed projections E = delta R, F = exp(-delta) R "
                  "(default 1)");
  sub->add_option("--seed", cmd->seed, "seed of the random projections R (default 1)");
  sub->add_option("--data", cmd->data, "data file (default: the one it was trained on)");
  sub->add_option("--max-bytes", cmd->max_bytes, "read at most this many bytes of the data (default: training's)");
  sub->add_flag("--no-plots", cmd->no_plots, "write the CSVs only (do not run scripts/plot_spectrum.py)");
  run = [sub, cmd] { return run_spectrum(*sub, *cmd); };
  return sub;
}

}  // namespace lf::cli
