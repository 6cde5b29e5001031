//! CUDA device, stream and plugin options. Without a GPU (or without the
//! CUDA plugin) the device tests check that the library says so
//! (BackendUnavailable) and stop there; with one they run selection and
//! attention on device memory against brute force and f64 attention.
mod common;

use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int, c_uint};
use std::path::PathBuf;

use common::{brute_force_select, listed, Attention, Rng, Rows};
use sparseattn::{
    AttendOptions, Context, ContextOptions, CudaStream, DType, Device, Index, IndexOptions,
    SelectOptions, Status, Tensor, TensorMut,
};

#[test]
fn cuda_plugin_path_reaches_the_library() {
    let missing = "/nonexistent/sparseattn-test/libsparseattn_cuda.so";
    let err = Context::with_options(&ContextOptions {
        device: Device::Cuda(0),
        cuda_plugin_path: Some(PathBuf::from(missing)),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.status(), Status::BackendUnavailable, "{err}");
    assert!(err.message().contains(missing), "names the path: {err}");
}

// ------------------------------------------------ a minimal CUDA driver API

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

type CuResult = c_int;

/// The CUDA driver (libcuda.so.1), enough to hold device memory and a
/// stream in the primary context, which the CUDA runtime shares.
struct Gpu {
    ctx: *mut c_void,
    set_current: unsafe extern "C" fn(*mut c_void) -> CuResult,
    alloc: unsafe extern "C" fn(*mut u64, usize) -> CuResult,
    free: unsafe extern "C" fn(u64) -> CuResult,
    to_device: unsafe extern "C" fn(u64, *const c_void, usize) -> CuResult,
    to_host: unsafe extern "C" fn(*mut c_void, u64, usize) -> CuResult,
    stream_create: unsafe extern "C" fn(*mut *mut c_void, c_uint) -> CuResult,
    stream_sync: unsafe extern "C" fn(*mut c_void) -> CuResult,
    stream_destroy: unsafe extern "C" fn(*mut c_void) -> CuResult,
}

macro_rules! symbol {
    ($lib:expr, $name:literal) => {{
        let name = CString::new($name).unwrap();
        let p = unsafe { dlsym($lib, name.as_ptr()) };
        if p.is_null() {
            return Err(format!("libcuda.so.1 has no {}", $name));
        }
        unsafe { std::mem::transmute(p) }
    }};
}

fn cu(what: &str, r: CuResult) -> Result<(), String> {
    if r == 0 {
        Ok(())
    } else {
        Err(format!("{what} failed with CUresult {r}"))
    }
}

impl Gpu {
    // Each symbol is transmuted to the field's type, the driver API's signature.
    #[allow(unknown_lints, clippy::missing_transmute_annotations)]
    fn open() -> Result<Gpu, String> {
        let lib = unsafe { dlopen(b"libcuda.so.1\0".as_ptr().cast(), 2) };
        if lib.is_null() {
            return Err("no CUDA driver (libcuda.so.1)".into());
        }
        let init: unsafe extern "C" fn(c_uint) -> CuResult = symbol!(lib, "cuInit");
        let count: unsafe extern "C" fn(*mut c_int) -> CuResult = symbol!(lib, "cuDeviceGetCount");
        let get: unsafe extern "C" fn(*mut c_int, c_int) -> CuResult = symbol!(lib, "cuDeviceGet");
        let retain: unsafe extern "C" fn(*mut *mut c_void, c_int) -> CuResult =
            symbol!(lib, "cuDevicePrimaryCtxRetain");
        cu("cuInit", unsafe { init(0) })?;
        let mut n = 0;
        cu("cuDeviceGetCount", unsafe { count(&mut n) })?;
        if n == 0 {
            return Err("no CUDA device".into());
        }
        let (mut dev, mut ctx) = (0, std::ptr::null_mut());
        cu("cuDeviceGet", unsafe { get(&mut dev, 0) })?;
        cu("cuDevicePrimaryCtxRetain", unsafe { retain(&mut ctx, dev) })?;
        let gpu = Gpu {
            ctx,
            set_current: symbol!(lib, "cuCtxSetCurrent"),
            alloc: symbol!(lib, "cuMemAlloc_v2"),
            free: symbol!(lib, "cuMemFree_v2"),
            to_device: symbol!(lib, "cuMemcpyHtoD_v2"),
            to_host: symbol!(lib, "cuMemcpyDtoH_v2"),
            stream_create: symbol!(lib, "cuStreamCreate"),
            stream_sync: symbol!(lib, "cuStreamSynchronize"),
            stream_destroy: symbol!(lib, "cuStreamDestroy_v2"),
        };
        cu("cuCtxSetCurrent", unsafe { (gpu.set_current)(gpu.ctx) })?;
        Ok(gpu)
    }

    /// Device memory holding a copy of `data`.
    fn upload<T: Copy>(&self, data: &[T]) -> DeviceBuffer<'_> {
        let bytes = std::mem::size_of_val(data);
        let mut ptr = 0u64;
        cu("cuMemAlloc", unsafe {
            (self.alloc)(&mut ptr, bytes.max(16))
        })
        .unwrap();
        cu("cuMemcpyHtoD", unsafe {
            (self.to_device)(ptr, data.as_ptr().cast(), bytes)
        })
        .unwrap();
        DeviceBuffer {
            gpu: self,
            ptr,
            bytes,
        }
    }
}

struct DeviceBuffer<'g> {
    gpu: &'g Gpu,
    ptr: u64,
    bytes: usize,
}

impl DeviceBuffer<'_> {
    fn ptr(&self) -> *mut c_void {
        self.ptr as *mut c_void
    }

    fn download<T: Copy + Default>(&self) -> Vec<T> {
        let mut out = vec![T::default(); self.bytes / std::mem::size_of::<T>()];
        let r = unsafe { (self.gpu.to_host)(out.as_mut_ptr().cast(), self.ptr, self.bytes) };
        cu("cuMemcpyDtoH", r).unwrap();
        out
    }
}

impl Drop for DeviceBuffer<'_> {
    fn drop(&mut self) {
        unsafe { (self.gpu.free)(self.ptr) };
    }
}

/// f32 to IEEE binary16 bits, rounding to nearest even (normal range).
fn f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign; // the test data stays far from subnormals
    }
    let mant = b & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

fn f16_to_f32(h: u16) -> f32 {
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let sign = ((h & 0x8000) as u32) << 16;
    if exp == 0 {
        return f32::from_bits(sign); // zero (no subnormals in the data)
    }
    f32::from_bits(sign | ((exp + 127 - 15) << 23) | (mant << 13))
}

#[test]
fn device_select_and_attend_match_brute_force_and_f64_attention() {
    let gpu = match Gpu::open() {
        Ok(gpu) => Some(gpu),
        Err(reason) => {
            eprintln!("cuda: {reason}");
            None
        }
    };
    let mut stream = std::ptr::null_mut();
    if let Some(gpu) = &gpu {
        cu("cuStreamCreate", unsafe {
            (gpu.stream_create)(&mut stream, 0)
        })
        .unwrap();
    }
    // SAFETY: NULL, or a stream just created in the primary context.
    let stream = unsafe { CudaStream::from_raw(stream) };
    let ctx = match Context::with_options(&ContextOptions {
        device: Device::Cuda(0),
        cuda_stream: stream,
        threads: 1,
        ..Default::default()
    }) {
        Ok(ctx) => ctx,
        Err(err) => {
            // No GPU, or no CUDA plugin beside the library: said, not crashed.
            assert_eq!(err.status(), Status::BackendUnavailable, "{err}");
            assert!(!err.message().is_empty());
            eprintln!("cuda: skipped, the library says: {err}");
            return;
        }
    };
    let gpu = gpu.expect("the library found a CUDA device, so the driver API must too");

    let (n, h, d, width) = (300usize, 2usize, 64usize, 16usize);
    let mut rng = Rng(77);
    let keys: Vec<u16> = rng
        .vec((n * h * d) as i64)
        .iter()
        .map(|&x| f16(x))
        .collect();
    let values: Vec<u16> = rng
        .vec((n * h * d) as i64)
        .iter()
        .map(|&x| f16(x))
        .collect();
    let query: Vec<u16> = rng.vec((h * d) as i64).iter().map(|&x| f16(x)).collect();
    let d_keys = gpu.upload(&keys);
    let d_values = gpu.upload(&values);
    let d_query = gpu.upload(&query);
    let d_indices = gpu.upload(&vec![0i32; h * width]);
    let d_out = gpu.upload(&vec![0f32; h * d]);
    let d_lse = gpu.upload(&vec![0f32; h]);
    let kv_shape = [n as i64, h as i64, d as i64];
    // SAFETY: each view covers its device buffer, which outlives the calls
    // and is read back only after the stream is synchronised.
    let (k_t, v_t, q_t) = unsafe {
        (
            Tensor::cuda(d_keys.ptr(), DType::F16, 0, &kv_shape, None).unwrap(),
            Tensor::cuda(d_values.ptr(), DType::F16, 0, &kv_shape, None).unwrap(),
            Tensor::cuda(d_query.ptr(), DType::F16, 0, &[1, h as i64, d as i64], None).unwrap(),
        )
    };
    assert_eq!(k_t.device(), Device::Cuda(0));

    let mut index = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: h as i32,
            head_dim: d as i32,
            dtype: DType::F16,
            ..Default::default()
        },
    )
    .unwrap();
    index.append(&k_t).unwrap();
    assert_eq!(index.len(), n);
    let sel = SelectOptions {
        top_k: 10,
        window: 4,
        sinks: 2,
        cuda_stream: stream,
        ..Default::default()
    };
    let idx_shape = [1, h as i64, width as i64];
    let mut idx_t =
        unsafe { TensorMut::cuda(d_indices.ptr(), DType::I32, 0, &idx_shape, None).unwrap() };
    index.select(&q_t, &sel, &mut idx_t).unwrap();
    let mut out_t = unsafe {
        TensorMut::cuda(d_out.ptr(), DType::F32, 0, &[1, h as i64, d as i64], None).unwrap()
    };
    let mut lse_t =
        unsafe { TensorMut::cuda(d_lse.ptr(), DType::F32, 0, &[1, h as i64], None).unwrap() };
    ctx.attend(
        &q_t,
        &k_t,
        &v_t,
        Some(&idx_t.as_tensor()),
        &AttendOptions {
            cuda_stream: stream,
            ..Default::default()
        },
        &mut out_t,
        Some(&mut lse_t),
    )
    .unwrap();
    cu("cuStreamSynchronize", unsafe {
        (gpu.stream_sync)(stream.as_raw())
    })
    .unwrap();

    let keys32: Vec<f32> = keys.iter().map(|&x| f16_to_f32(x)).collect();
    let values32: Vec<f32> = values.iter().map(|&x| f16_to_f32(x)).collect();
    let query32: Vec<f32> = query.iter().map(|&x| f16_to_f32(x)).collect();
    let idx: Vec<i32> = d_indices.download();
    let rows = Rows::new(&keys32, h, d);
    let positions: Vec<i64> = (0..n as i64).collect();
    for head in 0..h {
        let want = brute_force_select(
            &query32[head * d..][..d],
            rows,
            head,
            &positions,
            n as i64 - 1,
            10,
            4,
            2,
        );
        assert_eq!(
            listed(&idx[head * width..][..width]),
            want,
            "device selection, head {head}"
        );
    }
    let mut reference =
        Attention::dense(Rows::new(&query32, h, d), rows, Rows::new(&values32, h, d));
    reference.indices = Some((&idx, h, width));
    let want = reference.run();
    let out: Vec<f32> = d_out.download();
    let lse: Vec<f32> = d_lse.download();
    assert!(
        common::max_rel_err(&out, &want.out) < 2e-3,
        "device attention vs f64"
    );
    assert!(
        common::max_rel_err(&lse, &want.lse) < 2e-3,
        "device lse vs f64"
    );

    // What the device path does not do yet is refused, not attempted.
    let err = index
        .select(
            &q_t,
            &SelectOptions {
                per_query_head: true,
                ..sel
            },
            &mut idx_t,
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");
    assert_eq!(index.try_clone().unwrap_err().status(), Status::Unsupported);
    drop(index);
    unsafe { (gpu.stream_destroy)(stream.as_raw()) };
}
