"""The paper's techniques, one module each: extraction, evaluation (steering sweeps), persona, monitoring,
capability, finetuning with training-time interventions, drift, screening and sparse autoencoders."""
