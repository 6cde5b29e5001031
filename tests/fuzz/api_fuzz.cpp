// One scenario from one byte string: build, grow, select, attend (plain and paged, batched
// selection), then bad inputs. Every check throws CheckFailed; the first one ends the scenario.
#include "api_fuzz.hpp"

#include <cstdio>
#include <exception>

#include "fuzz_scenario.hpp"

namespace apifuzz {

void Scenario::expect_index_unchanged(FuzzIndex &fx, SelectCase &probe, const std::vector<double> &before) {
  int64_t size = -1;
  report_.require_ok(sa_index_size(fx.ix(), &size), "sa_index_size");
  report_.require(size == fx.size(), "a refused call changed the index's size to ", size, " (was ", fx.size(), ")");
  report_.require_ok(probe.run(fx.ix()), "sa_select (probe)");
  report_.require(probe.out.values() == before, "a refused call changed the index's selection");
}

void Scenario::run() {
  make_contexts();
  make_index(main_, true);
  append(main_);  // the prompt
  grow(main_, in_.range(0, 8));

  for (int64_t n = in_.range(1, 3); n > 0; --n) {
    SelectCase c = make_select_case(main_);
    check_select(main_, c);
    if (in_.chance(70)) {
      AttendCase a = make_attend_case(&main_, &c);
      check_attend(a);
    }
  }
  if (in_.chance(40)) {
    AttendCase a = make_attend_case(nullptr, nullptr);
    check_attend(a);
  }

  std::vector<FuzzIndex *> seqs = {&main_};
  std::unique_ptr<PagedCase> paged;
  if (in_.chance(50)) {
    for (int64_t b = in_.range(0, 3); b > 0; --b) {
      others_.push_back(std::make_unique<FuzzIndex>());
      make_index(*others_.back(), false);
      grow(*others_.back(), in_.range(0, 3));
      seqs.push_back(others_.back().get());
    }
    if (in_.chance(30)) std::swap(seqs.front(), seqs.back());  // the main index need not come first
    paged = std::make_unique<PagedCase>(make_paged_case(seqs));
    sat::Tensor physical;
    const bool have = in_.chance(70) && check_select_batch(seqs, *paged, &physical);
    check_attend_paged(*paged, have ? &physical : nullptr);
  }

  if (in_.chance(60)) {
    SelectCase probe = make_select_case(main_);
    report_.say("probe selection: ", probe.words);
    report_.require_ok(probe.run(main_.ix()), "sa_select (probe)");
    const std::vector<double> before = probe.out.values();
    for (int64_t n = in_.range(1, 3); n > 0; --n) {
      switch (in_.range(0, paged ? 9 : 7)) {
        case 0: bad_select(main_); break;
        case 1: bad_attend(); break;
        case 2: bad_append(main_); break;
        case 3: bad_update(main_); break;
        case 4: bad_truncate_or_clone(main_); break;
        case 5: bad_update_heads(main_); break;
        case 6: bad_head_attend(main_); break;
        case 7: bad_evict(main_); break;
        case 8: bad_attend_paged(*paged); break;
        default: bad_select_batch(seqs, *paged); break;
      }
      expect_index_unchanged(main_, probe, before);
    }
  }
}

Outcome run_scenario(const uint8_t *data, size_t size) {
  Outcome o;
  ByteSource in(data, size);
  Report report;
  try {
    Scenario s(in, report);
    s.run();
  } catch (const CheckFailed &f) {
    o.failed = true;
    o.failure = f.what;
  } catch (const std::exception &e) {
    o.failed = true;
    o.failure = std::string("the fuzzer itself threw: ") + e.what();
  }
  o.words = report.words();
  return o;
}

int run_one(const uint8_t *data, size_t size) {
  const Outcome o = run_scenario(data, size);
  if (!o.failed) return 0;
  std::fprintf(stderr, "api_fuzz: scenario\n%sFAILED: %s\n", o.words.c_str(), o.failure.c_str());
  return 1;
}

}  // namespace apifuzz
