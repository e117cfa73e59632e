// Atomic file replacement: the content is written to a temporary file in the target's
// directory, flushed to disk, and renamed over the target, so a reader (or a crash) sees
// either the old file or the complete new one, never a partial write.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string_view>

namespace longnet {

// Calls write(stream) on the temporary file, then renames it to `path`. If `write`
// throws or any write fails, the temporary is removed, `path` is untouched, and Error is
// thrown naming the file.
void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write);

// Convenience: replaces `path` with exactly `content`.
void write_text_atomically(const std::filesystem::path& path, std::string_view content);

}  // namespace longnet
