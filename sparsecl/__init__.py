"""Generated gRPC/protobuf code of the sparsecl API (package ``sparsecl.v1``), of the Open
Inference Protocol it also serves (``sparsecl.kserve``), and their generator."""
