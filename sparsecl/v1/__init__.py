"""Stubs generated from protos/sparsecl/v1/*.proto by ``python -m sparsecl.protogen``; do not edit."""
