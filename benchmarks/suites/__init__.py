"""One module per page or job measured; each `run(ctx)` returns report rows."""
