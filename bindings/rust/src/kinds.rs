//! The header's enumerations: element types, instruction sets, selector kinds.
use crate::sys;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// IEEE binary16, stored as `u16` bits.
    F16,
    /// bfloat16, stored as `u16` bits.
    BF16,
    I32,
    I64,
}

impl DType {
    pub fn raw(self) -> sys::sa_dtype {
        match self {
            DType::F32 => sys::SA_DTYPE_F32,
            DType::F16 => sys::SA_DTYPE_F16,
            DType::BF16 => sys::SA_DTYPE_BF16,
            DType::I32 => sys::SA_DTYPE_I32,
            DType::I64 => sys::SA_DTYPE_I64,
        }
    }

    pub fn from_raw(raw: sys::sa_dtype) -> Option<DType> {
        Some(match raw {
            sys::SA_DTYPE_F32 => DType::F32,
            sys::SA_DTYPE_F16 => DType::F16,
            sys::SA_DTYPE_BF16 => DType::BF16,
            sys::SA_DTYPE_I32 => DType::I32,
            sys::SA_DTYPE_I64 => DType::I64,
            _ => return None,
        })
    }
}

/// Instruction set of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    Neon,
    Avx2,
    Avx512,
    /// The best the CPU supports.
    Auto,
    /// A value this crate does not know (a newer library).
    Other(u32),
}

impl Isa {
    pub fn raw(self) -> sys::sa_isa {
        match self {
            Isa::Scalar => sys::SA_ISA_SCALAR,
            Isa::Neon => sys::SA_ISA_NEON,
            Isa::Avx2 => sys::SA_ISA_AVX2,
            Isa::Avx512 => sys::SA_ISA_AVX512,
            Isa::Auto => sys::SA_ISA_AUTO,
            Isa::Other(v) => v,
        }
    }

    pub fn from_raw(raw: sys::sa_isa) -> Isa {
        match raw {
            sys::SA_ISA_SCALAR => Isa::Scalar,
            sys::SA_ISA_NEON => Isa::Neon,
            sys::SA_ISA_AVX2 => Isa::Avx2,
            sys::SA_ISA_AVX512 => Isa::Avx512,
            sys::SA_ISA_AUTO => Isa::Auto,
            other => Isa::Other(other),
        }
    }

    /// The header's name ("scalar", "neon", "avx2", "avx512", "auto"), what
    /// `sa_isa_name` returns; a value this crate does not know is named by
    /// the library when it is open.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Auto => "auto",
            Isa::Other(raw) => match sys::api() {
                // SAFETY: sa_isa_name returns a static string, never NULL.
                Ok(api) => unsafe { crate::static_str((api.isa_name)(raw)) },
                Err(_) => "unknown",
            },
        }
    }
}

/// How an [`crate::Index`] chooses keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectorKind {
    /// All scores, exact top-K (the oracle).
    Exact,
    /// Quest-style page bounds.
    Page,
    /// Multi-round SimHash with multi-probe.
    Lsh,
    /// hnswlib graph per KV head.
    Hnsw,
    /// Learned low-dimensional projections.
    Learned,
    /// DeepSeek-style lightning indexer.
    Indexer,
}

impl SelectorKind {
    pub fn raw(self) -> sys::sa_selector_kind {
        match self {
            SelectorKind::Exact => sys::SA_SELECTOR_EXACT,
            SelectorKind::Page => sys::SA_SELECTOR_PAGE,
            SelectorKind::Lsh => sys::SA_SELECTOR_LSH,
            SelectorKind::Hnsw => sys::SA_SELECTOR_HNSW,
            SelectorKind::Learned => sys::SA_SELECTOR_LEARNED,
            SelectorKind::Indexer => sys::SA_SELECTOR_INDEXER,
        }
    }

    pub fn from_raw(raw: sys::sa_selector_kind) -> Option<SelectorKind> {
        Some(match raw {
            sys::SA_SELECTOR_EXACT => SelectorKind::Exact,
            sys::SA_SELECTOR_PAGE => SelectorKind::Page,
            sys::SA_SELECTOR_LSH => SelectorKind::Lsh,
            sys::SA_SELECTOR_HNSW => SelectorKind::Hnsw,
            sys::SA_SELECTOR_LEARNED => SelectorKind::Learned,
            sys::SA_SELECTOR_INDEXER => SelectorKind::Indexer,
            _ => return None,
        })
    }
}
