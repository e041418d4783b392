// `linformer serve` as a user runs it: the built binary as a child process on an ephemeral loopback
// port (it prints the port it got), on tiny checkpoints trained here (a masked LM, a causal LM, a
// classifier), through a real HTTP client: each head's endpoints, many clients at once (batching seen
// in /metrics), malformed requests and raw garbage that never crash it, a port in use, and SIGTERM
// while a request is in flight (answered; exit 0).
#include <gtest/gtest.h>
#include <httplib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The checkpoints, trained once per process (2 steps each: these tests are about the server).
class Checkpoints {
 public:
  static Checkpoints& get() {
    static Checkpoints c;
    return c;
  }
  fs::path dir;
  std::string error;

 private:
  Checkpoints() {
    dir = fs::path(::testing::TempDir()) / ("linformer_serve_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::string text, tsv;
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "home"};
    for (int i = 0; i < 600; ++i) text += std::string(words[(i * 7 + i / 3) % 9]) + " ";
    for (int i = 0; i < 40; ++i) tsv += std::to_string(i % 3) + "\t" + words[i % 9] + " " + words[(i + 4) % 9] + "\n";
    std::ofstream(dir / "text.txt") << text;
    std::ofstream(dir / "classes.tsv") << tsv;
    const std::string common =
        " --d-model 16 --layers 1 --heads 2 --steps 2 --warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1"
        " --valid-fraction 0.1 --test-fraction 0.1";
    for (const auto& [out, args] : std::vector<std::pair<std::string, std::string>>{
             {"mlm", "--data text.txt --attention-options '{\"k\": 4}'"},
             {"clm", "--task clm --data text.txt --attention full"},
             {"cls", "--task classify --data classes.tsv --attention full"}}) {
      const lf::test::CliResult r = lf::test::run_linformer("cd '" + dir.string() + "' &&",
                                                            "train " + args + " --out " + out + common,
                                                            (dir / ("train_" + out + ".err")).string());
      if (r.status != 0) error += "training " + out + " failed: " + r.err;
    }
  }
  ~Checkpoints() { fs::remove_all(dir); }
};

// `linformer serve --port 0 ...` as a child process, until stop() or the destructor.
class ServeProcess {
 public:
  explicit ServeProcess(const std::string& args) {
    const Checkpoints& c = Checkpoints::get();
    err_path_ = c.dir / ("serve_" + std::to_string(++count_) + ".err");
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      const std::string cmd = "cd '" + c.dir.string() + "' && exec '" LINFORMER_CLI_PATH "' serve " + args + " 2>'" +
                              err_path_.string() + "'";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    // The first line of stdout names the port; the model loads first (a few hundred ms).
    std::string line;
    pollfd p{out[0], POLLIN, 0};
    while (line.find('\n') == std::string::npos && ::poll(&p, 1, 30000) > 0) {
      char buf[256];
      const ssize_t got = ::read(out[0], buf, sizeof buf);
      if (got <= 0) break;
      line.append(buf, size_t(got));
    }
    ::close(out[0]);
    banner_ = line;
    std::smatch m;
    if (std::regex_search(line, m, std::regex(R"(listening on http://127\.0\.0\.1:(\d+))"))) port_ = std::stoi(m[1]);
  }
  ~ServeProcess() {
    if (pid_ > 0 && !waited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  const std::string& banner() const { return banner_; }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    return c;
  }
  bool alive() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  // Sends `sig` and waits (at most 20 s) for the exit; the exit status, or -1 (killed, or no exit).
  int stop(int sig = SIGTERM) {
    ::kill(pid_, sig);
    for (int i = 0; i < 2000; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        waited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }
  std::string err() const { return read_file(err_path_); }

 private:
  static inline int count_ = 0;
  pid_t pid_ = -1;
  int port_ = 0;
  bool waited_ = false;
  std::string banner_;
  fs::path err_path_;
};

json post_json(const ServeProcess& s, const std::string& path, const std::string& body, int want_status) {
  auto r = s.client().Post(path, body, "application/json");
  if (!r) {
    ADD_FAILURE() << path << ": no response (" << httplib::to_string(r.error()) << ")";
    return {};
  }
  EXPECT_EQ(r->status, want_status) << path << " " << body << " -> " << r->body;
  const json j = json::parse(r->body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r->body;
  return j;
}

class ServeCli : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(Checkpoints::get().error, ""); }
};

TEST_F(ServeCli, AMaskedLmFillsMasksAndEmbeds) {
  ServeProcess s("--checkpoint mlm --port 0");
  ASSERT_GT(s.port(), 0) << s.banner() << s.err();
  const json filled = post_json(s, "/v1/predict", R"({"texts": ["the c_t", "_og ran"]})", 200);
  ASSERT_EQ(filled["results"].size(), 2u) << filled;
  const std::string first = filled["results"][0]["text"];
  EXPECT_EQ(first.substr(0, 5), "the c");  // only the mask changes (a byte that is not UTF-8 shows as U+FFFD)
  EXPECT_EQ(first.substr(first.size() - 1), "t");
  const json emb = post_json(s, "/v1/embed", R"({"text": "the cat", "pooling": "mean"})", 200);
  ASSERT_EQ(emb["result"]["embedding"].size(), 16u) << emb;
  for (const json& x : emb["result"]["embedding"]) EXPECT_TRUE(std::isfinite(x.get<double>()));
  EXPECT_NE(post_json(s, "/v1/generate", R"({"text": "the"})", 404)["error"].get<std::string>().find("masked_lm"),
            std::string::npos);
  post_json(s, "/v1/classify", R"({"text": "the"})", 404);
  const json health = json::parse(s.client().Get("/health")->body);
  EXPECT_EQ(health["model"]["objective"], "masked_lm");
  EXPECT_EQ(s.stop(), 0) << s.err();
}

TEST_F(ServeCli, ACausalLmGeneratesAndAClassifierClassifies) {
  {
    ServeProcess s("--checkpoint clm --port 0");
    ASSERT_GT(s.port(), 0) << s.banner() << s.err();
    const std::string body = R"({"text": "the c", "max_new_tokens": 6, "temperature": 0.8, "seed": 3})";
    const json a = post_json(s, "/v1/generate", body, 200);
    const json b = post_json(s, "/v1/generate", body, 200);
    ASSERT_TRUE(a["result"]["text"].is_string()) << a;
    EXPECT_EQ(a, b) << "the same seed gives the same text";
    post_json(s, "/v1/predict", R"({"text": "th_"})", 404);
    post_json(s, "/v1/generate", R"({"text": "the", "max_new_tokens": 100000})", 400);
    EXPECT_EQ(s.stop(), 0) << s.err();
  }
  ServeProcess s("--checkpoint cls --port 0");
  ASSERT_GT(s.port(), 0) << s.banner() << s.err();
  const json c = post_json(s, "/v1/classify", R"({"texts": ["the cat", "dog ran home"]})", 200);
  ASSERT_EQ(c["results"].size(), 2u) << c;
  for (const json& r : c["results"]) {
    double sum = 0;
    for (const json& p : r["probabilities"]) sum += p.get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-6);
    EXPECT_GE(r["label"].get<int>(), 0);
    EXPECT_LT(r["label"].get<size_t>(), r["probabilities"].size());
  }
  EXPECT_EQ(s.stop(SIGINT), 0) << s.err();
  EXPECT_NE(s.err().find("stopped by SIGINT"), std::string::npos) << s.err();
}

TEST_F(ServeCli, ManyClientsAreAllAnsweredInBatches) {
  ServeProcess s("--checkpoint mlm --port 0 --workers 2 --max-batch 8 --max-wait-ms 5");
  ASSERT_GT(s.port(), 0) << s.banner() << s.err();
  constexpr int kThreads = 16, kEach = 5;
  std::atomic<int> right{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t)
    clients.emplace_back([&, t] {
      auto c = s.client();
      for (int i = 0; i < kEach; ++i) {
        const std::string text = "c" + std::to_string(t) + "_" + std::to_string(i);
        auto r = c.Post("/v1/predict", json{{"text", text}}.dump(), "application/json");
        if (!r || r->status != 200) continue;
        const std::string got = json::parse(r->body)["result"]["text"];
        // Each answer is its own text's: the bytes around the mask are the request's.
        const std::string head = text.substr(0, text.find('_')), tail = text.substr(text.find('_') + 1);
        if (got.rfind(head, 0) == 0 && got.size() >= tail.size() && got.substr(got.size() - tail.size()) == tail) ++right;
      }
    });
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(right, kThreads * kEach);
  const std::string m = s.client().Get("/metrics")->body;
  std::smatch sum, count;
  ASSERT_TRUE(std::regex_search(m, sum, std::regex(R"(linformer_batch_size_sum\{endpoint="predict"\} (\d+))"))) << m;
  ASSERT_TRUE(std::regex_search(m, count, std::regex(R"(linformer_batch_size_count\{endpoint="predict"\} (\d+))")));
  EXPECT_EQ(std::stoi(sum[1]), kThreads * kEach);
  EXPECT_LT(std::stoi(count[1]), kThreads * kEach) << "no two requests shared a model call:\n" << m;
  EXPECT_EQ(s.stop(), 0) << s.err();
}

// Sends raw bytes on a fresh connection and returns what comes back until the server closes it.
std::string raw_exchange(int port, const std::string& bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    for (ssize_t got; (got = ::recv(fd, buf, sizeof buf, 0)) > 0;) reply.append(buf, size_t(got));
  }
  ::close(fd);
  return reply;
}

TEST_F(ServeCli, MalformedRequestsGet4xxAndNeverCrashIt) {
  ServeProcess s("--checkpoint mlm --port 0 --max-body 2048 --max-texts 4");
  ASSERT_GT(s.port(), 0) << s.banner() << s.err();
  const std::vector<std::pair<std::string, int>> bodies = {
      {"", 400}, {"{", 400}, {"[]", 400}, {"nul", 400}, {R"({"text": 1})", 400}, {R"({"texts": "a_"})", 400},
      {R"({"texts": []})", 400}, {R"({"texts": ["a_", "b_", "c_", "d_", "e_"]})", 400},
      {R"({"text": "a_", "mask_char": ""})", 400}, {R"({"text": "abcdefghijklmnopq_"})", 400},
      {std::string(3000, 'x'), 413}, {"\xff\xfe\x00\x01", 400}, {std::string(2000, '{'), 400}};
  for (const auto& [body, status] : bodies) {
    const json j = post_json(s, "/v1/predict", body, status);
    EXPECT_TRUE(j.contains("error") && j["error"].is_string()) << j;
  }
  EXPECT_EQ(s.client().Get("/v1/predict")->status, 405);
  EXPECT_EQ(s.client().Post("/v2/predict", "{}", "application/json")->status, 404);
  // Raw HTTP the client library would not send: every answer a 4xx, or a closed connection.
  for (const std::string& raw :
       {std::string("GARBAGE\r\n\r\n"), std::string("POST /v1/predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
        std::string("POST /v1/predict HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n{}"),
        std::string("POST /v1/predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n") + std::string(3000, 'a'),
        "GET /health HTTP/1.1\r\nX: " + std::string(20000, 'h') + "\r\n\r\n", std::string("\x16\x03\x01\x02\x00", 5)}) {
    const std::string reply = raw_exchange(s.port(), raw);
    if (!reply.empty()) {
      const int status = std::stoi(reply.substr(9, 3));
      EXPECT_GE(status, 400) << raw.substr(0, 60) << " -> " << reply.substr(0, 200);
      EXPECT_LT(status, 500) << raw.substr(0, 60) << " -> " << reply.substr(0, 200);
    }
  }
  EXPECT_TRUE(s.alive());
  EXPECT_EQ(s.client().Get("/health")->status, 200);
  EXPECT_EQ(s.stop(), 0) << s.err();
}

TEST_F(ServeCli, SigtermAnswersTheRequestInFlightAndExits0) {
  // A worker waits up to 1.5 s for a batch to fill, so the request is still in flight at SIGTERM.
  ServeProcess s("--checkpoint mlm --port 0 --max-batch 64 --max-wait-ms 1000");
  ASSERT_GT(s.port(), 0) << s.banner() << s.err();
  int status = -1;
  std::string body;
  std::thread client([&] {
    auto r = s.client().Post("/v1/predict", R"({"text": "the c_t"})", "application/json");
    if (r) {
      status = r->status;
      body = r->body;
    }
  });
  std::this_thread::sleep_for(300ms);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(s.stop(SIGTERM), 0) << s.err();
  client.join();
  EXPECT_EQ(status, 200) << body;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s);
  EXPECT_NE(s.err().find("stopped by SIGTERM"), std::string::npos) << s.err();
  // And nothing listens any more.
  httplib::Client late("127.0.0.1", s.port());
  EXPECT_FALSE(late.Get("/health"));
}

TEST_F(ServeCli, APortInUseIsRefused) {
  ServeProcess s("--checkpoint mlm --port 0");
  ASSERT_GT(s.port(), 0) << s.banner() << s.err();
  const lf::test::CliResult second = lf::test::run_linformer(
      "cd '" + Checkpoints::get().dir.string() + "' &&", "serve --checkpoint mlm --port " + std::to_string(s.port()),
      (Checkpoints::get().dir / "second.err").string());
  EXPECT_EQ(second.status, 1) << second.err;
  EXPECT_NE(second.err.find("cannot listen on 127.0.0.1:" + std::to_string(s.port())), std::string::npos) << second.err;
  EXPECT_EQ(s.stop(), 0) << s.err();
}

}  // namespace
