"""Live mode: a webcam or network source, the bounded-latency loop, the latency budget, the browser preview."""
