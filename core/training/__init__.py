"""Training one model: the network, the masked losses, the fit loop, best-epoch selection, the
resumable training state, weight averaging, seeding and saved weights."""
