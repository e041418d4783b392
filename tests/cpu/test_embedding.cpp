// Embedding: gather and deterministic scatter-add vs reference, independence from the thread count,
// the table gradient against finite differences, and out-of-range ids.
#include <omp.h>

#include <string>
#include <vector>

#include "cpu/embedding.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

// N ids in [0, V), with many repeats when N > V.
std::vector<int32_t> random_ids(int64_t N, int64_t V, uint64_t seed) {
  std::vector<int32_t> ids(N);
  for (int64_t i = 0; i < N; ++i) ids[size_t(i)] = int32_t(uniform01_f64(seed, 3, uint64_t(i)) * double(V));
  return ids;
}

template <class T>
void check_vs_reference(int64_t N, int64_t V, int64_t d, double tol) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " V=" << V << " d=" << d);
  const std::vector<int32_t> ids = random_ids(N, V, uint64_t(N + V + d));
  const std::vector<T> table = test::random_vector<T>(V * d, 1), dout = test::random_vector<T>(N * d, 2);
  std::vector<T> out(size_t(N * d)), outr(size_t(N * d), T(5));
  embedding_forward(ids.data(), table.data(), out.data(), N, V, d);
  embedding_forward_ref(ids.data(), table.data(), outr.data(), N, V, d);
  EXPECT_EQ(out, outr);
  // accumulate adds onto what is there.
  std::vector<T> acc = test::random_vector<T>(N * d, 3), accr = acc;
  embedding_forward(ids.data(), table.data(), acc.data(), N, V, d, true);
  embedding_forward_ref(ids.data(), table.data(), accr.data(), N, V, d, true);
  LF_EXPECT_CLOSE(acc.data(), accr.data(), N * d, tol);
  EXPECT_NE(acc, out);
  // The scatter accumulates onto a non-zero dtable.
  std::vector<T> dt = test::random_vector<T>(V * d, 4), dtr = dt;
  embedding_backward(ids.data(), dout.data(), dt.data(), N, V, d);
  embedding_backward_ref(ids.data(), dout.data(), dtr.data(), N, V, d);
  LF_EXPECT_CLOSE(dt.data(), dtr.data(), V * d, tol);
}

TEST(Embedding, FastMatchesReferenceFloat) {
  check_vs_reference<float>(1, 1, 1, 1e-6);
  check_vs_reference<float>(101, 13, 67, 1e-6);
  check_vs_reference<float>(2003, 257, 131, 1e-6);  // parallel paths
}

TEST(Embedding, FastMatchesReferenceDouble) {
  check_vs_reference<double>(1, 1, 1, 1e-15);
  check_vs_reference<double>(101, 13, 67, 1e-15);
  check_vs_reference<double>(2003, 257, 131, 1e-15);
}

TEST(Embedding, BackwardIndependentOfThreadCount) {
  const int64_t N = 4001, V = 50, d = 96;
  const std::vector<int32_t> ids = random_ids(N, V, 5);
  const std::vector<float> dout = test::random_vector<float>(N * d, 6);
  std::vector<float> d1(size_t(V * d), 0.f), d2 = d1;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  embedding_backward(ids.data(), dout.data(), d1.data(), N, V, d);
  omp_set_num_threads(2);
  embedding_backward(ids.data(), dout.data(), d2.data(), N, V, d);
  omp_set_num_threads(saved);
  EXPECT_EQ(d1, d2);
}

TEST(Embedding, TableGradientMatchesFiniteDifferences) {
  const int64_t V = 5, d = 3;
  const std::vector<int32_t> ids = {0, 4, 4, 2, 0, 4, 1};  // repeats; id 3 unused
  const int64_t N = int64_t(ids.size());
  std::vector<double> table = test::random_vector(V * d, 7);
  const std::vector<double> w = test::random_vector(N * d, 8);
  auto loss = [&] {
    std::vector<double> out(size_t(N * d));
    embedding_forward(ids.data(), table.data(), out.data(), N, V, d);
    return test::weighted_sum(out.data(), w.data(), N * d);
  };
  std::vector<double> dtable(size_t(V * d), 0.0);
  embedding_backward(ids.data(), w.data(), dtable.data(), N, V, d);
  test::expect_gradient_matches(loss, table.data(), V * d, dtable.data(), "embedding dtable");
  for (int64_t j = 0; j < d; ++j) EXPECT_EQ(dtable[size_t(3 * d + j)], 0.0) << "unused row must get no gradient";
}

TEST(Embedding, OutOfRangeIdThrowsNamingIt) {
  const std::vector<float> table(4 * 2, 1.f);
  std::vector<float> out(3 * 2, 9.f);
  for (int32_t bad : {4, -1, 1000}) {
    const std::vector<int32_t> ids = {0, bad, 1};
    try {
      embedding_forward(ids.data(), table.data(), out.data(), 3, 4, 2);
      ADD_FAILURE() << "id " << bad << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("token id " + std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_EQ(out, std::vector<float>(6, 9.f)) << "nothing is written before the ids are validated";
    std::vector<float> dtable(8, 0.f);
    EXPECT_THROW(embedding_backward(ids.data(), out.data(), dtable.data(), 3, 4, 2), InvalidArgument);
  }
  const int32_t id = 0;
  EXPECT_THROW(embedding_forward(&id, table.data(), out.data(), 1, 0, 2), InvalidArgument);
}

}  // namespace
}  // namespace lf
