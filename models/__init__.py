"""facezoom's models: super-resolution networks, their weights, the PULSE latent search. No video, no Ray."""
