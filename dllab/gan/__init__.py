"""GANs for the bundled 8x8 digits (torch and Keras), judged by classifier-FID and mode coverage."""
