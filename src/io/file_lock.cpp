#include "io/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "linformer/error.h"

namespace lf {

FileLock::FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

FileLock FileLock::try_lock(const std::string& path, pid_t* holder) {
  *holder = 0;
  // O_CLOEXEC: a child process must not keep the lock alive after we exit.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError(str_cat("cannot open the lock file '", path, "': ", std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      char buf[32] = {};
      const ssize_t r = ::pread(fd, buf, sizeof buf - 1, 0);
      if (r > 0) *holder = pid_t(std::strtol(buf, nullptr, 10));
      ::close(fd);
      return {};
    }
    ::close(fd);
    throw IoError(str_cat("cannot lock '", path, "': ", std::strerror(err)));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  // Best effort: the lock is what excludes; the pid only makes the refusal's message useful.
  if (::ftruncate(fd, 0) == 0 && ::pwrite(fd, pid.data(), pid.size(), 0) == ssize_t(pid.size())) ::fsync(fd);
  FileLock lock;
  lock.fd_ = fd;
  return lock;
}

}  // namespace lf
