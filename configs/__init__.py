"""facezoom's presets, shipped as package data: `--config NAME` finds `NAME.yaml` here from any folder."""
