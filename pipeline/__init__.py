"""facezoom's video pipeline: media I/O, face stages, engines (local and Ray), the CLI."""
