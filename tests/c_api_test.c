/* Pure C11 host: links the library, includes only sparseattn.h, and goes through the
 * function table as a dlopen host would. Prints one line per failure; exits nonzero. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sa_build_config.h" /* SA_HAVE_HNSWLIB: whether HNSW is in this build */
#include "sparseattn.h"

static int failures = 0;

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                \
      ++failures;                                                           \
    }                                                                       \
  } while (0)

#define CHECK_OK(api, expr)                                                 \
  do {                                                                      \
    sa_status st_ = (expr);                                                 \
    if (st_ != SA_OK) {                                                     \
      printf("FAIL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,       \
             (api)->status_name(st_), (api)->last_error());                 \
      ++failures;                                                           \
    }                                                                       \
  } while (0)

/* Small deterministic values in [-1, 1). */
static float value(unsigned i) {
  unsigned x = i * 2654435761u + 12345u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return (float)(x % 2000u) / 1000.0f - 1.0f;
}

static sa_tensor tensor3(void *data, sa_dtype dtype, int64_t a, int64_t b, int64_t c) {
  sa_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dtype;
  t.device = SA_DEVICE_CPU;
  t.rank = 3;
  t.shape[0] = a;
  t.shape[1] = b;
  t.shape[2] = c;
  return t; /* strides all 0: contiguous */
}

static void check_table(const sa_api *api) {
  CHECK(api->struct_size >= sizeof(sa_api));
  CHECK(api->abi_version == SA_ABI_VERSION);
  CHECK(api->version && api->version_string && api->last_error && api->status_name && api->isa_name);
  CHECK(api->context_options_default && api->context_create && api->context_destroy);
  CHECK(api->context_isa && api->context_threads);
  CHECK(api->index_options_default && api->index_create && api->index_destroy && api->index_append);
  CHECK(api->index_update && api->index_size && api->select_options_default && api->select);
  CHECK(api->attend_options_default && api->attend && api->evict_options_default && api->cache_evict);
  /* The table points at the exported functions. */
  CHECK(api->attend == sa_attend);
  CHECK(api->select == sa_select);
  CHECK(api->cache_evict == sa_cache_evict);
  CHECK(api->index_truncate == sa_index_truncate && api->index_clone == sa_index_clone);
  CHECK(api->attend_paged == sa_attend_paged);
  CHECK(api->select_batch == sa_select_batch);
  CHECK(api->index_update_heads == sa_index_update_heads);
}

enum { NQ = 2, HQ = 4, HKV = 2, D = 16, NKV = 40, WIDTH = 12 };

static void check_attend(const sa_api *api, sa_context *ctx) {
  static float q[NQ * HQ * D], k[NKV * HKV * D], v[NKV * HKV * D], out[NQ * HQ * D + 8], lse[NQ * HQ];
  sa_tensor tq, tk, tv, tout, tlse;
  sa_attend_options opt = SA_ATTEND_OPTIONS_INIT;
  unsigned i;
  int n, h, d, j;
  double max_err = 0, max_ref = 0;
  for (i = 0; i < NQ * HQ * D; ++i) q[i] = value(i);
  for (i = 0; i < NKV * HKV * D; ++i) k[i] = value(i + 1000), v[i] = value(i + 5000);
  for (i = 0; i < NQ * HQ * D + 8; ++i) out[i] = 12345.0f;
  tq = tensor3(q, SA_DTYPE_F32, NQ, HQ, D);
  tk = tensor3(k, SA_DTYPE_F32, NKV, HKV, D);
  tv = tensor3(v, SA_DTYPE_F32, NKV, HKV, D);
  tout = tensor3(out, SA_DTYPE_F32, NQ, HQ, D);
  memset(&tlse, 0, sizeof tlse);
  tlse.data = lse;
  tlse.dtype = SA_DTYPE_F32;
  tlse.rank = 2;
  tlse.shape[0] = NQ;
  tlse.shape[1] = HQ;
  CHECK_OK(api, api->attend(ctx, &tq, &tk, &tv, NULL, &opt, &tout, &tlse));
  for (n = 0; n < NQ; ++n)
    for (h = 0; h < HQ; ++h) {
      int hk = h / (HQ / HKV);
      double s[NKV], m = -1e300, z = 0;
      for (j = 0; j < NKV; ++j) {
        double dot = 0;
        for (d = 0; d < D; ++d) dot += (double)q[(n * HQ + h) * D + d] * k[(j * HKV + hk) * D + d];
        s[j] = dot / sqrt((double)D);
        if (s[j] > m) m = s[j];
      }
      for (j = 0; j < NKV; ++j) z += (s[j] = exp(s[j] - m));
      for (d = 0; d < D; ++d) {
        double o = 0, e;
        for (j = 0; j < NKV; ++j) o += s[j] / z * v[(j * HKV + hk) * D + d];
        e = fabs(o - out[(n * HQ + h) * D + d]);
        if (e > max_err) max_err = e;
        if (fabs(o) > max_ref) max_ref = fabs(o);
      }
      CHECK(fabs(lse[n * HQ + h] - (m + log(z))) < 1e-4);
    }
  if (!(max_err <= 1e-5 * max_ref)) printf("attend: max error %g (max |ref| %g)\n", max_err, max_ref);
  CHECK(max_err <= 1e-5 * max_ref);
  for (i = NQ * HQ * D; i < NQ * HQ * D + 8; ++i) CHECK(out[i] == 12345.0f); /* nothing past the end */
}

static void check_select(const sa_api *api, sa_context *ctx) {
  static float keys[NKV * HKV * D], q[1 * HQ * D];
  int32_t idx[HKV * WIDTH];
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  sa_index *ix = NULL;
  sa_tensor tk, tq, tidx;
  int64_t size = -1;
  unsigned i;
  int h, w;
  for (i = 0; i < NKV * HKV * D; ++i) keys[i] = value(i + 77);
  for (i = 0; i < HQ * D; ++i) q[i] = value(i + 99);
  io.num_kv_heads = HKV;
  io.head_dim = D;
  io.dtype = SA_DTYPE_F32;
  CHECK_OK(api, api->index_create(ctx, &io, &ix));
  if (!ix) return;
  tk = tensor3(keys, SA_DTYPE_F32, NKV, HKV, D);
  CHECK_OK(api, api->index_append(ix, &tk));
  CHECK_OK(api, api->index_size(ix, &size));
  CHECK(size == NKV);
  so.top_k = 4;
  so.window = 4;
  so.sinks = 2;
  tq = tensor3(q, SA_DTYPE_F32, 1, HQ, D);
  tidx = tensor3(idx, SA_DTYPE_I32, 1, HKV, WIDTH);
  CHECK_OK(api, api->select(ix, &tq, &so, &tidx));
  for (h = 0; h < HKV; ++h) {
    const int32_t *row = idx + h * WIDTH;
    /* 10 slots: sinks 0, 1; window 36..39; four more; ascending; then -1. */
    CHECK(row[0] == 0 && row[1] == 1);
    CHECK(row[6] == 36 && row[7] == 37 && row[8] == 38 && row[9] == 39);
    for (w = 1; w < 10; ++w) CHECK(row[w] > row[w - 1]);
    CHECK(row[10] == -1 && row[11] == -1);
  }
  api->index_destroy(&ix);
  CHECK(ix == NULL);
}

/* Two sequences over one paged cache (5 pages of 8 rows): sequence 0 holds pages 4, 3 (13
 * tokens), sequence 1 pages 0, 2, 1 (20 tokens). Each must equal sa_attend over a contiguous
 * copy of its tokens. */
static void check_paged(const sa_api *api, sa_context *ctx) {
  enum { PAGE = 8, PAGES = NKV / PAGE, MAXP = 3 };
  static float k[NKV * HKV * D], v[NKV * HKV * D], q[2 * HQ * D], out[2 * HQ * D], one[HQ * D];
  static float kb[NKV * HKV * D], vb[NKV * HKV * D];
  int32_t table[2][MAXP] = {{4, 3, -1}, {0, 2, 1}};
  int64_t lens[2] = {13, 20};
  sa_paged_kv kv = SA_PAGED_KV_INIT;
  sa_attend_options opt = SA_ATTEND_OPTIONS_INIT;
  sa_tensor tq, tout;
  unsigned i;
  int b, t;
  for (i = 0; i < NKV * HKV * D; ++i) k[i] = value(i + 3000), v[i] = value(i + 9000);
  for (i = 0; i < 2 * HQ * D; ++i) q[i] = value(i + 400);
  kv.k = tensor3(k, SA_DTYPE_F32, PAGES, PAGE, HKV);
  kv.k.rank = 4;
  kv.k.shape[3] = D;
  kv.v = kv.k;
  kv.v.data = v;
  kv.page_table = tensor3(table, SA_DTYPE_I32, 2, MAXP, 0);
  kv.page_table.rank = 2;
  kv.seq_lens = tensor3(lens, SA_DTYPE_I64, 2, 0, 0);
  kv.seq_lens.rank = 1;
  tq = tensor3(q, SA_DTYPE_F32, 2, HQ, D);
  tout = tensor3(out, SA_DTYPE_F32, 2, HQ, D);
  opt.causal = 1;
  CHECK_OK(api, api->attend_paged(ctx, &tq, NULL, &kv, NULL, &opt, &tout, NULL));
  for (b = 0; b < 2; ++b) {
    sa_tensor tqb = tensor3(q + b * HQ * D, SA_DTYPE_F32, 1, HQ, D), tone = tensor3(one, SA_DTYPE_F32, 1, HQ, D);
    sa_tensor tkb = tensor3(kb, SA_DTYPE_F32, lens[b], HKV, D), tvb = tensor3(vb, SA_DTYPE_F32, lens[b], HKV, D);
    double max_err = 0;
    for (t = 0; t < lens[b]; ++t) {
      int row = table[b][t / PAGE] * PAGE + t % PAGE;
      memcpy(kb + t * HKV * D, k + row * HKV * D, sizeof(float) * HKV * D);
      memcpy(vb + t * HKV * D, v + row * HKV * D, sizeof(float) * HKV * D);
    }
    CHECK_OK(api, api->attend(ctx, &tqb, &tkb, &tvb, NULL, &opt, &tone, NULL));
    for (i = 0; i < HQ * D; ++i)
      if (fabs(one[i] - out[b * HQ * D + i]) > max_err) max_err = fabs(one[i] - out[b * HQ * D + i]);
    if (!(max_err <= 1e-6)) printf("attend_paged: sequence %d differs from sa_attend by %g\n", b, max_err);
    CHECK(max_err <= 1e-6);
  }
  /* A page outside the cache is refused. */
  table[1][2] = PAGES;
  CHECK(api->attend_paged(ctx, &tq, NULL, &kv, NULL, &opt, &tout, NULL) == SA_ERR_OUT_OF_RANGE);
}

/* An index created with borrow_keys keeps no copy of the keys and reads the host's K
 * (sa_select_options.keys): its selections equal an owning index's, with the host's K
 * contiguous or padded (non-default strides), before and after refills. */
static void check_borrowed_select(const sa_api *api, sa_context *ctx) {
  enum { PH = HKV + 1, PD = D + 4, NQB = 3 };
  static float keys[NKV * HKV * D], padded[NKV * PH * PD], fresh[2 * HKV * D], q[NQB * HQ * D];
  static const sa_selector_kind kinds[] = {SA_SELECTOR_EXACT, SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW};
  int32_t want[NQB * HKV * WIDTH], got[NQB * HKV * WIDTH];
  const int32_t slots[2] = {5, 17};
  const int64_t positions[2] = {NKV, NKV + 1};
  unsigned i, k;
  int step, s, h, d;
  for (i = 0; i < NKV * HKV * D; ++i) keys[i] = value(i + 311);
  for (i = 0; i < 2 * HKV * D; ++i) fresh[i] = 3.0f * value(i + 911);
  for (i = 0; i < NQB * HQ * D; ++i) q[i] = 2.0f * value(i + 577);
  for (k = 0; k < sizeof kinds / sizeof kinds[0]; ++k) {
    sa_index_options io = SA_INDEX_OPTIONS_INIT;
    sa_index *owned = NULL, *borrowed = NULL;
    sa_tensor tk, tpad, tq, tidx_want, tidx_got, tfresh, tshort;
    io.kind = kinds[k];
    io.num_kv_heads = HKV;
    io.head_dim = D;
    io.dtype = SA_DTYPE_F32;
    io.page.page_size = 4;
    io.lsh.bits = 3;
    CHECK(io.borrow_keys == 0);
    if (io.kind == SA_SELECTOR_HNSW && !SA_HAVE_HNSWLIB) { /* left out of this build: refused */
      CHECK(api->index_create(ctx, &io, &owned) == SA_ERR_UNSUPPORTED && owned == NULL);
      continue;
    }
    CHECK_OK(api, api->index_create(ctx, &io, &owned));
    io.borrow_keys = 1;
    CHECK_OK(api, api->index_create(ctx, &io, &borrowed));
    if (!owned || !borrowed) {
      api->index_destroy(&owned);
      api->index_destroy(&borrowed);
      return;
    }
    tk = tensor3(keys, SA_DTYPE_F32, NKV, HKV, D);
    /* The same keys in a padded cache: heads PH apart, rows of PD elements. */
    tpad = tensor3(padded, SA_DTYPE_F32, NKV, HKV, D);
    tpad.strides[0] = PH * PD;
    tpad.strides[1] = PD;
    tpad.strides[2] = 1;
    for (s = 0; s < NKV; ++s)
      for (h = 0; h < HKV; ++h)
        for (d = 0; d < D; ++d) padded[(s * PH + h) * PD + d] = keys[(s * HKV + h) * D + d];
    CHECK_OK(api, api->index_append(owned, &tk));
    CHECK_OK(api, api->index_append(borrowed, &tk));
    tq = tensor3(q, SA_DTYPE_F32, NQB, HQ, D);
    tidx_want = tensor3(want, SA_DTYPE_I32, NQB, HKV, WIDTH);
    tidx_got = tensor3(got, SA_DTYPE_I32, NQB, HKV, WIDTH);
    for (step = 0; step < 2; ++step) {
      sa_select_options so = SA_SELECT_OPTIONS_INIT;
      so.top_k = 5;
      so.window = 3;
      so.sinks = 2;
      CHECK(so.keys == NULL);
      CHECK_OK(api, api->select(owned, &tq, &so, &tidx_want));
      so.keys = &tk;
      memset(got, 0x7f, sizeof got);
      CHECK_OK(api, api->select(borrowed, &tq, &so, &tidx_got));
      CHECK(memcmp(want, got, sizeof want) == 0);
      so.keys = &tpad;
      memset(got, 0x7f, sizeof got);
      CHECK_OK(api, api->select(borrowed, &tq, &so, &tidx_got));
      CHECK(memcmp(want, got, sizeof want) == 0);
      if (step == 0) { /* eviction refills slots 5 and 17: the host writes its cache too */
        tfresh = tensor3(fresh, SA_DTYPE_F32, 2, HKV, D);
        CHECK_OK(api, api->index_update(owned, slots, 2, &tfresh, positions));
        CHECK_OK(api, api->index_update(borrowed, slots, 2, &tfresh, positions));
        for (s = 0; s < 2; ++s)
          for (h = 0; h < HKV; ++h)
            for (d = 0; d < D; ++d) {
              keys[(slots[s] * HKV + h) * D + d] = fresh[(s * HKV + h) * D + d];
              padded[(slots[s] * PH + h) * PD + d] = fresh[(s * HKV + h) * D + d];
            }
      }
    }
    { /* the host's keys are required, and must cover every slot */
      sa_select_options so = SA_SELECT_OPTIONS_INIT;
      so.top_k = 5;
      so.window = 3;
      so.sinks = 2;
      CHECK(api->select(borrowed, &tq, &so, &tidx_got) == SA_ERR_NULL_POINTER);
      tshort = tk;
      tshort.shape[0] = NKV - 1;
      so.keys = &tshort;
      CHECK(api->select(borrowed, &tq, &so, &tidx_got) == SA_ERR_SHAPE);
    }
    api->index_destroy(&owned);
    api->index_destroy(&borrowed);
  }
}

static void check_error_path(const sa_api *api, sa_context *ctx) {
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  int64_t n = -7;
  eo.budget = 100; /* valid options, so the NULL tensors are the only fault */
  CHECK(api->cache_evict(ctx, &eo, NULL, NULL, NULL, &n) == SA_ERR_NULL_POINTER);
  CHECK(api->last_error() != NULL && api->last_error()[0] != '\0');
  CHECK(n == -7);
  CHECK(strcmp(api->status_name(SA_ERR_SHAPE), "SA_ERR_SHAPE") == 0);
  CHECK(api->index_size(NULL, &n) == SA_ERR_NULL_POINTER);
  CHECK(strlen(sa_last_error()) > 0);
}

/* The *_INIT macros a host compiles in equal the library's sa_*_options_default()
 * (compared field by field: padding bytes are unspecified). */
static void check_option_defaults(const sa_api *api) {
  const sa_attend_options am = SA_ATTEND_OPTIONS_INIT, af = api->attend_options_default();
  const sa_evict_options em = SA_EVICT_OPTIONS_INIT, ef = api->evict_options_default();
  CHECK(am.struct_size == af.struct_size && am.scale == af.scale && am.causal == af.causal);
  CHECK(am.query_positions == af.query_positions && am.key_positions == af.key_positions);
  CHECK(am.cuda_stream == af.cuda_stream && am.slot_mass == af.slot_mass);
  CHECK(am.mass_decay == af.mass_decay);
  CHECK(em.struct_size == ef.struct_size && em.budget == ef.budget && em.incoming == ef.incoming);
  CHECK(em.sinks == ef.sinks && em.window == ef.window && em.score_mean == ef.score_mean);
  CHECK(em.mass_decay == ef.mass_decay && em.head_max == ef.head_max);
  CHECK(em.recent_share == ef.recent_share);
  /* The decay eviction assumes is the one attention accumulates with by default. */
  CHECK(ef.mass_decay == af.mass_decay);
}

int main(void) {
  const sa_api *api = sa_get_api(SA_ABI_VERSION);
  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  sa_context *ctx = NULL;
  char expect[32];

  CHECK(sa_version() == SA_VERSION);
  sprintf(expect, "%d.%d.%d", SA_VERSION_MAJOR, SA_VERSION_MINOR, SA_VERSION_PATCH);
  CHECK(strcmp(sa_version_string(), expect) == 0);
  CHECK(sa_get_api(SA_ABI_VERSION + 1) == NULL);
  CHECK(api != NULL);
  if (!api) {
    printf("c_api_test: no function table\n");
    return 1;
  }
  check_table(api);
  check_option_defaults(api);
  CHECK(api->version() == SA_VERSION);
  co.threads = 1;
  CHECK_OK(api, api->context_create(&co, &ctx));
  if (ctx) {
    CHECK(api->context_threads(ctx) == 1);
    check_attend(api, ctx);
    check_select(api, ctx);
    check_paged(api, ctx);
    check_borrowed_select(api, ctx);
    check_error_path(api, ctx);
    api->context_destroy(&ctx);
    CHECK(ctx == NULL);
  }
  if (failures) {
    printf("c_api_test: %d failure(s)\n", failures);
    return 1;
  }
  printf("c_api_test: ok\n");
  return 0;
}
