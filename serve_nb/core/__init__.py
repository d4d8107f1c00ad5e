"""Pure logic: no Ray, IPython, starlette or network I/O. Time and randomness are passed in."""
