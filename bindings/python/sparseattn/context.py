"""Context: execution settings (threads, instruction set, CUDA device) shared by calls."""
import ctypes

from . import _options
from ._handles import ContextHandle, HandleOwner, checked
from ._library import library
from .attend import attend
from .enums import Device, Isa
from .evict import cache_evict
from .paged import attend_paged


class Context(HandleOwner):
    """A sparseattn context (sa_context).

    Context(threads=None, isa=None, cuda_plugin_path=None, device=None,
            device_id=None, cuda_stream=None, cuda_allocator=None)

    Every argument left None takes sa_context_options_default()'s value:
      threads: 0 = OpenMP's default, 1 = the calling thread only, 2..1024 a team.
      isa: a cap on the instruction set (Isa or "scalar", "avx2", ...; "auto").
      cuda_plugin_path: where to load libsparseattn_cuda.so from (else
        $SA_CUDA_PLUGIN, else beside the library).
      device: "cpu" or "cuda"; "cuda" loads the plugin now (BackendUnavailable
        when it cannot serve device_id) and indexes keep their keys there.
      device_id: CUDA device ordinal.
      cuda_stream: default stream for device work (an int cudaStream_t, or a
        cupy/torch stream object).
      cuda_allocator: (alloc, free), where the CUDA plugin gets all device
        memory for this context and its indexes (sa_cuda_allocator):
        alloc(nbytes, device_id, stream) -> int address (0 when out of
        memory), free(ptr, nbytes, device_id, stream); streams are ints. With
        PyTorch: (lambda n, d, s: torch.cuda.caching_allocator_alloc(n, d, s),
        lambda p, n, d, s: torch.cuda.caching_allocator_delete(p)).
        None: cudaMallocAsync.

    Use it as a context manager, or call close(): the Context then refuses
    further calls, and the C context is destroyed as soon as no open Index
    uses it (an Index keeps its context alive until the index is closed).
    Methods: attend, attend_paged, cache_evict.
    """

    def __init__(self, threads=None, isa=None, cuda_plugin_path=None, device=None,
                 device_id=None, cuda_stream=None, cuda_allocator=None):
        lib = library()
        opt = _options.context_options(threads, isa, cuda_plugin_path, device, device_id,
                                       cuda_stream)
        if cuda_allocator is not None:
            opt.cuda_allocator = _options.cuda_allocator(cuda_allocator)
        ptr = ctypes.c_void_p()
        lib.check(lib.api.context_create(ctypes.byref(opt), ctypes.byref(ptr)))
        self._handle = ContextHandle(ptr)
        self._handle.keep = opt.cuda_allocator  # its callbacks, as long as the C context
        self.device = Device(opt.device)
        self.device_id = int(opt.device_id)

    @property
    def isa(self):
        """The instruction set the kernels use, after caps (sa_context_isa)."""
        with self._handle.lock.shared():
            return Isa(library().api.context_isa(checked(self._handle, "context")))

    @property
    def threads(self):
        """The number of threads calls use, >= 1 (sa_context_threads)."""
        with self._handle.lock.shared():
            return int(library().api.context_threads(checked(self._handle, "context")))

    def close(self):
        """Ends the use of this Context: later calls through it raise InvalidArgument.
        sa_context_destroy runs now, or when the last of its indexes is closed.
        Closing twice is fine."""
        self._handle.close()

    def __repr__(self):
        if self.closed:
            return "Context(closed)"
        return f"Context(isa={self.isa.name.lower()}, threads={self.threads})"

    attend = attend
    attend_paged = attend_paged
    cache_evict = cache_evict
