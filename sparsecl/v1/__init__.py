"""Stubs generated from protos/sparsecl/v1/*.proto (``make protos``); do not edit."""
