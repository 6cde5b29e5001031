"""python3 -m sparseattn.demo: the C demo (examples/demo_dlopen.c) through the binding."""
