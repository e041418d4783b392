#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "linformer/error.h"

namespace lf {
namespace fs = std::filesystem;

namespace {
constexpr const char* kTmpInfix = ".tmp-";
std::string sys_error(int err) { return std::strerror(err); }
fs::path parent_or_dot(const fs::path& p) { return p.parent_path().empty() ? fs::path(".") : p.parent_path(); }
}  // namespace

void fsync_directory(const std::string& dir, const std::string& context) {
  // Some file systems cannot fsync a directory (EINVAL): nothing more can be done there.
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw IoError(str_cat(context, ": cannot open directory '", dir, "' to sync it: ", sys_error(errno)));
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int e = errno;
    ::close(fd);
    throw IoError(str_cat(context, ": syncing directory '", dir, "' failed: ", sys_error(e)));
  }
  ::close(fd);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  LF_REQUIRE(!path.empty(), "write_file_atomic: the path must not be empty");
  // The counter keeps two threads of one process writing the same path apart.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = str_cat(path, kTmpInfix, ::getpid(), "-", counter++);
  const fs::path dir = parent_or_dot(fs::path(path));
  auto error = [&](const std::string& what, int err) {
    std::string hint;
    if (err == ENOENT) hint = str_cat(" (does the directory '", dir.string(), "' exist?)");
    if (err == EACCES || err == EROFS) hint = str_cat(" (is the directory '", dir.string(), "' writable?)");
    return IoError(str_cat("cannot write '", path, "': ", what, ": ", sys_error(err), hint));
  };

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw error(str_cat("cannot create the temporary file '", tmp, "'"), errno);
  auto abandon = [&](const std::string& what) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw error(what, e);
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) abandon(str_cat("writing '", tmp, "' failed"));
    done += size_t(w);
  }
  if (::fsync(fd) != 0) abandon(str_cat("fsync of '", tmp, "' failed"));
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) abandon(str_cat("closing '", tmp, "' failed"));
  if (::rename(tmp.c_str(), path.c_str()) != 0) abandon(str_cat("renaming '", tmp, "' over the target failed"));
  fsync_directory(dir.string(), str_cat("'", path, "' was written but is not yet durable"));
}

}  // namespace lf
