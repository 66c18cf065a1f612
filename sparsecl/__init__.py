"""Generated gRPC/protobuf code of the sparsecl API (package ``sparsecl.v1``) and its generator."""
