"""Device memory for the CUDA tests through the CUDA driver (libcuda.so.1), so
they need neither cupy nor torch. Everything here reports "unavailable"
(None) instead of failing on a machine without a driver or a device."""
import ctypes

import numpy as np

_driver = None


def driver():
    """libcuda with the primary context of device 0 current, or None."""
    global _driver
    if _driver is not None:
        return _driver or None
    _driver = False
    try:
        cu = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if cu.cuInit(0) != 0 or cu.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    dev = ctypes.c_int(0)
    ctx = ctypes.c_void_p()
    if cu.cuDeviceGet(ctypes.byref(dev), 0) != 0 or \
            cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) != 0 or \
            cu.cuCtxSetCurrent(ctx) != 0:
        return None
    cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    cu.cuMemFree_v2.argtypes = [ctypes.c_uint64]
    cu.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
    cu.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
    _driver = cu
    return cu


def check(status, what):
    if status != 0:
        raise RuntimeError(f"{what} failed with CUresult {status}")


class DeviceArray:
    """A contiguous device copy of a numpy array, exposing __cuda_array_interface__."""

    def __init__(self, host):
        cu = driver()
        host = np.ascontiguousarray(host)
        self.shape, self.dtype, self.nbytes = host.shape, host.dtype, host.nbytes
        self.ptr = ctypes.c_uint64()
        check(cu.cuMemAlloc_v2(ctypes.byref(self.ptr), max(self.nbytes, 1)), "cuMemAlloc")
        check(cu.cuMemcpyHtoD_v2(self.ptr.value, host.ctypes.data, self.nbytes), "cuMemcpyHtoD")
        self.__cuda_array_interface__ = {"version": 3, "shape": self.shape,
                                         "typestr": self.dtype.str, "strides": None,
                                         "data": (self.ptr.value, False), "stream": None}

    def to_host(self):
        cu = driver()
        check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
        out = np.empty(self.shape, self.dtype)
        check(cu.cuMemcpyDtoH_v2(out.ctypes.data, self.ptr.value, self.nbytes), "cuMemcpyDtoH")
        return out

    def __del__(self):
        if self.ptr.value and _driver:
            _driver.cuMemFree_v2(self.ptr.value)
            self.ptr.value = 0
