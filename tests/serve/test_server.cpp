// The HTTP server in-process, behind a fake backend (no model: these tests are about the server's own
// machinery), through a real HTTP client (httplib::Client) on an ephemeral loopback port: routes,
// JSON errors for bad requests, batching of concurrent requests seen in /metrics, the queue bound
// (503), the request timeout (504), slow clients, and stop() finishing the requests in flight. The
// server on a real checkpoint, as a child process, is tested in test_serve_cli.cpp.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "linformer/error.h"
#include "serve/server.h"

namespace lf::serve {
namespace {

using namespace std::chrono_literals;

// Upper-cases each text (predict) or returns its length (classify); "bad" is refused like a model
// refuses a text; every call sleeps `delay` first, so requests pile up.
struct FakeBackend : Backend {
  std::chrono::milliseconds delay;
  explicit FakeBackend(std::chrono::milliseconds d) : delay(d) {}
  std::vector<json> run(const Request& options, const std::vector<std::string>& texts) override {
    std::this_thread::sleep_for(delay);
    std::vector<json> out;
    for (const std::string& t : texts) {
      if (t == "bad") throw InvalidArgument("the fake model refuses 'bad'");
      std::string up = t;
      for (char& c : up) c = char(std::toupper(static_cast<unsigned char>(c)));
      out.push_back(options.endpoint == Endpoint::classify ? json{{"label", t.size()}} : json{{"text", up}});
    }
    return out;
  }
};

ServerOptions test_options() {
  ServerOptions o;
  o.port = 0;
  o.max_body = 4096;
  o.read_timeout_s = 1;
  o.limits.max_texts = 8;
  o.limits.max_text_bytes = 64;
  o.endpoints = {Endpoint::predict, Endpoint::classify};
  o.why_not = "the fake model has no such head";
  o.model_info = json{{"name", "fake"}};
  return o;
}

// A server on its own thread for the test's duration.
class LiveServer {
 public:
  explicit LiveServer(const ServerOptions& o, std::chrono::milliseconds delay = 0ms)
      : server_([delay] { return std::make_unique<FakeBackend>(delay); }, o) {
    port_ = server_.bind();
    thread_ = std::thread([this] { server_.run(); });
  }
  ~LiveServer() {
    server_.stop();
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(10, 0);
    return c;
  }
  std::string metrics() const {
    auto r = client().Get("/metrics");
    return r ? r->body : "";
  }
  Server& server() { return server_; }
  std::thread& thread() { return thread_; }
  int port() const { return port_; }

 private:
  Server server_;
  int port_ = 0;
  std::thread thread_;
};

// The value of one Prometheus sample line ("name{labels} value"), or -1.
double sample(const std::string& text, const std::string& name_and_labels) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name_and_labels + " ", 0) == 0) return std::stod(line.substr(name_and_labels.size() + 1));
  return -1;
}

// A response kept past its client (httplib::Result cannot be default-made); status -1: none came.
struct Got {
  int status = -1;
  std::string body;
};
Got got(const httplib::Result& r) {
  return r ? Got{r->status, r->body} : Got{-1, "no response: " + httplib::to_string(r.error())};
}

// The response is `status` with a JSON {"error": "..."} holding `fragment`.
void expect_error(const Got& r, int status, const std::string& fragment) {
  EXPECT_EQ(r.status, status) << r.body;
  const json body = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(body.is_object() && body.contains("error") && body["error"].is_string()) << r.body;
  EXPECT_NE(body["error"].get<std::string>().find(fragment), std::string::npos) << r.body;
}

TEST(ServeServer, AnswersOneTextAndAList) {
  LiveServer s(test_options());
  auto c = s.client();
  auto one = c.Post("/v1/predict", R"({"text": "a_b"})", "application/json");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(json::parse(one->body), json::parse(R"({"result": {"text": "A_B"}})"));
  auto many = c.Post("/v1/classify", R"({"texts": ["a", "bcd"]})", "application/json");
  ASSERT_TRUE(many);
  EXPECT_EQ(json::parse(many->body), json::parse(R"({"results": [{"label": 1}, {"label": 3}]})"));
}

TEST(ServeServer, HealthMetricsAndOpenApi) {
  LiveServer s(test_options());
  auto c = s.client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  const json h = json::parse(health->body);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["model"]["name"], "fake");
  EXPECT_EQ(h["endpoints"], json::parse(R"(["/v1/predict", "/v1/classify"])"));
  ASSERT_TRUE(c.Post("/v1/classify", R"({"text": "x"})", "application/json"));
  const std::string m = s.metrics();
  EXPECT_EQ(sample(m, R"(linformer_requests_total{route="/v1/classify",status="200"})"), 1) << m;
  EXPECT_EQ(sample(m, R"(linformer_request_duration_seconds_count{route="/v1/classify"})"), 1) << m;
  EXPECT_EQ(sample(m, R"(linformer_batch_size_count{endpoint="classify"})"), 1) << m;
  EXPECT_EQ(sample(m, "linformer_queue_depth"), 0) << m;
  // The document served is the one in the repository, valid JSON naming every route.
  auto doc = c.Get("/openapi.json");
  ASSERT_TRUE(doc);
  std::ifstream in(LINFORMER_SOURCE_DIR "/src/serve/openapi.json");
  std::stringstream file;
  file << in.rdbuf();
  EXPECT_EQ(doc->body, file.str());
  const json api = json::parse(doc->body, nullptr, false);
  ASSERT_FALSE(api.is_discarded());
  EXPECT_EQ(api["openapi"].get<std::string>().rfind("3.", 0), 0u);
  // Each model route with exactly the request fields the parser takes.
  for (Endpoint e : {Endpoint::predict, Endpoint::embed, Endpoint::classify, Endpoint::generate}) {
    const std::string route = std::string("/v1/") + endpoint_name(e);
    ASSERT_TRUE(api["paths"][route].contains("post")) << route;
    std::set<std::string> documented, parsed = option_names(e);
    for (const auto& [name, _] : api["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
                                     ["properties"].items())
      documented.insert(name);
    parsed.insert({"text", "texts"});
    EXPECT_EQ(documented, parsed) << route;
  }
  for (const char* get : {"/health", "/metrics", "/openapi.json"}) EXPECT_TRUE(api["paths"][get].contains("get")) << get;
}

TEST(ServeServer, EveryBadRequestGetsA4xxWithAMessage) {
  ServerOptions o = test_options();
  LiveServer s(o);
  auto c = s.client();
  const struct {
    const char* path;
    std::string body;
    int status;
    const char* fragment;
  } posts[] = {
      {"/v1/predict", "", 400, "not valid JSON"},
      {"/v1/predict", "{\"text\": \"a_", 400, "not valid JSON"},
      {"/v1/predict", "\"a_b\"", 400, "must be a JSON object"},
      {"/v1/predict", R"({"text": ["a_b"]})", 400, "'text' must be a string"},
      {"/v1/predict", R"({"texts": []})", 400, "'texts' is empty"},
      {"/v1/predict", R"({"texts": [null]})", 400, "'texts'[0] must be a string"},
      {"/v1/predict", R"({"txt": "a_b"})", 400, "unknown field 'txt'"},
      {"/v1/predict", R"({"text": "no mask"})", 400, "no mask character"},
      {"/v1/predict", "{\"text\": \"\xff_\"}", 400, "not valid JSON"},
      {"/v1/predict", std::string(3000, '['), 400, "not valid JSON"},
      {"/v1/predict", "{\"text\": \"" + std::string(65, '_') + "\"}", 400, "above the limit of 64 (--max-seq-len)"},
      {"/v1/predict", R"({"texts": ["_","_","_","_","_","_","_","_","_"]})", 400, "above the limit of 8 (--max-texts)"},
      {"/v1/predict", std::string(5000, ' '), 413, "larger than the limit of 4096 bytes (--max-body)"},
      {"/v1/generate", R"({"text": "a"})", 404, "/v1/generate is not available: the fake model has no such head"},
      {"/v1/nothing", "{}", 404, "no route POST /v1/nothing"},
      {"/health", "{}", 405, "POST is not allowed on /health; use GET"},
  };
  for (const auto& p : posts) {
    SCOPED_TRACE(std::string(p.path) + " " + p.body.substr(0, 60));
    expect_error(got(c.Post(p.path, p.body, "application/json")), p.status, p.fragment);
  }
  expect_error(got(c.Get("/v1/predict")), 405, "GET is not allowed on /v1/predict; use POST");
  expect_error(got(c.Delete("/v1/classify")), 405, "DELETE is not allowed");
  expect_error(got(c.Get("/")), 404, "no route GET /");
  expect_error(got(c.Get("/" + std::string(500, 'x'))), 404, "...");
  // After all that, the server still answers.
  auto ok = c.Post("/v1/predict", R"({"text": "_"})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  const std::string m = s.metrics();
  EXPECT_EQ(sample(m, R"(linformer_requests_total{route="/v1/predict",status="400"})"), 12) << m;
  EXPECT_EQ(sample(m, R"(linformer_requests_total{route="other",status="404"})"), 3) << m;
}

TEST(ServeServer, ConcurrentRequestsAreBatchedAndAllAnsweredRight) {
  ServerOptions o = test_options();
  o.batcher.max_batch = 8;
  o.batcher.max_wait_ms = 5;
  LiveServer s(o, 20ms);
  constexpr int kThreads = 24, kEach = 4;
  std::atomic<int> right{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t)
    clients.emplace_back([&, t] {
      auto c = s.client();
      for (int i = 0; i < kEach; ++i) {
        const std::string text = "t" + std::to_string(t) + "_" + std::to_string(i);
        auto r = c.Post("/v1/predict", json{{"text", text}}.dump(), "application/json");
        std::string want = text;
        for (char& ch : want) ch = char(std::toupper(static_cast<unsigned char>(ch)));
        if (r && r->status == 200 && json::parse(r->body)["result"]["text"] == want)
          ++right;
        else
          ADD_FAILURE() << text << ": " << got(r).status << " " << got(r).body;
      }
    });
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(right, kThreads * kEach);
  const std::string m = s.metrics();
  const double batches = sample(m, R"(linformer_batch_size_count{endpoint="predict"})");
  const double texts = sample(m, R"(linformer_batch_size_sum{endpoint="predict"})");
  EXPECT_EQ(texts, kThreads * kEach) << m;
  // 96 texts from 24 clients at once, 20 ms per call: one call per text would take ~2 s; batching
  // must have put several texts into most calls.
  EXPECT_LT(batches, texts / 2) << m;
  EXPECT_GT(sample(m, R"(linformer_batch_size_bucket{endpoint="predict",le="1"})"), -1) << m;
}

TEST(ServeServer, AFailingTextFailsOnlyItsOwnRequest) {
  ServerOptions o = test_options();
  o.batcher.max_wait_ms = 50;
  LiveServer s(o, 10ms);
  Got bad, good;
  std::thread t1([&] { bad = got(s.client().Post("/v1/classify", R"({"text": "bad"})", "application/json")); });
  std::thread t2([&] { good = got(s.client().Post("/v1/classify", R"({"text": "good"})", "application/json")); });
  t1.join();
  t2.join();
  expect_error(bad, 400, "the fake model refuses 'bad'");
  EXPECT_EQ(good.status, 200) << good.body;
}

TEST(ServeServer, AFullQueueIs503AndASlowAnswer504) {
  ServerOptions o = test_options();
  o.batcher.max_batch = 1;
  o.batcher.max_queue = 2;
  o.timeout_ms = 150;
  LiveServer s(o, 400ms);
  std::vector<Got> results(6);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < results.size(); ++i)
    clients.emplace_back([&, i] { results[i] = got(s.client().Post("/v1/classify", R"({"text": "x"})", "application/json")); });
  for (std::thread& t : clients) t.join();
  int full = 0, timed_out = 0;
  for (const Got& r : results) {
    if (r.status == 503) {
      expect_error(r, 503, "--max-queue");
      ++full;
    } else {
      expect_error(r, 504, "longer than 150 ms (--timeout-ms)");
      ++timed_out;
    }
  }
  EXPECT_GE(full, 1);
  EXPECT_GE(timed_out, 2);
}

// A client that opens a connection and sends half a request is dropped after the read timeout; the
// others are served meanwhile.
TEST(ServeServer, ASlowClientIsDroppedAfterTheReadTimeout) {
  LiveServer s(test_options());
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(s.port()));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string partial = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"te";
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), 0), ssize_t(partial.size()));
  auto ok = s.client().Post("/v1/predict", R"({"text": "_"})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  // The server's read timeout is 1 s: it answers 400 and closes after its 2 s keep-alive wait, well
  // before 10 s.
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto start = std::chrono::steady_clock::now();
  char buf[4096];
  ssize_t got;
  while ((got = ::recv(fd, buf, sizeof buf, 0)) > 0) {
  }
  EXPECT_EQ(got, 0) << "the server did not close the connection";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s);
  ::close(fd);
}

TEST(ServeServer, StopFinishesTheRequestsInFlight) {
  auto s = std::make_unique<LiveServer>(test_options(), 300ms);
  const int port = s->port();
  Got r;
  std::thread client([&] { r = got(s->client().Post("/v1/classify", R"({"text": "abc"})", "application/json")); });
  std::this_thread::sleep_for(100ms);  // the request is in the backend
  s->server().stop();
  client.join();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["result"]["label"], 3);
  s.reset();  // joins run(), which returned after stop()
  httplib::Client late("127.0.0.1", port);  // nothing listens any more
  EXPECT_FALSE(late.Get("/health"));
}

TEST(ServeServer, APortInUseIsAnIoError) {
  LiveServer s(test_options());
  ServerOptions o = test_options();
  o.port = s.port();
  Server second([] { return std::make_unique<FakeBackend>(0ms); }, o);
  EXPECT_THROW(second.bind(), IoError);
}

}  // namespace
}  // namespace lf::serve
