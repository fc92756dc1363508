"""Media I/O: video decode and encode (audio copied, timestamps kept), pictures and animations, the built-in sample."""
