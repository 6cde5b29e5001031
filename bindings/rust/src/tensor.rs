//! Views of caller memory as tensors (`sa_tensor`): host slices checked
//! against their shape and strides, or CUDA device pointers.
use std::marker::PhantomData;
use std::os::raw::c_void;
use std::ptr;

use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::kinds::DType;
use crate::sys;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
}

/// Rust element types a tensor view may borrow: `f32`, `u16` (the bits of
/// f16 or bf16), `i32`, `i64`.
pub trait Element: sealed::Sealed + Copy {
    /// The dtypes whose elements this type holds.
    const DTYPES: &'static [DType];
}
impl Element for f32 {
    const DTYPES: &'static [DType] = &[DType::F32];
}
impl Element for u16 {
    const DTYPES: &'static [DType] = &[DType::F16, DType::BF16];
}
impl Element for i32 {
    const DTYPES: &'static [DType] = &[DType::I32];
}
impl Element for i64 {
    const DTYPES: &'static [DType] = &[DType::I64];
}

/// Builds a CPU descriptor for `len` elements at `data`, after checking that
/// the shape and strides stay inside them.
fn describe<T: Element>(
    data: *mut T,
    len: usize,
    dtype: DType,
    shape: &[i64],
    strides: Option<&[i64]>,
) -> Result<sys::sa_tensor> {
    if !T::DTYPES.contains(&dtype) {
        return Err(Error::new(
            Status::DType,
            format!(
                "a slice of {} cannot hold {dtype:?} elements",
                std::any::type_name::<T>()
            ),
        ));
    }
    let (raw, needed) = describe_extent(data.cast(), dtype, shape, strides)?;
    if needed as u128 > len as u128 {
        return Err(Error::new(
            Status::Shape,
            format!(
                "tensor shape {shape:?}{} needs {needed} elements, the slice has {len}",
                strides
                    .map(|s| format!(" strides {s:?}"))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(raw)
}

/// A CPU descriptor of `data` and the number of elements its shape and
/// strides span (one past the furthest element).
fn describe_extent(
    data: *mut c_void,
    dtype: DType,
    shape: &[i64],
    strides: Option<&[i64]>,
) -> Result<(sys::sa_tensor, i64)> {
    let rank = shape.len();
    if rank == 0 || rank > sys::SA_MAX_RANK {
        return Err(Error::new(
            Status::Shape,
            format!("tensor rank {rank} is not in 1..={}", sys::SA_MAX_RANK),
        ));
    }
    if let Some(&bad) = shape.iter().find(|&&s| s < 0) {
        return Err(Error::new(
            Status::Shape,
            format!("tensor shape {shape:?} has a negative extent {bad}"),
        ));
    }
    let overflow = || {
        Error::new(
            Status::Overflow,
            format!("tensor shape {shape:?} overflows"),
        )
    };
    let mut raw_strides = [0i64; sys::SA_MAX_RANK];
    let needed: i64 = match strides {
        Some(strides) => {
            if strides.len() != rank {
                return Err(Error::new(
                    Status::Shape,
                    format!(
                        "{} strides given for a tensor of rank {rank}",
                        strides.len()
                    ),
                ));
            }
            if let Some(&bad) = strides.iter().find(|&&s| s < 0) {
                return Err(Error::new(
                    Status::Shape,
                    format!("tensor strides {strides:?} have a negative stride {bad}"),
                ));
            }
            raw_strides[..rank].copy_from_slice(strides);
            if strides.iter().all(|&s| s == 0) {
                contiguous_len(shape).ok_or_else(overflow)?
            } else if shape.contains(&0) {
                0
            } else {
                // One past the furthest element: 1 + sum((extent - 1) * stride).
                let mut last = 0i64;
                for (&extent, &stride) in shape.iter().zip(strides) {
                    last = (extent - 1)
                        .checked_mul(stride)
                        .and_then(|x| last.checked_add(x))
                        .ok_or_else(overflow)?;
                }
                last.checked_add(1).ok_or_else(overflow)?
            }
        }
        None => contiguous_len(shape).ok_or_else(overflow)?,
    };
    let mut raw_shape = [0i64; sys::SA_MAX_RANK];
    raw_shape[..rank].copy_from_slice(shape);
    let raw = sys::sa_tensor {
        data,
        dtype: dtype.raw(),
        device: sys::SA_DEVICE_CPU,
        device_id: 0,
        rank: rank as i32,
        shape: raw_shape,
        strides: raw_strides,
    };
    Ok((raw, needed))
}

/// A descriptor of CUDA memory on device `device_id` (shape and strides
/// checked; the extent cannot be, the memory being the caller's promise).
fn describe_cuda(
    data: *mut c_void,
    dtype: DType,
    device_id: i32,
    shape: &[i64],
    strides: Option<&[i64]>,
) -> Result<sys::sa_tensor> {
    let (mut raw, _) = describe_extent(data, dtype, shape, strides)?;
    raw.device = sys::SA_DEVICE_CUDA;
    raw.device_id = device_id;
    Ok(raw)
}

fn contiguous_len(shape: &[i64]) -> Option<i64> {
    shape.iter().try_fold(1i64, |acc, &s| acc.checked_mul(s))
}

/// The contiguous constructors of a view over `&'a` or `&'a mut` slices.
macro_rules! contiguous_constructors {
    ($($borrow:tt)+) => {
        /// Contiguous f32 tensor.
        pub fn f32(data: $($borrow)+ [f32], shape: &[i64]) -> Result<Self> {
            Self::new(data, DType::F32, shape, None)
        }

        /// Contiguous f16 tensor (IEEE binary16 bits).
        pub fn f16(data: $($borrow)+ [u16], shape: &[i64]) -> Result<Self> {
            Self::new(data, DType::F16, shape, None)
        }

        /// Contiguous bf16 tensor (bfloat16 bits).
        pub fn bf16(data: $($borrow)+ [u16], shape: &[i64]) -> Result<Self> {
            Self::new(data, DType::BF16, shape, None)
        }

        /// Contiguous i32 tensor.
        pub fn i32(data: $($borrow)+ [i32], shape: &[i64]) -> Result<Self> {
            Self::new(data, DType::I32, shape, None)
        }

        /// Contiguous i64 tensor.
        pub fn i64(data: $($borrow)+ [i64], shape: &[i64]) -> Result<Self> {
            Self::new(data, DType::I64, shape, None)
        }
    };
}

/// What [`Tensor`] and [`TensorMut`] read from their descriptor alike.
macro_rules! descriptor_accessors {
    () => {
        pub fn dtype(&self) -> DType {
            DType::from_raw(self.raw.dtype).expect("dtype set by this crate")
        }

        pub fn shape(&self) -> &[i64] {
            &self.raw.shape[..self.raw.rank as usize]
        }

        /// Where the memory lives.
        pub fn device(&self) -> Device {
            device_of(&self.raw)
        }

        /// The C descriptor (valid while `'a` lasts).
        pub fn as_raw(&self) -> &sys::sa_tensor {
            &self.raw
        }
    };
}

/// A read-only view of a slice as a tensor: dtype, shape and optional strides
/// (in elements; `None` or all zeros: contiguous row-major). Built only when
/// the slice covers every element the shape and strides address.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    pub(crate) raw: sys::sa_tensor,
    _data: PhantomData<&'a [u8]>,
}

// SAFETY: a Tensor is a shared borrow of plain data; the raw pointer inside
// is only read through by the library during a call.
unsafe impl Send for Tensor<'_> {}
unsafe impl Sync for Tensor<'_> {}

impl<'a> Tensor<'a> {
    /// A view of `data` with any dtype the element type can hold (`u16` for
    /// F16 and BF16), shape and optional strides.
    pub fn new<T: Element>(
        data: &'a [T],
        dtype: DType,
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Self> {
        let raw = describe(data.as_ptr() as *mut T, data.len(), dtype, shape, strides)?;
        Ok(Tensor {
            raw,
            _data: PhantomData,
        })
    }

    contiguous_constructors!(&'a);

    /// A view of CUDA device memory (dtype, shape, optional strides), for
    /// the calls that take device tensors (see the header).
    ///
    /// # Safety
    /// `data` points to device memory on CUDA device `device_id` that holds
    /// every element the shape and strides address, of `dtype`, and stays
    /// allocated and unwritten by others for `'a` and until the work of the
    /// calls given this view has completed on their stream.
    pub unsafe fn cuda(
        data: *const c_void,
        dtype: DType,
        device_id: i32,
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Self> {
        let raw = describe_cuda(data as *mut c_void, dtype, device_id, shape, strides)?;
        Ok(Tensor {
            raw,
            _data: PhantomData,
        })
    }

    descriptor_accessors!();
}

/// A writable view of a slice as a tensor, for outputs. Same rules as [`Tensor`].
#[derive(Debug)]
pub struct TensorMut<'a> {
    pub(crate) raw: sys::sa_tensor,
    _data: PhantomData<&'a mut [u8]>,
}

// SAFETY: an exclusive borrow of plain data.
unsafe impl Send for TensorMut<'_> {}
unsafe impl Sync for TensorMut<'_> {}

impl<'a> TensorMut<'a> {
    pub fn new<T: Element>(
        data: &'a mut [T],
        dtype: DType,
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Self> {
        let raw = describe(data.as_mut_ptr(), data.len(), dtype, shape, strides)?;
        Ok(TensorMut {
            raw,
            _data: PhantomData,
        })
    }

    contiguous_constructors!(&'a mut);

    /// A writable view of CUDA device memory; see [`Tensor::cuda`].
    ///
    /// # Safety
    /// As for [`Tensor::cuda`], and no other view or work reads or writes
    /// the memory while this view lives or its calls' work is in flight.
    pub unsafe fn cuda(
        data: *mut c_void,
        dtype: DType,
        device_id: i32,
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Self> {
        let raw = describe_cuda(data, dtype, device_id, shape, strides)?;
        Ok(TensorMut {
            raw,
            _data: PhantomData,
        })
    }

    descriptor_accessors!();

    /// A read-only view of the same memory (e.g. `select`'s indices fed to `attend`).
    pub fn as_tensor(&self) -> Tensor<'_> {
        Tensor {
            raw: self.raw,
            _data: PhantomData,
        }
    }
}

pub(crate) fn check_len(what: &str, have: usize, need: i64) -> Result<()> {
    if (have as u128) < need.max(0) as u128 {
        return Err(Error::new(
            Status::Shape,
            format!("{what}: {have} values given, {need} needed"),
        ));
    }
    Ok(())
}

pub(crate) fn opt_ptr<T>(s: Option<&[T]>) -> *const T {
    s.map_or(ptr::null(), |s| s.as_ptr())
}

fn device_of(raw: &sys::sa_tensor) -> Device {
    if raw.device == sys::SA_DEVICE_CUDA {
        Device::Cuda(raw.device_id)
    } else {
        Device::Cpu
    }
}
