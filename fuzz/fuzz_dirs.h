// Scratch directories for fuzzers that write trees: a parent with the target tree
// and a sentinel beside it. Anything appearing in the sentinel, or next to the tree,
// means a write escaped, and a device node in the tree means one was created: the
// fuzzer aborts.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"

namespace faas::fuzz {

class ScratchDirs {
 public:
  ScratchDirs() {
    char tmpl[] = "/tmp/faas-fuzz-XXXXXX";
    parent_ = ::mkdtemp(tmpl);
    for (const char* d : {"/tree", "/work", "/sentinel"}) ::mkdir((parent_ + d).c_str(), 0755);
  }
  std::string tree() const { return parent_ + "/tree"; }
  std::string work() const { return parent_ + "/work"; }

  // Empties tree and work, and aborts if anything escaped or a device node was made.
  void ResetAndCheck() {
    if (::nftw(tree().c_str(), IsDevice, 16, FTW_PHYS) == 1) Die("a device node was created");
    for (const char* d : {"/tree", "/work"}) {
      UniqueFd fd(::open((parent_ + d).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!fd || !RemoveTreeContents(fd.get()).ok()) Die("cannot reset scratch dir");
    }
    if (Entries(parent_ + "/sentinel") != 0 || Entries(parent_) != 3)
      Die("a write escaped the tree");
  }

 private:
  static size_t Entries(const std::string& dir) {
    size_t n = 0;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return 0;
    while (dirent* e = ::readdir(d))
      n += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
    ::closedir(d);
    return n;
  }
  static int IsDevice(const char*, const struct stat* st, int, struct FTW*) {
    return S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode);
  }
  [[noreturn]] static void Die(const char* why) {
    std::fprintf(stderr, "fuzz: %s\n", why);
    std::abort();
  }
  std::string parent_;
};

// The input as a file descriptor (memfd), positioned at its start.
inline UniqueFd MemFd(const uint8_t* data, size_t size) {
  UniqueFd fd(::memfd_create("fuzz-input", MFD_CLOEXEC));
  (void)WriteAll(fd.get(), std::string_view(reinterpret_cast<const char*>(data), size));
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

}  // namespace faas::fuzz
