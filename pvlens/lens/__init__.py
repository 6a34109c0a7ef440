"""The residual stream, read and written: argument checks, reading and projecting activations, steering and
ablation hooks, generation (with monitoring), persona-vector files, and cached answer sampling. One fast path
serves extraction, steering, monitoring and screening alike."""
