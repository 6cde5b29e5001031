// api_fuzz_run: the API round-trip fuzzer without libFuzzer, bounded for CI. Iteration i of
// seed s runs the scenario of a byte string that depends on (s, i) only, so a failure printed
// with its seed and iteration replays with --replay-iteration; files given as arguments (inputs
// libFuzzer saved) are replayed as they are.
//
//   api_fuzz_run [--iterations N] [--seed S] [--max-seconds T] [--keep-going]
//   api_fuzz_run --seed S --replay-iteration I [--write-input FILE]   (prints the scenario)
//   api_fuzz_run FILE...
// --check-known-bugs: check the documented behaviour where the fuzzer steps around a known
// library bug (fuzz_known_bugs.hpp), e.g. to confirm a fix.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "api_fuzz.hpp"
#include "fuzz_known_bugs.hpp"

// Called by ASan/UBSan before they end the process (weak: absent without a sanitizer).
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace {

// What to print when the process dies inside a scenario (a sanitizer report, a crash, an abort):
// the scenario's words are lost then, but its seed and iteration replay it.
char g_running[256] = "";

void print_running() {
  if (g_running[0] != '\0') {
    const ssize_t ignored = write(2, g_running, strlen(g_running));
    (void)ignored;
  }
}

void on_fatal_signal(int sig) {
  print_running();
  signal(sig, SIG_DFL);
  raise(sig);
}

void set_running(const std::string &line) {
  std::snprintf(g_running, sizeof g_running, "%s", line.c_str());
}

// The input of iteration i: 16 to ~2 KiB of bytes from a generator seeded by (seed, i).
std::vector<uint8_t> input_of(uint64_t seed, uint64_t iteration) {
  std::mt19937_64 gen(seed * 0x9E3779B97F4A7C15ULL ^ (iteration + 0x632BE59BD9B4E019ULL));
  std::vector<uint8_t> bytes(16 + gen() % 2048);
  for (uint8_t &b : bytes) b = uint8_t(gen());
  return bytes;
}

void print_failure(const apifuzz::Outcome &o, const std::string &where, const std::string &replay) {
  std::fprintf(stderr, "api_fuzz: FAILED %s\nreplay: %s\nscenario:\n%sfailure: %s\n", where.c_str(), replay.c_str(),
               o.words.c_str(), o.failure.c_str());
}

int usage(const char *argv0) {
  std::fprintf(stderr,
               "usage: %s [--iterations N] [--seed S] [--max-seconds T] [--keep-going] [--check-known-bugs]\n"
               "       %s --seed S --replay-iteration I [--write-input FILE]\n"
               "       %s FILE...\n",
               argv0, argv0, argv0);
  return 2;
}

}  // namespace

int main(int argc, char **argv) {
  uint64_t iterations = 2000, seed = 1;
  double max_seconds = 0;
  long long replay = -1;
  bool keep_going = false;
  std::string write_input;
  std::vector<std::string> files;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    auto value = [&]() -> const char * { return a + 1 < argc ? argv[++a] : nullptr; };
    const char *v = nullptr;
    if (arg == "--iterations" && (v = value())) iterations = std::strtoull(v, nullptr, 10);
    else if (arg == "--seed" && (v = value())) seed = std::strtoull(v, nullptr, 10);
    else if (arg == "--max-seconds" && (v = value())) max_seconds = std::strtod(v, nullptr);
    else if (arg == "--replay-iteration" && (v = value())) replay = std::strtoll(v, nullptr, 10);
    else if (arg == "--write-input" && (v = value())) write_input = v;
    else if (arg == "--keep-going") keep_going = true;
    else if (arg == "--check-known-bugs") apifuzz::check_known_bugs() = true;
    else if (!arg.empty() && arg[0] != '-') files.push_back(arg);
    else return usage(argv[0]);
  }

  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(print_running);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) signal(sig, on_fatal_signal);

  if (!files.empty()) {
    int failed = 0;
    for (const std::string &f : files) {
      std::ifstream in(f, std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "cannot read %s\n", f.c_str());
        return 2;
      }
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      set_running("api_fuzz: died in the scenario of " + f + "\n");
      const apifuzz::Outcome o = apifuzz::run_scenario(bytes.data(), bytes.size());
      if (o.failed) print_failure(o, "on " + f, std::string(argv[0]) + " " + f), ++failed;
      else std::printf("%s: passed\n%s", f.c_str(), o.words.c_str());
    }
    return failed ? 1 : 0;
  }

  if (replay >= 0) {
    const std::vector<uint8_t> bytes = input_of(seed, uint64_t(replay));
    if (!write_input.empty()) {
      std::ofstream(write_input, std::ios::binary).write(reinterpret_cast<const char *>(bytes.data()), std::streamsize(bytes.size()));
    }
    const apifuzz::Outcome o = apifuzz::run_scenario(bytes.data(), bytes.size());
    std::printf("seed %llu iteration %lld (%zu bytes):\n%s", (unsigned long long)seed, replay, bytes.size(), o.words.c_str());
    if (o.failed) std::printf("FAILED: %s\n", o.failure.c_str());
    else std::printf("passed\n");
    return o.failed ? 1 : 0;
  }

  const auto start = std::chrono::steady_clock::now();
  uint64_t done = 0, failed = 0;
  for (uint64_t i = 0; i < iterations; ++i) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (max_seconds > 0 && elapsed > max_seconds) {
      std::printf("api_fuzz: stopping after %.0f s (--max-seconds)\n", elapsed);
      break;
    }
    const std::vector<uint8_t> bytes = input_of(seed, i);
    set_running("api_fuzz: died at seed " + std::to_string(seed) + " iteration " + std::to_string(i) +
                "; replay: " + argv[0] + " --seed " + std::to_string(seed) + " --replay-iteration " + std::to_string(i) +
                "\n");
    const apifuzz::Outcome o = apifuzz::run_scenario(bytes.data(), bytes.size());
    ++done;
    if (o.failed) {
      ++failed;
      print_failure(o, "at seed " + std::to_string(seed) + " iteration " + std::to_string(i),
                    std::string(argv[0]) + " --seed " + std::to_string(seed) + " --replay-iteration " + std::to_string(i));
      if (!keep_going) break;
    }
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("api_fuzz: seed %llu, %llu scenarios in %.1f s, %llu failed\n", (unsigned long long)seed,
              (unsigned long long)done, elapsed, (unsigned long long)failed);
  return failed ? 1 : 0;
}
