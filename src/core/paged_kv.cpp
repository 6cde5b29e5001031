#include "core/positions.hpp"
#include "core/paged_kv.hpp"

#include <cstring>

#include "core/error.hpp"

namespace sa {
namespace {

// Element i of an I32 or I64 vector.
int64_t int_at(const TensorView &t, int64_t i) {
  return t.dtype == SA_DTYPE_I64 ? t.ptr<const int64_t>()[i * t.stride[0]] : t.ptr<const int32_t>()[i * t.stride[0]];
}

bool present(const sa_tensor &t) { return t.rank != 0; }
bool present(const TensorView &t) { return t.rank != 0; }

// [num_pages, page_size, H, D] as [num_pages * page_size, H, D] rows. Pages whose stride is
// page_size rows (or a single page, or one-row pages) are viewed in place; other layouts are
// copied once into `packed` (a slow path for padded pages).
TensorView flatten_pages(const TensorView &t, std::vector<char> &packed) {
  const int64_t NP = t.shape[0], P = t.shape[1], H = t.shape[2], D = t.shape[3];
  TensorView f = t;
  f.rank = 3;
  f.shape[0] = NP * P;
  f.shape[1] = H;
  f.shape[2] = D;
  f.shape[3] = 0;
  f.stride[1] = t.stride[2];
  f.stride[2] = t.stride[3];
  f.stride[3] = 0;
  if (NP <= 1 || t.stride[0] == P * t.stride[1]) {
    f.stride[0] = t.stride[1];
    return f;
  }
  if (P == 1) {
    f.stride[0] = t.stride[0];
    return f;
  }
  const size_t es = dtype_size(t.dtype);
  packed.resize(size_t(NP * P * H * D) * es);
  for (int64_t pg = 0; pg < NP; ++pg)
    for (int64_t o = 0; o < P; ++o)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          std::memcpy(&packed[size_t(((pg * P + o) * H + h) * D + d) * es],
                      t.bytes() + size_t(pg * t.stride[0] + o * t.stride[1] + h * t.stride[2] + d * t.stride[3]) * es, es);
  f.data = packed.data();
  f.stride[0] = H * D;
  f.stride[1] = D;
  f.stride[2] = 1;
  return f;
}

}  // namespace

PagedTensors view_paged_tensors(const sa_paged_kv *kv, bool with_values, Device dev) {
  if (!kv) fail(SA_ERR_NULL_POINTER, "kv is NULL");
  const sa_paged_kv o = read_options(kv, sa_paged_kv{}, sizeof(sa_paged_kv), "kv");
  PagedTensors r;
  const int rank = o.k.rank;
  if (rank != 3 && rank != 4)
    fail(SA_ERR_SHAPE, "kv->k has rank %d, expected 4 ([num_pages, page_size, H_kv, D]) or 3 ([n, H_kv, D])", int(rank));
  r.k = view_tensor(&o.k, "kv->k", rank, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
  if (with_values) {
    r.v = view_tensor(&o.v, "kv->v", rank, {r.k.dtype}, dev);
    for (int d = 0; d < rank; ++d) expect_dim(r.v, "kv->v", d, r.k.shape[d], "the shape of kv->k");
  }
  r.num_pages = r.k.shape[0];
  r.page_size = rank == 4 ? r.k.shape[1] : 1;
  if (r.page_size < 1) fail(SA_ERR_SHAPE, "kv->k.shape[1] (page_size) is 0, expected >= 1");
  r.num_slots = checked_mul(r.num_pages, r.page_size, "kv->k's slot count");
  if (r.num_slots > INT32_MAX)
    fail(SA_ERR_OVERFLOW, "kv->k holds %lld slots, past the int32 range of index entries", (long long)r.num_slots);

  // Sequences: a page table and lengths, or (rank 3 without either) one sequence of every row.
  if (present(o.seq_lens)) r.seq_lens = view_tensor(&o.seq_lens, "kv->seq_lens", 1, {SA_DTYPE_I32, SA_DTYPE_I64}, dev);
  if (!present(o.page_table)) {
    if (rank == 4) fail(SA_ERR_NULL_POINTER, "kv->page_table is absent (rank 0); a paged kv->k needs one");
    r.batch = 1;
    if (present(o.seq_lens)) expect_dim(r.seq_lens, "kv->seq_lens", 0, 1, "one sequence without a page table");
  } else {
    r.page_table = view_tensor(&o.page_table, "kv->page_table", 2, {SA_DTYPE_I32}, dev);
    if (!present(o.seq_lens)) fail(SA_ERR_NULL_POINTER, "kv->seq_lens is absent (rank 0); a page table needs lengths");
    r.batch = r.page_table.shape[0];
    expect_dim(r.seq_lens, "kv->seq_lens", 0, r.batch, "kv->page_table.shape[0], the sequences");
    checked_mul(r.page_table.shape[1], r.page_size, "kv->page_table's token capacity");
  }
  if (present(o.slot_positions)) {
    r.slot_positions = view_tensor(&o.slot_positions, "kv->slot_positions", 1, {SA_DTYPE_I64}, dev);
    expect_dim(r.slot_positions, "kv->slot_positions", 0, r.num_slots, "the slots of kv->k (num_pages * page_size)");
  }
  return r;
}

PagedKV view_paged_kv(const sa_paged_kv *kv, bool with_values) {
  const PagedTensors t = view_paged_tensors(kv, with_values, Device{});
  PagedKV r;
  r.num_pages = t.num_pages;
  r.page_size = t.page_size;
  r.num_slots = t.num_slots;
  r.batch = t.batch;
  if (t.k.rank == 4) {
    r.k = flatten_pages(t.k, r.k_packed);
    if (with_values) r.v = flatten_pages(t.v, r.v_packed);
  } else {
    r.k = t.k;
    r.v = t.v;
  }

  if (!present(t.page_table)) {
    int64_t len = r.num_slots;
    if (present(t.seq_lens)) {
      len = int_at(t.seq_lens, 0);
      if (len < 0 || len > r.num_slots)
        fail(SA_ERR_OUT_OF_RANGE, "kv->seq_lens[0] is %lld, outside [0, %lld] (the rows of kv->k)", (long long)len,
             (long long)r.num_slots);
    }
    r.lens.assign(1, len);
  } else {
    const TensorView &table = t.page_table;
    const int64_t max_pages = table.shape[1], max_len = max_pages * r.page_size;
    r.table_ = table.ptr<const int32_t>();
    r.table_s0_ = table.stride[0];
    r.table_s1_ = table.stride[1];
    r.lens.resize(size_t(r.batch));
    for (int64_t b = 0; b < r.batch; ++b) {
      const int64_t len = int_at(t.seq_lens, b);
      if (len < 0) fail(SA_ERR_OUT_OF_RANGE, "kv->seq_lens[%lld] is %lld, expected >= 0", (long long)b, (long long)len);
      if (len > max_len)
        fail(SA_ERR_SHAPE, "kv->seq_lens[%lld] is %lld, beyond its page table row (%lld pages of %lld tokens)",
             (long long)b, (long long)len, (long long)max_pages, (long long)r.page_size);
      r.lens[size_t(b)] = len;
      for (int64_t j = 0, used = (len + r.page_size - 1) / r.page_size; j < used; ++j) {
        const int32_t page = r.table_[b * r.table_s0_ + j * r.table_s1_];
        if (page < 0 || page >= r.num_pages)
          fail(SA_ERR_OUT_OF_RANGE, "kv->page_table[%lld][%lld] is %d, outside the %lld pages of kv->k", (long long)b,
               (long long)j, int(page), (long long)r.num_pages);
      }
    }
  }

  if (present(t.slot_positions)) {
    const TensorView &pos = t.slot_positions;
    if (pos.stride[0] == 1 || r.num_slots <= 1) {
      r.slot_positions = pos.ptr<const int64_t>();
    } else {
      r.positions_packed.resize(size_t(r.num_slots));
      for (int64_t s = 0; s < r.num_slots; ++s) r.positions_packed[size_t(s)] = pos.ptr<const int64_t>()[s * pos.stride[0]];
      r.slot_positions = r.positions_packed.data();
    }
    check_positions(r.slot_positions, r.num_slots, 1, "kv->slot_positions", PositionsOf::keys);
  }
  return r;
}

std::vector<int64_t> view_query_starts(const sa_tensor *query_starts, int64_t batch, int64_t n_q) {
  std::vector<int64_t> starts(size_t(batch) + 1);
  if (!query_starts) {
    if (n_q != batch)
      fail(SA_ERR_SHAPE, "queries hold %lld rows but there are %lld sequences; without query_starts each sequence has "
                         "one query", (long long)n_q, (long long)batch);
    for (int64_t b = 0; b <= batch; ++b) starts[size_t(b)] = b;
    return starts;
  }
  const TensorView qs = view_tensor(query_starts, "query_starts", 1, {SA_DTYPE_I32, SA_DTYPE_I64});
  expect_dim(qs, "query_starts", 0, batch + 1, "the sequences + 1");
  for (int64_t b = 0; b <= batch; ++b) {
    starts[size_t(b)] = int_at(qs, b);
    const int64_t lo = b == 0 ? 0 : starts[size_t(b - 1)];
    if ((b == 0 && starts[0] != 0) || starts[size_t(b)] < lo || starts[size_t(b)] > n_q)
      fail(SA_ERR_INVALID_ARGUMENT, "query_starts[%lld] is %lld; expected 0 first, then non-decreasing up to the %lld query "
           "rows", (long long)b, (long long)starts[size_t(b)], (long long)n_q);
  }
  if (starts[size_t(batch)] != n_q)
    fail(SA_ERR_INVALID_ARGUMENT, "query_starts[%lld] is %lld, expected the %lld query rows", (long long)batch,
         (long long)starts[size_t(batch)], (long long)n_q);
  return starts;
}

}  // namespace sa
