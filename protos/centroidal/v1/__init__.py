"""Generated protobuf and gRPC stubs for the v1 contract (see clustering.proto)."""
