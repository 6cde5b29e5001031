// Selection quality on realistic attention tensors (the tinylm-qkv layout, see
// bench/qkv_layer.hpp), through the public C ABI only. For each build order, layer, K and
// selector kind, in the decode setting (a query at position p always keeps the window
// (p - W, p] and the sinks, and chooses K more keys among the rest; one sa_select call per
// query; the orders past `all` select as each query's key arrives, bench/decode_selection.hpp):
//   recall    share of the exact selector's K keys the selector also chose
//   mass      softmax probability of the chosen keys (window included) over every key the
//             query sees, in double from the data; mean over queries and query heads
//   dmass     mass minus the exact selector's mass
//   rel_err   ||o - o_dense|| / ||o_dense||: sa_attend over the chosen keys against dense
//             attention computed in double
//   select    time of all sa_select calls per query, and relative to exact in the same run
//   build     sa_index_create + sa_index_append over the keys up to the latest query
//   short     lists holding fewer than min(K, choosable keys) scored keys
//   short_by  (exact mass - mass) / exact mass, against the kind's bar (DESIGN.md section 7,
//             selection_quality.hpp mass_bar); with --gate the exit status is 1 when a row
//             misses its bar
// The fraction of keys a selector touches is not reported: the C ABI does not expose it.
// Kinds this library does not build print "unsupported" (sa_index_create returns
// SA_ERR_UNSUPPORTED), so the same command measures them once they exist.
//
//   build/bench/quality_report                       tests/data: every kind, its layers, K 64 128 256
//   build/bench/quality_report --data DIR --layers 0,1,3,5,7    a full data set (q{L}/k{L}/v{L}.npy)
//   build/bench/quality_report --kinds exact --k 128 --tsv
//   build/bench/quality_report --order all,decode,prompt+decode --weights W.safetensors --gate
//   build/bench/quality_report --cut tests/data --layers 3 --cut-tokens 1024 --cut-queries 256
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "decode_selection.hpp"
#include "npy.hpp"
#include "qkv_layer.hpp"
#include "reference_attention.hpp"
#include "selection_quality.hpp"
#include "sparseattn.h"

namespace {

using namespace quality;

struct Options {
  std::string data = "tests/data";  // the repository's fixture, from the repository root
  std::vector<std::string> kinds;
  std::vector<int> layers;  // empty: every layer with a q{L}.npy in the data directory
  std::vector<int> ks = {64, 128, 256};
  int64_t queries = 64;
  int64_t range_lo = -1, range_hi = -1;  // -1: the last quarter of the tokens
  DecodeSetting setting;
  std::vector<BuildOrder> orders = {BuildOrder::all};
  std::string weights;  // learned and indexer kinds: a safetensors file (tools/learned_fit)
  int64_t rescore = -1;  // learned and indexer: learned.rescore (-1: the default)
  bool gate = false;
  int threads = 1;
  int repeat = 1;
  bool tsv = false;
  std::string cut_dir;
  int64_t cut_tokens = 1024, cut_queries = 256;
};

const char kUsage[] =
    "usage: quality_report [options]\n"
    "  --data DIR          q{L}.npy, k{L}.npy, v{L}.npy (default tests/data)\n"
    "  --kinds A,B,...     selector kinds (default: all, learned and indexer with --weights;\n"
    "                      exact always runs, as the baseline)\n"
    "  --weights FILE      safetensors weights of the learned and indexer kinds (tools/learned_fit),\n"
    "                      with tensors of every measured layer\n"
    "  --order O,...       build orders: all (one append), decode (one key per append),\n"
    "                      prompt+decode (one append up to --prompt, then one key per append)\n"
    "                      (default all)\n"
    "  --prompt N          prompt+decode: keys in the first append (default: up to the first query)\n"
    "  --rescore R         learned and indexer kinds: learned.rescore (default: the library's,\n"
    "                      12; 0: one stage)\n"
    "  --gate              exit status 1 when a kind misses its mass bar in any row\n"
    "  --layers L,...      layers (default: every L with a q{L}.npy in DIR)\n"
    "  --k K,...           top-K values beyond window and sinks (default 64,128,256)\n"
    "  --queries N         query positions per layer, evenly spread over the range (default 64)\n"
    "  --range LO:HI       query positions in [LO, HI) (default: the last quarter of the tokens)\n"
    "  --window W          recent keys always kept (default 64)\n"
    "  --sinks S           first keys always kept (default 0)\n"
    "  --per-query-head    one list per query head (default: per KV head, shared by its group)\n"
    "  --threads T         context threads; 0: all cores (default 1: timings\n"
    "                      least disturbed by other load)\n"
    "  --repeat R          timed passes over the queries, the best kept (default 1)\n"
    "  --tsv               tab-separated rows only (a header line, then one row per result)\n"
    "  --cut DIR           write a cut of the layers to DIR instead of measuring: keys and values\n"
    "                      of the first --cut-tokens positions (default 1024) and the queries of\n"
    "                      the last --cut-queries of them (default 256)\n";

sa_index_options with_rescore(sa_index_options opt, int64_t rescore) {
  if (rescore >= 0) opt.learned.rescore = rescore;
  return opt;
}

[[noreturn]] void usage_error(const std::string &why) {
  std::fprintf(stderr, "quality_report: %s\n%s", why.c_str(), kUsage);
  std::exit(2);
}

int64_t parse_int(const std::string &s, const char *what) {
  char *end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0) usage_error(std::string(what) + ": '" + s + "' is not an integer");
  return v;
}

std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);) out.push_back(part);
  return out;
}

template <class T>
std::vector<T> int_list(const std::string &s, const char *what, int64_t lo, int64_t hi) {
  std::vector<T> out;
  for (const std::string &p : split(s, ',')) {
    const int64_t v = parse_int(p, what);
    if (v < lo || v > hi) usage_error(std::string(what) + ": " + p + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    out.push_back(T(v));
  }
  if (out.empty()) usage_error(std::string(what) + ": empty list");
  return out;
}

Options parse_args(int argc, char **argv) {
  Options o;
  bool kinds_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--data") {
      o.data = value();
    } else if (a == "--kinds") {
      o.kinds = split(value(), ',');
      kinds_given = true;
      for (const std::string &k : o.kinds)
        if (!find_selector_kind(k)) {
          std::string names;
          for (const SelectorKind &s : all_selector_kinds()) names += " " + s.name;
          usage_error("--kinds: unknown kind '" + k + "' (known:" + names + ")");
        }
    } else if (a == "--weights") {
      o.weights = value();
    } else if (a == "--order") {
      o.orders.clear();
      for (const std::string &name : split(value(), ',')) {
        BuildOrder order;
        if (!parse_order(name, &order)) usage_error("--order: unknown order '" + name + "' (all, decode, prompt+decode)");
        o.orders.push_back(order);
      }
      if (o.orders.empty()) usage_error("--order: empty list");
    } else if (a == "--prompt") {
      o.setting.prompt = parse_int(value(), "--prompt");
      if (o.setting.prompt < 0) usage_error("--prompt must be >= 0");
    } else if (a == "--gate") {
      o.gate = true;
    } else if (a == "--layers") {
      o.layers = int_list<int>(value(), "--layers", 0, 1 << 20);
    } else if (a == "--k") {
      o.ks = int_list<int>(value(), "--k", 1, 1 << 24);
    } else if (a == "--queries") {
      o.queries = parse_int(value(), "--queries");
      if (o.queries < 1) usage_error("--queries must be >= 1");
    } else if (a == "--range") {
      const std::vector<std::string> r = split(value(), ':');
      if (r.size() != 2) usage_error("--range expects LO:HI");
      o.range_lo = parse_int(r[0], "--range");
      o.range_hi = parse_int(r[1], "--range");
      if (o.range_lo < 0 || o.range_hi <= o.range_lo) usage_error("--range: expected 0 <= LO < HI");
    } else if (a == "--window") {
      o.setting.window = int32_t(int_list<int>(value(), "--window", 0, 1 << 24)[0]);
    } else if (a == "--sinks") {
      o.setting.sinks = int32_t(int_list<int>(value(), "--sinks", 0, 1 << 24)[0]);
    } else if (a == "--rescore") {
      o.rescore = int_list<int64_t>(value(), "--rescore", 0, 65536).at(0);
    } else if (a == "--per-query-head") {
      o.setting.per_query_head = true;
    } else if (a == "--threads") {
      o.threads = int_list<int>(value(), "--threads", 0, 4096)[0];
    } else if (a == "--repeat") {
      o.repeat = int_list<int>(value(), "--repeat", 1, 1000)[0];
    } else if (a == "--tsv") {
      o.tsv = true;
    } else if (a == "--cut") {
      o.cut_dir = value();
    } else if (a == "--cut-tokens") {
      o.cut_tokens = parse_int(value(), "--cut-tokens");
    } else if (a == "--cut-queries") {
      o.cut_queries = parse_int(value(), "--cut-queries");
    } else {
      usage_error("unknown option '" + a + "'");
    }
  }
  if (!kinds_given)
    for (const SelectorKind &k : all_selector_kinds())
      if (!k.needs_weights || !o.weights.empty()) o.kinds.push_back(k.name);
  for (const std::string &k : o.kinds)
    if (find_selector_kind(k)->needs_weights && o.weights.empty())
      usage_error("--kinds: " + k + " needs --weights FILE (tools/learned_fit writes one)");
  if (o.layers.empty()) {
    for (int l = 0; l < 1024; ++l)
      if (std::filesystem::exists(o.data + "/q" + std::to_string(l) + ".npy")) o.layers.push_back(l);
    if (o.layers.empty()) usage_error("no q{L}.npy in --data " + o.data);
  }
  // exact is the baseline of every other row: always first.
  std::vector<std::string> kinds = {"exact"};
  for (const std::string &k : o.kinds)
    if (k != "exact") kinds.push_back(k);
  o.kinds = kinds;
  return o;
}

int cut(const Options &o) {
  std::filesystem::create_directories(o.cut_dir);
  for (int l : o.layers) {
    const QkvLayer src = load_layer(o.data, l);
    const QkvLayer part = cut_layer(src, o.cut_tokens, o.cut_queries);
    save_layer(o.cut_dir, part);
    std::printf("layer %d: k, v [%lld, %lld, %lld] and q [%lld, %lld, %lld] (positions %lld..%lld) -> %s\n", l,
                (long long)part.tokens, (long long)part.hkv, (long long)part.d, (long long)part.q.shape[0],
                (long long)part.hq, (long long)part.d, (long long)part.first_query, (long long)part.tokens - 1,
                o.cut_dir.c_str());
  }
  return 0;
}

struct Row {
  std::string order;
  int layer = 0;
  std::string kind;
  int k = 0;
  std::string status;  // ok, unsupported, error, invalid
  std::string message;
  SelectionScores scores;
  double exact_mass = 0;
  double select_us = 0;  // per query
  double vs_exact = 0;
  double build_ms = 0;
  int64_t short_lists = 0;
  bool meets_bar() const {
    const double bar = mass_bar(kind);
    return status == "ok" && (bar < 0 || relative_shortfall(scores.mass, exact_mass) <= bar + 1e-12);
  }
  // The last column: the shortfall against the bar.
  std::string verdict() const {
    const double bar = mass_bar(kind);
    if (bar < 0) return "(no bar)";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s %.2f%%", meets_bar() ? "ok  " : "FAIL", 100 * bar);
    return buf;
  }
};

void print_tsv_header() {
  std::printf("order\tlayer\tkind\tk\tstatus\trecall\tmass\tmass_minus_exact\trel_err\tselect_us_per_query\tselect_vs_exact\tbuild_ms\tshort_lists\tshortfall\tbar\n");
}

void print_tsv(const Row &r, const std::string &layer) {
  if (r.status != "ok") {
    std::printf("%s\t%s\t%s\t%d\t%s\t\t\t\t\t\t\t\t\t\t%g\n", r.order.c_str(), layer.c_str(), r.kind.c_str(), r.k,
                r.status.c_str(), mass_bar(r.kind));
    return;
  }
  std::printf("%s\t%s\t%s\t%d\tok\t%.4f\t%.4f\t%+.4f\t%.4f\t%.2f\t%.3f\t%.2f\t%lld\t%.5f\t%g\n", r.order.c_str(),
              layer.c_str(), r.kind.c_str(), r.k, r.scores.recall, r.scores.mass, r.scores.mass - r.exact_mass,
              r.scores.rel_err, r.select_us, r.vs_exact, r.build_ms, (long long)r.short_lists,
              relative_shortfall(r.scores.mass, r.exact_mass), mass_bar(r.kind));
}

void print_table_header() {
  std::printf("%-13s %-5s %-13s %4s %6s %7s %8s %8s %9s %8s %8s %6s %8s  %s\n", "order", "layer", "kind", "K", "recall",
              "mass", "dmass", "rel_err", "select_us", "vs_exact", "build_ms", "short", "short_by", "bar");
}

void print_table(const Row &r, const std::string &layer) {
  if (r.status != "ok") {
    std::printf("%-13s %-5s %-13s %4d %s%s%s\n", r.order.c_str(), layer.c_str(), r.kind.c_str(), r.k, r.status.c_str(),
                r.message.empty() ? "" : ": ", r.message.c_str());
    return;
  }
  std::printf("%-13s %-5s %-13s %4d %6.3f %7.4f %+8.4f %8.4f %9.1f %7.2fx %8.1f %6lld %7.2f%%  %s\n", r.order.c_str(),
              layer.c_str(), r.kind.c_str(), r.k, r.scores.recall, r.scores.mass, r.scores.mass - r.exact_mass,
              r.scores.rel_err, r.select_us, r.vs_exact, r.build_ms, (long long)r.short_lists,
              100 * relative_shortfall(r.scores.mass, r.exact_mass), r.verdict().c_str());
}

// One selector kind on one layer at one K, scored against the exact selection.
Row measure(sa_context *ctx, const Options &o, const QkvLayer &layer, const ReferenceAttention &ref,
            const std::vector<int64_t> &positions, const SelectorKind &kind, int k, const DecodeSelection &sel,
            const DecodeSelection &exact) {
  Row r;
  r.order = order_name(o.setting.order);
  r.layer = layer.layer;
  r.kind = kind.name;
  r.k = k;
  if (!sel.ok()) {
    r.status = sel.status == SA_ERR_UNSUPPORTED ? "unsupported" : "error";
    r.message = sel.status == SA_ERR_UNSUPPORTED ? "" : sel.error;
    return r;
  }
  const std::string invalid = check_selection(sel, positions, k, o.setting);
  if (!invalid.empty()) {
    r.status = "invalid";
    r.message = invalid;
    return r;
  }
  std::vector<float> out;
  std::string err;
  const sa_status st = attend_selection(ctx, layer, positions, sel, o.setting, &out, &err);
  if (st != SA_OK) {
    r.status = st == SA_ERR_UNSUPPORTED ? "unsupported" : "error";
    r.message = err;
    return r;
  }
  r.status = "ok";
  r.short_lists = short_lists(sel, positions, k, o.setting);
  r.scores = score_selection(ref, sel, exact, &out, o.setting);
  r.select_us = sel.select_seconds * 1e6 / double(positions.size());
  r.vs_exact = exact.select_seconds > 0 ? sel.select_seconds / exact.select_seconds : NAN;
  r.build_ms = sel.build_seconds * 1e3;
  return r;
}

int report(Options o) {
  sa_context_options co = sa_context_options_default();
  co.threads = o.threads;
  sa_context *raw = nullptr;
  if (sa_context_create(&co, &raw) != SA_OK) {
    std::fprintf(stderr, "quality_report: sa_context_create: %s\n", sa_last_error());
    return 1;
  }
  std::unique_ptr<sa_context, void (*)(sa_context *)> ctx(raw, [](sa_context *c) { sa_context_destroy(&c); });

  if (!std::filesystem::is_directory(o.data))
    throw std::runtime_error("data directory " + o.data + " not found (pass --data DIR)");
  std::vector<Row> rows;
  bool header_done = false;
  for (BuildOrder order : o.orders)
  for (int l : o.layers) {
    o.setting.order = order;
    const QkvLayer layer = load_layer(o.data, l);
    const int64_t lo = o.range_lo >= 0 ? o.range_lo : layer.tokens - layer.tokens / 4;
    const int64_t hi = o.range_hi >= 0 ? o.range_hi : layer.tokens;
    if (lo < layer.first_query || hi > layer.tokens)
      throw std::runtime_error("layer " + std::to_string(l) + " has queries at positions [" + std::to_string(layer.first_query) +
                  ", " + std::to_string(layer.tokens) + "); --range " + std::to_string(lo) + ":" + std::to_string(hi) +
                  " is outside");
    const std::vector<int64_t> positions = spread_positions(lo, hi, std::min(o.queries, hi - lo));
    if (!header_done) {
      header_done = true;
      if (o.tsv) {
        print_tsv_header();
      } else {
        std::printf("sparseattn %s quality report: %s\n", sa_version_string(), o.data.c_str());
        std::printf("decode: %zu queries per layer at positions %lld..%lld, window %d, sinks %d, lists per %s\n",
                    positions.size(), (long long)positions.front(), (long long)positions.back(), o.setting.window,
                    o.setting.sinks, o.setting.per_query_head ? "query head" : "KV head");
        std::string orders;
        for (BuildOrder b : o.orders) orders += std::string(orders.empty() ? "" : ", ") + order_name(b);
        std::printf("build orders: %s (prompt+decode: the prompt is keys 0..%lld)\n", orders.c_str(),
                    (long long)(o.setting.prompt >= 0 ? o.setting.prompt : positions.front()) - 1);
        if (!o.weights.empty()) std::printf("learned/indexer weights: %s\n", o.weights.c_str());
        std::printf("short: lists with fewer than min(K, choosable) keys; short_by: (exact mass - mass) / exact "
                    "mass against the bar\n");
        std::printf("context: %d threads, isa %s; select_us: per query, vs_exact: select time / exact's\n\n",
                    int(sa_context_threads(ctx.get())), sa_isa_name(sa_context_isa(ctx.get())));
        print_table_header();
      }
    }
    const ReferenceAttention ref(layer, positions, o.setting.scale_for(layer.d));
    for (int k : o.ks) {
      const SelectorKind &exact_kind = *find_selector_kind("exact");
      const DecodeSelection exact =
          select_decode(ctx.get(), exact_kind.index_options(o.weights, l), layer, positions, k, o.setting, o.repeat);
      double exact_mass = 0;
      for (const std::string &name : o.kinds) {
        const SelectorKind &kind = *find_selector_kind(name);
        const DecodeSelection sel =
            name == "exact" ? exact
                            : select_decode(ctx.get(), with_rescore(kind.index_options(o.weights, l), o.rescore), layer, positions, k, o.setting,
                                            o.repeat);
        Row r = measure(ctx.get(), o, layer, ref, positions, kind, k, sel, exact);
        if (name == "exact") {
          if (r.status != "ok") {  // no baseline: nothing else can be scored
            std::fprintf(stderr, "quality_report: the exact selector failed on layer %d, K %d, order %s: %s %s\n", l,
                         k, order_name(order), r.status.c_str(), r.message.c_str());
            return 1;
          }
          exact_mass = r.scores.mass;
        }
        r.exact_mass = exact_mass;
        if (o.tsv) print_tsv(r, std::to_string(l));
        else print_table(r, std::to_string(l));
        std::fflush(stdout);
        rows.push_back(r);
      }
    }
  }

  // Means over the layers past 0 (layer 0 is diffuse: a runtime keeps it dense).
  std::string mean_layers;
  for (int l : o.layers)
    if (l != 0) mean_layers += (mean_layers.empty() ? "" : ",") + std::to_string(l);
  if (!mean_layers.empty() && mean_layers.find(',') != std::string::npos) {
    if (!o.tsv) std::printf("\nmean over layers %s:\n", mean_layers.c_str());
    for (BuildOrder order : o.orders)
    for (int k : o.ks)
      for (const std::string &name : o.kinds) {
        Row m;
        m.order = order_name(order);
        m.kind = name;
        m.k = k;
        m.status = "ok";
        int n = 0;
        for (const Row &r : rows) {
          if (r.layer == 0 || r.kind != name || r.k != k || r.order != m.order) continue;
          if (r.status != "ok") {
            m.status = r.status;
            m.message.clear();
            break;
          }
          ++n;
          m.scores.recall += r.scores.recall;
          m.scores.mass += r.scores.mass;
          m.scores.rel_err += r.scores.rel_err;
          m.exact_mass += r.exact_mass;
          m.select_us += r.select_us;
          m.vs_exact += r.vs_exact;
          m.build_ms += r.build_ms;
          m.short_lists += r.short_lists;
        }
        if (m.status == "ok" && n > 0) {
          for (double *v : {&m.scores.recall, &m.scores.mass, &m.scores.rel_err, &m.exact_mass, &m.select_us,
                            &m.vs_exact, &m.build_ms})
            *v /= n;
        }
        if (o.tsv) print_tsv(m, "mean");
        else print_table(m, "mean");
      }
  }
  int failed = 0;
  for (const Row &r : rows)
    if (r.status == "error" || r.status == "invalid") return 1;
    else failed += !r.meets_bar() && r.status != "unsupported";
  if (o.gate && !o.tsv) std::printf("\ngate: %d of %zu rows miss their bar\n", failed, rows.size());
  return o.gate && failed ? 1 : 0;
}

}  // namespace

int main(int argc, char **argv) {
  const Options o = parse_args(argc, argv);
  try {
    return o.cut_dir.empty() ? report(o) : cut(o);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "quality_report: %s\n", e.what());
    return 1;
  }
}
