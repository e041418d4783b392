// An exclusive advisory lock on a file (flock(2)), held as long as the object lives. The kernel drops
// it when the holder's descriptor closes, so a killed process leaves no stale lock behind; the file
// itself stays (removing it would let a second process lock a fresh inode while a third still holds
// the old one). The holder's pid is written into the file, for the message of whoever is refused.
#pragma once
#include <sys/types.h>

#include <string>

namespace lf {

class FileLock {
 public:
  FileLock() = default;
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  // Creates `path` if needed and locks it without waiting. On success the file holds our pid; when
  // another process holds it, an unlocked object and *holder = the pid written in the file (0 if
  // unreadable). lf::IoError when the file cannot be created or locked for another reason.
  static FileLock try_lock(const std::string& path, pid_t* holder);

  bool locked() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace lf
