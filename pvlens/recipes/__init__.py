"""Scripts that rebuild what the repository ships (``python -m pvlens.recipes.build_datasets``,
``python -m pvlens.recipes.train_sae``). The runtime library never imports them."""
