"""Serve an EMB folder to people: a small HTTP service (FastAPI) with a search page, ranked images,
and word-over-region heat maps for heads that attend (`app.create_app` over a `gallery.Gallery`)."""
