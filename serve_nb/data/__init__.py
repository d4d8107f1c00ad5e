"""The data plane: handles, routers, the channel to replicas, the replica itself, the HTTP proxy."""
