// Runs the fuzz entry point without libFuzzer: on every file given (or every file of a given
// directory), on each of its prefixes and on single-byte mutations at every position. A bug
// shows as an abort or a sanitizer report; the exit status is 0 otherwise.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace {

long long g_runs = 0;

void run(const std::string &bytes) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());  // exact size: ASan sees overreads
  LLVMFuzzerTestOneInput(copy.data(), copy.size());
  ++g_runs;
}

void exercise(const std::string &bytes) {
  run(bytes);
  for (size_t n = 0; n < bytes.size(); ++n) run(bytes.substr(0, n));
  const unsigned char replacements[] = {0x00, 0xff, 0x7f, '"', '{', '[', '9', '-', ' '};
  for (size_t i = 0; i < bytes.size(); ++i)
    for (unsigned char r : replacements) {
      if (static_cast<unsigned char>(bytes[i]) == r) continue;
      std::string m = bytes;
      m[i] = char(r);
      run(m);
    }
}

bool read_file(const std::string &path, std::string *out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  int files = 0;
  for (int a = 1; a < argc; ++a) {
    std::vector<std::string> paths;
    struct stat st;
    if (stat(argv[a], &st) == 0 && S_ISDIR(st.st_mode)) {
      if (DIR *d = opendir(argv[a])) {
        while (dirent *e = readdir(d))
          if (e->d_name[0] != '.') paths.push_back(std::string(argv[a]) + "/" + e->d_name);
        closedir(d);
      }
    } else {
      paths.push_back(argv[a]);
    }
    for (const std::string &p : paths) {
      std::string bytes;
      if (!read_file(p, &bytes)) {
        std::fprintf(stderr, "cannot read %s\n", p.c_str());
        return 1;
      }
      exercise(bytes);
      ++files;
    }
  }
  if (files == 0) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
    return 1;
  }
  std::printf("%d files, %lld runs of the fuzz entry point\n", files, g_runs);
  return 0;
}
