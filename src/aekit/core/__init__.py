"""The model: configs, backbones, latents, likelihoods, objectives and the Autoencoder that joins them."""
