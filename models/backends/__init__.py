"""Super-resolution backends behind one interface (`base.SRBackend`): classical, PULSE, feed-forward PFSR."""
