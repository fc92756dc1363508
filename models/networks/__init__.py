"""Generator networks in their published layouts: StyleGAN v1, StyleGAN2, Progressive Face Super-Resolution."""
