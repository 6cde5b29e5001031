module sparseattn.dev/sparseattn

go 1.19
