// Atomic file writes: the bytes go to a temporary file in the target's directory, which is fsynced
// and renamed over the target, and the directory is fsynced, so a reader (or a crash) sees either
// the old file or the complete new one, never a partial write. Used by every file the project saves.
#pragma once
#include <string>
#include <string_view>

namespace lf {

// Throws lf::IoError naming the path (and a hint for a missing or read-only directory); on failure
// no temporary file is left behind and an existing target is untouched.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Makes renames and creations inside `dir` durable; lf::IoError prefixed with `context` on failure.
void fsync_directory(const std::string& dir, const std::string& context);

}  // namespace lf
