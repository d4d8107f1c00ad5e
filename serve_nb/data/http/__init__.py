"""HTTP: the per-node proxy (uvicorn + an ASGI app) and the replica-side ASGI adapter."""
