"""The few CUDA driver queries the binding needs, through libcuda.so.1 when the
process has it. Nothing here allocates or starts work on a device."""
import ctypes

# cuPointerGetAttribute's attribute for the ordinal of the device that owns memory.
_CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9

_driver = None
_driver_tried = False


def _load_driver():
    global _driver, _driver_tried
    if not _driver_tried:
        _driver_tried = True
        try:
            lib = ctypes.CDLL("libcuda.so.1")
            lib.cuInit.argtypes = [ctypes.c_uint]
            lib.cuPointerGetAttribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
            if lib.cuInit(0) == 0:
                _driver = lib
        except (OSError, AttributeError):
            _driver = None
    return _driver


def pointer_device(address):
    """The ordinal of the CUDA device owning `address`, or None when the driver
    cannot tell (no driver, or not CUDA memory)."""
    driver = _load_driver()
    if driver is None or not address:
        return None
    ordinal = ctypes.c_int(-1)
    if driver.cuPointerGetAttribute(ctypes.byref(ordinal), _CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                    ctypes.c_uint64(address)) != 0:
        return None
    return ordinal.value
