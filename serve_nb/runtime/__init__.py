"""The thin Ray / asyncio / network edges that carry out what ``serve_nb.core`` decides."""
