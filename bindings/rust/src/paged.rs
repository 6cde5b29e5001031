//! A batch's paged KV cache as engines hold it (`sa_paged_kv`).
use crate::sys;
use crate::tensor::Tensor;

/// The KV cache of a batch of B sequences: pages of `page_size` token rows,
/// and per sequence the list of its pages in token order. Token t of sequence
/// b lives in page `page_table[b][t / page_size]` at offset `t % page_size`;
/// a physical slot is `page * page_size + offset`.
///
/// Every field is a checked view of borrowed memory, and the library refuses
/// page tables that point outside `k`/`v`, so a `PagedKv` is safe to build
/// from any values.
#[derive(Debug, Clone, Copy)]
pub struct PagedKv<'a> {
    /// `[num_pages, page_size, H_kv, D]` F32/F16/BF16, any strides; or
    /// `[n, H_kv, D]`, pages of one row (llama.cpp's cells).
    pub k: Tensor<'a>,
    /// The shape and dtype of `k`, any strides.
    pub v: Tensor<'a>,
    /// I32 `[B, max_pages]`: pages of each sequence, in token order. With
    /// `seq_lens`, or neither: rank-3 `k`/`v` then hold one sequence.
    pub page_table: Option<Tensor<'a>>,
    /// I32 or I64 `[B]`: tokens held by each sequence.
    pub seq_lens: Option<Tensor<'a>>,
    /// Optional I64 `[num_pages * page_size]`: the token position each
    /// physical slot holds (-1: empty); None: token t is at position t.
    pub slot_positions: Option<Tensor<'a>>,
}

impl<'a> PagedKv<'a> {
    /// A paged cache of B sequences.
    pub fn new(k: Tensor<'a>, v: Tensor<'a>, page_table: Tensor<'a>, seq_lens: Tensor<'a>) -> Self {
        PagedKv {
            k,
            v,
            page_table: Some(page_table),
            seq_lens: Some(seq_lens),
            slot_positions: None,
        }
    }

    /// One sequence held contiguously: `k`, `v` `[n, H_kv, D]`, row t = token t.
    pub fn contiguous(k: Tensor<'a>, v: Tensor<'a>) -> Self {
        PagedKv {
            k,
            v,
            page_table: None,
            seq_lens: None,
            slot_positions: None,
        }
    }

    /// The same cache with the token position of each physical slot.
    pub fn with_slot_positions(mut self, positions: Tensor<'a>) -> Self {
        self.slot_positions = Some(positions);
        self
    }

    /// The C struct (its tensors point into the borrowed memory).
    pub fn to_raw(&self) -> sys::sa_paged_kv {
        let or_absent =
            |t: &Option<Tensor<'a>>| t.as_ref().map_or(sys::SA_TENSOR_ABSENT, |t| t.raw);
        sys::sa_paged_kv {
            struct_size: std::mem::size_of::<sys::sa_paged_kv>(),
            k: self.k.raw,
            v: self.v.raw,
            page_table: or_absent(&self.page_table),
            seq_lens: or_absent(&self.seq_lens),
            slot_positions: or_absent(&self.slot_positions),
        }
    }
}
